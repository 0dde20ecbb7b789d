"""Checkpoints that survive a kill: atomic writes, and the newest intact one found on resume.

Lightning's TorchCheckpointIO writes into the target file itself, so a process killed during the
write leaves a truncated last.ckpt behind, and the run can no longer resume. Here every
checkpoint is written to a temporary file in the same folder, synced, and renamed over the
target: a reader sees the old file or the new one, never half of one.
"""

import logging
import os
import zipfile
from pathlib import Path

from lightning.pytorch.plugins.io import TorchCheckpointIO

log = logging.getLogger("hylab")


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


def is_intact(path: Path) -> bool:
    """A torch.save file is a zip archive: a truncated one has no central directory, a damaged
    one fails the CRC check of a member."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def newest_intact_checkpoint(folder: Path, prefer: str = "last.ckpt") -> Path | None:
    """`prefer` when it is intact, else the newest intact checkpoint of the folder (with a warning)."""
    folder = Path(folder)
    preferred = folder / prefer
    if preferred.is_file() and is_intact(preferred):
        return preferred
    others = sorted((p for p in folder.glob("*.ckpt") if p != preferred), key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in others:
        if is_intact(candidate):
            if preferred.exists():
                log.warning(f"{preferred} is truncated or corrupt; resuming from {candidate.name} instead")
            return candidate
    if preferred.exists():
        log.warning(f"{preferred} is truncated or corrupt and no other intact checkpoint is in {folder}")
    return None
