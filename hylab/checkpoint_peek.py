"""What a checkpoint holds, read without torch: the config a hylab run embeds in it.

torch.save writes a zip whose `<name>/data.pkl` pickles the checkpoint dict, tensors as
references to storages in other members. Unpickling it with every class replaced by a stub and
every storage by None gives the plain parts (the embedded config) without importing torch, and
without running or importing anything the file names: `find_class` never imports.
"""

import pickle
import zipfile
from pathlib import Path


class _Stub(dict):
    """Stands for any class the pickle names (a dict, so OrderedDict-like items can be set)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __call__(self, *args, **kwargs):
        return _Stub()

    def __setstate__(self, state):
        pass


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        return _Stub

    def persistent_load(self, pid):
        return None


def is_torch_checkpoint(path: Path) -> bool:
    """A zip with torch.save's `data.pkl` (a zip of anything else is not a checkpoint)."""
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") or name == "data.pkl" for name in archive.namelist())


def _plain_checkpoint(path: Path):
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        with archive.open(name) as stream:
            return _PlainUnpickler(stream).load()


def embedded_config(path: Path) -> dict | None:
    """The run config a hylab checkpoint carries (checkpoint["hylab"]["config"]), or None."""
    try:
        config = _plain_checkpoint(path)["hylab"]["config"]
    except Exception:  # a foreign or older checkpoint: nothing to compare, torch reports the rest
        return None
    return config if isinstance(config, dict) else None


def checkpoint_global_step(path: Path) -> int | None:
    """The training step a Lightning checkpoint was written at, or None."""
    try:
        step = _plain_checkpoint(path)["global_step"]
    except Exception:
        return None
    return step if isinstance(step, int) else None
