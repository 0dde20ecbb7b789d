"""GPU first light: one command that measures every GPU path of the project within a fixed budget.

    uv run python -m bench.gpu                  # on a CUDA machine: one table, and docs/gpu.json
    uv run python -m bench.gpu --dry-run        # anywhere: compose and check every row, run nothing
    bash scripts/gpu_check.sh                   # a fresh GPU machine: uv sync (or, offline, the wheels of
                                                # scripts/gpu_prepare.sh), then the bench

The rows (bench/gpu_rows.py): every gpu-marked test; experiment=fmnist_speed hardware=gpu as typed;
gpt_small tokens/s and MFU (Lightning's ThroughputMonitor) in bf16 with and without
torch.compile; DeiT-Ti images/s through run.py against a plain timm + torch loop (bench.overhead,
alternating); trainer=ddp and trainer=gpt_fsdp on every visible device, each one short fit that
must leave one run folder; the RIS bench at 256 scenes per SNR when time is left. Each row runs as
subprocesses with its own time cap (its whole process group is killed at the cap), so a hang
costs that row and no more; a row that could not run says why. Logs: bench/out/gpu/<row>/.
Without a CUDA device the command says so in one line and exits 0.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.gpu_rows import ROOT, Row, RunPy, rows

OUT = ROOT / "bench" / "out" / "gpu"
DOCS_JSON = ROOT / "docs" / "gpu.json"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def argv_of(command) -> list[str]:
    return command.argv() if isinstance(command, RunPy) else command


def run_capped(argv: list[str], log: Path, timeout: float) -> tuple[int | None, float]:
    """(exit code, or None when killed at `timeout`; seconds). Output goes to `log`. The command
    runs in its own session, so DDP ranks and data workers die with it at the cap."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, time.perf_counter() - started


def last_line(log: Path) -> str:
    """The line that says why a command failed: run.py's one-line error, or the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error") or "Error:" in line]
    return (errors or lines or ["(no output)"])[-1][:300]


def run_row(row: Row, deadline: float) -> dict:
    left = deadline - time.perf_counter()
    result = {"row": row.name, "goal": row.goal, "status": "not run", "result": "", "values": {}, "seconds": 0.0, "commands": []}
    if left < max(row.min_s, 10):
        result["result"] = f"{left:.0f} s of the budget left (needs {max(row.min_s, 10):.0f} s)"
        return result
    if row.prepare and (why := row.prepare()):
        result["result"] = why
        return result
    folder = OUT / slug(row.name)
    folder.mkdir(parents=True, exist_ok=True)
    cap = min(row.cap_s, left)
    started = time.perf_counter()
    seconds = []
    for index, command in enumerate(row.commands(folder)):
        argv, log = argv_of(command), folder / f"{index}.log"
        result["commands"].append(" ".join(argv))
        code, took = run_capped(argv, log, started + cap - time.perf_counter())
        seconds.append(took)
        if code is None:
            result |= {"status": "timeout", "result": f"stopped at its {cap:.0f} s cap; log {shown(log)}"}
            break
        if code != 0:
            result |= {"status": "failed", "result": f"exit {code}: {last_line(log)} (log {shown(log)})"}
            break
    else:
        try:
            text, values = row.read(folder, seconds)
            result |= {"status": "ok", "result": text, "values": values}
        except (OSError, KeyError, ValueError, TypeError, IndexError) as err:
            result |= {"status": "failed", "result": f"could not read the result: {err}"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def device_info() -> dict:
    import torch

    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    return {
        "device": torch.cuda.get_device_name(0), "devices": torch.cuda.device_count(),
        "driver": driver.stdout.strip().splitlines()[0] if driver.returncode == 0 and driver.stdout.strip() else "unknown",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
    }


def table(results: list[dict]) -> str:
    lines = ["| row | status | result | goal | s |", "|---|---|---|---|---:|"]
    for r in results:
        lines.append(f"| {r['row']} | {r['status']} | {r['result']} | {r['goal']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def dry_run(devices: int) -> int:
    """Compose every run.py config the rows use and run the checks run.py makes before torch
    (all but the visible GPUs); check each bench module and extra condition. Nothing is trained."""
    import importlib.util
    import tempfile

    from hylab.checks import check_config
    from hylab.errors import UserError
    from hylab.store import compose_for

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows(devices):
            notes = []
            try:
                commands = list(row.commands(Path(tmp) / slug(row.name)))
                for config in [c for c in commands if isinstance(c, RunPy)] + row.configs:
                    check_config(compose_for(config.experiment, config.overrides, Path(tmp) / "logs"), devices=False)
                    notes.append(f"experiment={config.experiment} composes and passes the checks")
                for module in row.needs:
                    if importlib.util.find_spec(module) is None:
                        raise UserError(f"python -m {module}: no such module")
                if row.dry_check:
                    notes.append(row.dry_check())
                print(f"ok      {row.name}: {'; '.join(notes) or 'commands built'}")
            except (UserError, ValueError) as err:
                failures += 1
                print(f"FAILED  {row.name}: {err}")
    return 2 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="compose and check every row; needs no GPU")
    parser.add_argument("--budget", type=float, default=510, help="seconds for all rows (9 minutes less uv sync)")
    parser.add_argument("--only", nargs="*", help="run only the rows whose name contains one of these")
    parser.add_argument("--json", default=str(DOCS_JSON), help="where the results go")
    args = parser.parse_args()
    if args.dry_run:
        sys.exit(dry_run(devices=2))  # two devices: the multi-device overrides are composed too
    import torch

    if not torch.cuda.is_available():
        print("bench.gpu: no CUDA device visible, nothing measured (python -m bench.gpu --dry-run checks the rows without one)")
        return
    info = device_info()
    deadline = time.perf_counter() + args.budget
    selected = [r for r in rows(info["devices"]) if not args.only or any(o in r.name for o in args.only)]
    print(f"{info['device']} x{info['devices']}, driver {info['driver']}, torch {info['torch']}, CUDA {info['cuda']}; budget {args.budget:.0f} s", flush=True)
    results = []
    for row in selected:
        results.append(run_row(row, deadline))
        r = results[-1]
        print(f"  {r['row']}: {r['status']} in {r['seconds']:.0f} s: {r['result']}", flush=True)
    print(f"\n{info['device']} x{info['devices']} (driver {info['driver']}, torch {info['torch']}, CUDA {info['cuda']})\n")
    print(table(results))
    record = {**info, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "budget_s": args.budget, "rows": results}
    Path(args.json).write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nwritten: {args.json}")


if __name__ == "__main__":
    main()
