"""Checkpoint files without torch: is one intact, which one to resume from, copies that share nothing.

Read before torch is imported (a run finds the checkpoint it resumes from before it writes its
record and imports torch), so only the standard library is used here.
"""

import fcntl
import logging
import os
import shutil
import zipfile
from pathlib import Path

log = logging.getLogger("hylab")

FICLONE = 0x40049409  # linux/fs.h: share the blocks copy-on-write (btrfs, xfs); a copy elsewhere


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


def copy_file(source: Path, target: Path) -> Path:
    """An independent copy of `source` at `target` (a reflink where the file system has them),
    written under a temporary name and renamed: damaging one file never damages the other, and
    a reader never sees half a copy."""
    source, target = Path(source), Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(source, "rb") as src, open(tmp, "wb") as dst:
            try:
                fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
            except OSError:
                shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
