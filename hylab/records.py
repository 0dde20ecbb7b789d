"""metrics.json: what a run produced (final metrics, checkpoints, identity), written atomically."""

import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path

METRICS_FILE = "metrics.json"

log = logging.getLogger("hylab")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; a record (or a run-store entry) shared on a
# cluster file system must get the permissions any other new file gets.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(handle, FILE_MODE)
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_run_record(output_dir: Path, record: dict) -> Path:
    from hylab.redact import redact

    path = Path(output_dir) / METRICS_FILE
    atomic_write_text(path, json.dumps(_json_safe(redact(record)), indent=2, default=str, sort_keys=False) + "\n")
    return path


def read_run_record(run_dir: Path) -> dict:
    """The record of a run; ValueError when the file is not one (cut mid-write, `null`, a list)."""
    path = Path(run_dir) / METRICS_FILE
    record = json.loads(path.read_text())
    if not isinstance(record, dict):
        raise ValueError(f"holds a JSON {type(record).__name__}, not an object")
    return record


def read_record_or_skip(path: Path) -> dict | None:
    """The record at `path`, or None with one line naming the file when it is not a readable one
    (a scan over many runs goes on without it)."""
    try:
        return read_run_record(Path(path).parent)
    except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
        log.warning(f"skipping {path}: not a readable run record ({err})")
        return None


def plain_metrics(metrics: dict) -> dict[str, float]:
    return {name: _plain(value) for name, value in sorted(metrics.items())}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
