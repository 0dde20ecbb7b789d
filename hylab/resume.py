"""Re-running the same command continues the work: find the unfinished run of this training.

Every fit run writes its record (status "running", its training hash, its process) when it
starts. A run killed by SIGKILL or a power cut leaves that record behind; one stopped by a
signal leaves status "interrupted". The next run with the same training hash, anywhere under
`<log_dir>/<task_name>/` (single runs, sweep jobs, optuna trials, store trainings), resumes from
the newest intact checkpoint of the newest such run, unless `resume=false`.
"""

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from hylab.records import METRICS_FILE, read_record_or_skip

log = logging.getLogger("hylab")

UNFINISHED = ("running", "interrupted", "failed")


@dataclass
class UnfinishedRun:
    run_dir: Path
    checkpoint: Path
    record: dict


def process_alive(record: dict) -> bool:
    """Whether the process that wrote a "running" record still runs (only checkable on its host)."""
    owner = record.get("process") or {}
    if owner.get("host") != socket.gethostname() or not owner.get("pid"):
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def find_unfinished_run(search_root: Path, key: str, exclude: Path | None = None) -> UnfinishedRun | None:
    """The newest unfinished run with training hash `key` that has an intact checkpoint."""
    from hylab.checkpoint_files import newest_intact_checkpoint

    candidates = []
    for record_path in Path(search_root).rglob(METRICS_FILE):
        run_dir = record_path.parent
        if exclude is not None and run_dir.resolve() == Path(exclude).resolve():
            continue
        record = read_record_or_skip(record_path)
        if record is None:
            continue
        if record.get("config_hash") != key or record.get("status") not in UNFINISHED:
            continue
        if record.get("status") == "running" and process_alive(record):
            continue  # another process is training it right now
        if str(record.get("error") or "").startswith("UserError"):
            continue  # stopped by bad input: nothing to continue
        candidates.append((record_path.stat().st_mtime, run_dir, record))
    for _, run_dir, record in sorted(candidates, key=lambda item: item[0], reverse=True):
        checkpoint = newest_intact_checkpoint(run_dir / "checkpoints")
        if checkpoint is not None:
            return UnfinishedRun(run_dir, checkpoint, record)
    return None


def find_completed_run(search_root: Path, key: str) -> dict | None:
    """The newest completed, checkpointed run with training hash `key` (its record), if any."""
    found = []
    for record_path in Path(search_root).rglob(METRICS_FILE):
        record = read_record_or_skip(record_path)
        if not record or record.get("config_hash") != key or record.get("status") != "completed":
            continue
        checkpoints = record.get("checkpoints") or {}
        checkpoint = checkpoints.get("best") or checkpoints.get("last")
        metric = record.get("optimized_metric") or {}
        if checkpoint and Path(checkpoint).is_file() and (not metric.get("name") or metric.get("value") is not None):
            found.append((record_path.stat().st_mtime, record))
    return max(found, key=lambda item: item[0])[1] if found else None


def this_process() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def resume_unfinished(cfg, key: str, output_dir: Path) -> dict:
    """With `resume` on and no `ckpt_path` given, point `cfg.ckpt_path` at the unfinished run of
    this training, if there is one; returns what goes into the record ({} when nothing resumes)."""
    from omegaconf import open_dict

    if not cfg.get("resume", True) or cfg.get("ckpt_path") or (cfg.get("trainer") or {}).get("fast_dev_run"):
        return {}
    found = find_unfinished_run(Path(cfg.paths.log_dir) / str(cfg.task_name), key, exclude=output_dir)
    if found is None:
        return {}
    with open_dict(cfg):
        cfg.ckpt_path = str(found.checkpoint)
    log.info(f"resuming the unfinished run {found.run_dir} from {found.checkpoint.name} "
             f"(same training config, key {key}); resume=false starts afresh")
    return {"resumed_from": str(found.run_dir), "resumed_checkpoint": str(found.checkpoint)}


def mark_resumed(previous_run_dir: str, by_run_dir: Path) -> None:
    """The unfinished run's record says where it was continued (so it is not resumed twice)."""
    from hylab.records import read_run_record, write_run_record

    try:
        record = read_run_record(Path(previous_run_dir))
    except (OSError, ValueError):
        return
    record |= {"status": "resumed", "resumed_in": str(by_run_dir)}
    write_run_record(Path(previous_run_dir), record)
