"""Checkpoints that survive a kill: atomic writes, and the newest intact one found on resume.

Lightning's TorchCheckpointIO writes into the target file itself, so a process killed during the
write leaves a truncated last.ckpt behind, and the run can no longer resume. Here every
checkpoint is written to a temporary file in the same folder, synced, and renamed over the
target: a reader sees the old file or the new one, never half of one.

Importing this module imports no Lightning (the framework's config-only paths stay torch-free):
`AtomicCheckpointIO` is built on first use.
"""

import functools
import os
from pathlib import Path

from hylab.checkpoint_files import is_intact, newest_intact_checkpoint  # noqa: F401  (torch-free, for resume)


@functools.cache
def _atomic_checkpoint_io() -> type:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
                with open(tmp, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    AtomicCheckpointIO.__module__, AtomicCheckpointIO.__qualname__ = __name__, "AtomicCheckpointIO"  # picklable by name
    return AtomicCheckpointIO


def __getattr__(name: str):
    if name == "AtomicCheckpointIO":
        return _atomic_checkpoint_io()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
