"""Run records (metrics.json): a damaged one is skipped with one line naming it; the record of a
run exists before torch is imported."""

import json
import logging
import zipfile

from hylab.resume import find_unfinished_run
from tests.helpers import run_cli, run_dirs, run_in_process


def unfinished_run(folder, key: str) -> None:
    (folder / "checkpoints").mkdir(parents=True)
    with zipfile.ZipFile(folder / "checkpoints" / "last.ckpt", "w") as archive:
        archive.writestr("data.pkl", b"weights")
    (folder / "metrics.json").write_text(json.dumps({"status": "interrupted", "config_hash": key}))


def test_a_null_a_list_or_a_cut_record_is_skipped_with_one_line_naming_it(tmp_path, caplog):
    unfinished_run(tmp_path / "good", "k")
    damaged = {"null": "null", "list": "[1, 2]", "cut": '{"status": "runn'}
    for name, text in damaged.items():
        (tmp_path / name / "checkpoints").mkdir(parents=True)
        (tmp_path / name / "metrics.json").write_text(text)
    with caplog.at_level(logging.WARNING, logger="hylab"):
        found = find_unfinished_run(tmp_path, "k")
    assert found is not None and found.run_dir == tmp_path / "good"
    lines = [r.getMessage() for r in caplog.records]
    for name in damaged:
        (line,) = [m for m in lines if str(tmp_path / name / "metrics.json") in m]
        assert "\n" not in line and "not a readable run record" in line


def test_the_running_record_is_written_before_torch_is_imported(tmp_path):
    # a torch that kills the process on import: the record must already be on disk by then
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    done = run_cli(["debug=limit"], tmp_path / "logs", runs=0.5, env={"PYTHONPATH": str(tmp_path / "site")})
    assert done.returncode == -9, done.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path / "logs")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "running" and record["config_hash"] and record["provenance"]["command"]


GPU_VISIBLE = {"now": False}


def gpu_appears(cfg):
    """A task during which a GPU becomes visible, as one does once torch has loaded CUDA."""
    from hylab.tasks import TaskResult

    GPU_VISIBLE["now"] = True
    return TaskResult()


def test_metrics_json_names_the_gpus_the_run_saw(tmp_path, monkeypatch):
    """The record begins before torch is imported (no GPU known yet); its final provenance lists the
    GPUs torch sees by the end of the run, as the checkpoints' provenance does."""
    import torch

    monkeypatch.setitem(GPU_VISIBLE, "now", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: GPU_VISIBLE["now"])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(GPU_VISIBLE["now"]))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Test GPU")
    _, record = run_in_process(["+tasks.gpu_appears=tests.framework.test_records:gpu_appears", "task=gpu_appears"], tmp_path / "run")
    assert record["status"] == "completed" and record["provenance"]["machine"]["gpus"] == ["Test GPU"]
