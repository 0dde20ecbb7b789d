"""bench.gpu without a GPU: its dry run composes and checks every row (so the command cannot rot
between GPU runs), a bad row is named, and the runner's caps, failures and reads behave."""

import subprocess
import sys
import time

from bench import gpu
from bench.gpu_rows import PYTHON, Row, RunPy
from tests.helpers import ROOT, timeout_for


def test_dry_run_checks_every_row_without_a_gpu():
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=timeout_for(1))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 8 and all(line.startswith("ok ") for line in lines), done.stdout
    assert "gpu-marked tests" in lines[0] and "experiment=gpt_small composes" in done.stdout


def test_dry_run_names_a_row_whose_config_is_wrong(monkeypatch, capsys):
    bad = Row("bad row", "", 1, lambda f: iter([RunPy("gpt_tiny", ["trainer.max_steps=-3"], f)]), lambda f, s: ("", {}))
    monkeypatch.setattr(gpu, "rows", lambda devices: [bad])
    assert gpu.dry_run(devices=1) == 2
    out = capsys.readouterr().out
    assert out.startswith("FAILED  bad row:") and "max_steps" in out


def row(name, *argvs, cap=30.0, read=lambda folder, seconds: ("read", {"seconds": seconds})):
    return Row(name, "goal", cap, lambda folder: iter([list(a) for a in argvs]), read)


def test_a_hung_row_stops_at_its_cap_and_the_next_row_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(gpu, "OUT", tmp_path)
    deadline = time.perf_counter() + 60
    started = time.perf_counter()
    hung = gpu.run_row(row("hangs", [PYTHON, "-c", "import time; time.sleep(60)"], cap=2), deadline)
    assert hung["status"] == "timeout" and "2 s cap" in hung["result"] and time.perf_counter() - started < 10
    failed = gpu.run_row(row("fails", [PYTHON, "-c", "print('error: data.x must be > 0')\nraise SystemExit(2)"],
                             [PYTHON, "-c", "print('never runs')"]), deadline)
    assert failed["status"] == "failed" and "exit 2: error: data.x must be > 0" in failed["result"] and len(failed["commands"]) == 1
    ok = gpu.run_row(row("works", [PYTHON, "-c", "pass"], [PYTHON, "-c", "pass"]), deadline)
    assert ok["status"] == "ok" and ok["result"] == "read" and len(ok["values"]["seconds"]) == 2
    late = gpu.run_row(row("late", [PYTHON, "-c", "pass"]), time.perf_counter() + 5)
    assert late["status"] == "not run" and "budget left" in late["result"]


def test_without_a_device_one_line_and_exit_0(monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench.gpu", "--json", str(tmp_path / "gpu.json")])
    gpu.main()  # returns: exit status 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out and not (tmp_path / "gpu.json").exists()
