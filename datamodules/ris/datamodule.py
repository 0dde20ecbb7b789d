"""Simulated RIS near-field scenes for training and evaluation, generated on the fly or cached
to sharded files.

On the fly, a split holds no data: scene i is simulated when asked, from (data.seed, split, i),
so the same config always gives the same scenes whatever the batch size, shuffling or worker
count. With `cache_dir`, each split is written once as shards of `shard_size` scenes plus a
manifest (with each shard's size and SHA-256); later runs read them. Several runs may share one
cache: each shard is written under its own file lock, to a temporary file renamed into place,
and a shard found missing, truncated or altered on reading is moved aside (never deleted) and
simulated again, with a warning in the log.
"""

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from datamodules.loaders import SplitDataModule
from datamodules.ris.physics import RISGeometry
from datamodules.ris.scenes import SceneConfig, network_batch, scene_generator, simulate_scene, stack_scenes
from datamodules.ris.settings import RISDataSettings, SceneSettings
from hylab.errors import UserError
from hylab.records import atomic_write_text
from hylab.settings import parse_settings

MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


@contextlib.contextmanager
def torch_threads(count: int):
    """Scenes are many tiny tensor ops, for which a thread pool costs more than it saves."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SimulatedScenes(Dataset):
    """Scene i of a split, simulated on demand; `__getitems__` returns a whole network batch."""

    def __init__(self, config: SceneConfig, seed: int, split: str, size: int, snr_db: float | None = None):
        self.config, self.seed, self.split, self.size, self.snr_db = config, seed, split, size, snr_db

    def __len__(self) -> int:
        return self.size

    def scene(self, index: int) -> dict:
        return simulate_scene(self.config, scene_generator(self.seed, self.split, index), snr_db=self.snr_db)

    def scenes(self, indices) -> dict:
        with torch_threads(1):
            return stack_scenes([self.scene(int(i)) for i in indices])

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> dict:
        return network_batch(self.scenes(indices), self.config.geometry)

    def identity(self) -> dict:
        return {"config": self.config.as_dict(), "seed": self.seed, "split": self.split, "size": self.size, "snr_db": self.snr_db}


def shard_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def readable_shard(path: Path, count: int) -> bool:
    try:
        scenes = torch.load(path, weights_only=True)
    except Exception:
        return False
    return isinstance(scenes, dict) and len(scenes.get("k", ())) == count


def move_aside(path: Path, reason: str) -> Path:
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")
    os.replace(path, aside)
    log.warning("scene shard %s %s: moved aside to %s and simulated again", path, reason, aside.name)
    return aside


def build_shard(source: SimulatedScenes, folder: Path, number: int, shard_size: int, expected: str | None = None) -> dict:
    """Make folder/shard_XXXXX.pt hold scenes [number * shard_size, ...) of the split, under the
    shard's file lock: a shard already there is kept if its SHA-256 is `expected` (or, with none
    expected, if it loads and holds the right count), else moved aside; a new one is written to a
    temporary file and renamed, so no reader sees half a shard. Returns its manifest entry."""
    from filelock import FileLock

    path = folder / f"shard_{number:05d}.pt"
    start = number * shard_size
    count = min(start + shard_size, len(source)) - start
    (folder / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(folder / "locks" / f"{path.name}.lock"):
        digest = shard_digest(path) if path.is_file() else None
        fine = digest is not None and (digest == expected if expected is not None else readable_shard(path, count))
        if not fine:
            if digest is not None:
                move_aside(path, "is truncated or damaged" if expected is None else "does not match its checksum")
            elif expected is not None:
                log.warning("scene shard %s is missing: simulating it again", path)
            scenes = source.scenes(range(start, start + count))
            temporary = tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False)
            try:
                with temporary as stream:
                    torch.save(scenes, stream)
                    stream.flush()
                    os.fsync(stream.fileno())
                os.replace(temporary.name, path)
            finally:
                Path(temporary.name).unlink(missing_ok=True)  # gone after the rename; left only on failure
            digest = shard_digest(path)
    return {"file": path.name, "count": count, "bytes": path.stat().st_size, "sha256": digest}


def write_shards(source: SimulatedScenes, folder: Path, shard_size: int) -> None:
    """Simulate a split into folder/shard_XXXXX.pt files (shards another process already wrote
    are kept); the manifest is written last, atomically, so a half-built cache has none."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = [build_shard(source, folder, number, shard_size) for number in range((len(source) + shard_size - 1) // shard_size)]
    atomic_write_text(folder / MANIFEST, json.dumps({**source.identity(), "shards": shards}, indent=1))


class ShardedScenes(Dataset):
    """A split read from shards written by `write_shards`; keeps the last two shards in memory
    (with `ShardBlockSampler` each shard is read once per epoch). A shard whose size or SHA-256
    differs from the manifest's is rebuilt from `source`, the simulator of the same split."""

    def __init__(self, folder: Path, source: SimulatedScenes, geometry: RISGeometry):
        self.folder, self.source, self.geometry = Path(folder), source, geometry
        manifest = json.loads((self.folder / MANIFEST).read_text())
        expected = source.identity()
        identity = {key: manifest.get(key) for key in expected}
        if json.loads(json.dumps(expected)) != identity:
            raise UserError(f"the scene cache {self.folder} was built for another simulator config or seed: "
                            "point data.cache_dir elsewhere or delete that folder to rebuild it")
        self.shards = manifest["shards"]
        self.shard_size = self.shards[0]["count"]
        self.size = sum(shard["count"] for shard in self.shards)
        self.loaded: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.size

    def shard(self, number: int) -> dict:
        if number not in self.loaded:
            entry = self.shards[number]
            path = self.folder / entry["file"]
            intact = path.is_file() and path.stat().st_size == entry["bytes"] and shard_digest(path) == entry["sha256"]
            if not intact:
                rebuilt = build_shard(self.source, self.folder, number, self.shard_size, expected=entry["sha256"])
                if rebuilt["sha256"] != entry["sha256"]:
                    log.warning("scene shard %s was simulated again with another checksum (another torch version?)", path)
            scenes = torch.load(path, weights_only=True)
            if len(self.loaded) >= 2:
                self.loaded.pop(next(iter(self.loaded)))
            self.loaded[number] = scenes
        return self.loaded[number]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])

    def __getitems__(self, indices) -> dict:
        parts = []
        for index in indices:
            shard = self.shard(int(index) // self.shard_size)
            parts.append({key: value[int(index) % self.shard_size] for key, value in shard.items()})
        return network_batch(stack_scenes(parts), self.geometry)


class ShardBlockSampler(Sampler):
    """Shuffles the order of shards and the scenes inside each shard, not across shards."""

    def __init__(self, size: int, block: int, seed: int):
        self.size, self.block, self.seed, self.epoch = size, block, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        blocks = torch.randperm((self.size + self.block - 1) // self.block, generator=generator)
        for block in blocks.tolist():
            start = block * self.block
            stop = min(start + self.block, self.size)
            yield from (start + torch.randperm(stop - start, generator=generator)).tolist()


class RISDataModule(SplitDataModule):
    """Train / val / test splits of simulated scenes; the settings are `RISDataSettings`
    (datamodules/ris/settings.py), the config keys of `data`."""

    def __init__(self, **settings):
        super().__init__()
        self.settings = parse_settings(RISDataSettings, settings, "data")
        self.save_hyperparameters(dataclasses.asdict(self.settings), logger=False)
        scene = {f.name: getattr(self.settings, f.name) for f in dataclasses.fields(SceneSettings)}
        self.scene_config = SceneConfig(**scene)
        self.batch_size, self.eval_batch_size = self.settings.batch_size, self.settings.eval_batch_size
        self.num_workers = self.settings.num_workers

    def simulated(self, split: str) -> SimulatedScenes:
        s = self.settings
        size = {"train": s.n_train, "val": s.n_val, "test": s.n_test}[split]
        return SimulatedScenes(self.scene_config, s.seed, split, size, s.test_snr_db if split == "test" else None)

    def prepare_data(self) -> None:
        if not self.settings.cache_dir:
            return
        for split in ("train", "val", "test"):
            folder = Path(self.settings.cache_dir) / split
            if not (folder / MANIFEST).is_file():
                write_shards(self.simulated(split), folder, self.settings.shard_size)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        for split in ("train", "val", "test"):
            source = self.simulated(split)
            if self.settings.cache_dir:
                folder = Path(self.settings.cache_dir) / split
                if not (folder / MANIFEST).is_file():
                    raise UserError(f"no scene cache at {folder} (no {MANIFEST}): run prepare_data first or set data.cache_dir=null")
                self.datasets[split] = ShardedScenes(folder, source, self.scene_config.geometry)
            else:
                self.datasets[split] = source

    def sampler(self, dataset: Dataset, shuffle: bool) -> Sampler | None:
        """Shuffled shards are read shard by shard (`ShardBlockSampler`)."""
        if shuffle and isinstance(dataset, ShardedScenes):
            return ShardBlockSampler(len(dataset), dataset.shard_size, self.settings.seed)
        return super().sampler(dataset, shuffle)
