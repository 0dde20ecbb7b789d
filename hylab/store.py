"""The run store: finished runs indexed by a hash of their training-relevant config.

A completed `fit` run is registered under `training_hash(cfg)`: the resolved config minus what
does not change the trained weights (paths, loggers, device counts, worker counts; the lists
are `store.ignore_keys` / `store.ignore_names` in conf/config.yaml). Asking for a run by
experiment + overrides (`get_or_train`) reuses the entry when it exists and trains it once
when it does not, also when several processes ask at the same time:

- a per-key file lock (fcntl, released by the OS if the holder dies) lets one process train
  while the others wait and then reuse its entry;
- an entry is written into a temporary folder and renamed into place, so a half-written entry
  is never visible;
- the stored checkpoint's sha256 is checked on every load; a corrupt entry is moved aside
  (never deleted) under store/corrupt/ and trained again.

Layout: <store.dir>/<key>/{entry.json, model.ckpt}, <store.dir>/locks/<key>.lock.
"""

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from hylab.checkpoint_files import copy_file
from hylab.ddp import DISTRIBUTED_ENV
from hylab.errors import UserError
from hylab.instantiate import affects_training
from hylab.redact import redact
from hylab.records import METRICS_FILE, atomic_write_text, now_iso, read_record_or_skip

log = logging.getLogger("hylab.store")

ENTRY_FILE = "entry.json"
CHECKPOINT_FILE = "model.ckpt"
ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


def _drop_path(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree, dict) else None
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def _drop_names(tree, names: set[str]):
    if isinstance(tree, dict):
        return {k: _drop_names(v, names) for k, v in tree.items() if k not in names}
    if isinstance(tree, list):
        return [_drop_names(v, names) for v in tree]
    return tree


# Trainer settings added after runs were stored: left at null they train exactly as before they
# existed, so they stay out of the hash and stored runs remain reusable.
ABSENT_WHEN_NULL = ("trainer.max_time",)


def _drop_null(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.get(key) if isinstance(tree, dict) else None
    if isinstance(tree, dict) and leaf in tree and tree[leaf] is None:
        del tree[leaf]


def training_config(cfg: DictConfig) -> dict:
    """The resolved config with everything that does not change the trained weights left out."""
    store = cfg.get("store") or {}
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    for dotted in store.get("ignore_keys", []):
        _drop_path(container, dotted)
    for dotted in ABSENT_WHEN_NULL:
        _drop_null(container, dotted)
    for group in ("callbacks", "logger"):
        nodes = container.get(group)
        if isinstance(nodes, dict):
            # a switched-off entry (null) trains the same as an absent one
            container[group] = {name: node for name, node in nodes.items() if node is not None and affects_training(node)}
    return redact(_drop_names(container, set(store.get("ignore_names", []))))


def training_hash(cfg: DictConfig) -> str:
    canonical = json.dumps(training_config(cfg), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class StoreEntry:
    key: str
    folder: Path
    record: dict

    @property
    def checkpoint(self) -> Path:
        return self.folder / CHECKPOINT_FILE

    @property
    def run_dir(self) -> str:
        return self.record.get("run_dir", "")


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def lock(self, key: str, timeout: float = -1):
        from filelock import FileLock

        (self.root / "locks").mkdir(parents=True, exist_ok=True)
        return FileLock(self.root / "locks" / f"{key}.lock", timeout=timeout)

    def find(self, key: str) -> StoreEntry | None:
        """The verified entry for `key`; a corrupt one is moved aside and reported, never returned."""
        folder = self.root / key
        if not folder.is_dir():
            return None
        try:
            record = json.loads((folder / ENTRY_FILE).read_text())
            intact = sha256_file(folder / CHECKPOINT_FILE) == record["checkpoint_sha256"]
            problem = "checkpoint checksum mismatch"
        except (OSError, ValueError, KeyError, TypeError) as err:
            intact, problem = False, f"unreadable entry ({err})"
        if intact:
            return StoreEntry(key, folder, record)
        self.move_aside(key, problem)
        return None

    def move_aside(self, key: str, problem: str) -> None:
        """Move an entry that cannot be used under store/corrupt/ (never deleted); it is trained again."""
        aside = self.root / "corrupt" / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        try:
            aside.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.root / key, aside)
        except FileNotFoundError:  # another process moved it aside first
            return
        except OSError as err:  # a read-only store: left in place, not used
            log.error(f"store entry {key} cannot be used ({problem}) nor moved aside ({err.strerror or err})")
            return
        log.error(f"store entry {key} cannot be used ({problem}); moved to {aside}, it will be trained again")

    def register(self, key: str, checkpoint: Path, record: dict, config: dict) -> StoreEntry:
        """Add an entry (caller holds the key's lock). An existing valid entry is kept, never overwritten."""
        existing = self.find(key)
        if existing is not None:
            return existing
        staging = self.root / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        # a copy (a reflink where the file system has them), never a hard link: damaging the run's
        # checkpoint must not damage the stored one
        target = copy_file(checkpoint, staging / CHECKPOINT_FILE)
        entry = {
            "key": key,
            "checkpoint_sha256": sha256_file(target),
            "source_checkpoint": str(checkpoint),
            "registered_at": now_iso(),
            **{k: record.get(k) for k in ("run_id", "run_dir", "experiment", "overrides", "optimized_metric", "metrics")},
            "config": config,
        }
        atomic_write_text(staging / ENTRY_FILE, json.dumps(entry, indent=2, default=str) + "\n")
        os.replace(staging, self.root / key)
        log.info(f"stored run {record.get('run_id')} as {key} in {self.root}")
        return StoreEntry(key, self.root / key, entry)

    def get_or_train(self, experiment: str, overrides: list[str] | None = None, log_dir: str | Path | None = None) -> StoreEntry:
        """The stored run of `experiment` + `overrides`, trained first (once) if there is none."""
        overrides = list(overrides or [])
        cfg = compose_for(experiment, overrides, log_dir)
        key = training_hash(cfg)
        entry = self.find(key)
        if entry is not None:
            log.info(f"reusing stored run {entry.record.get('run_id')} ({experiment} {overrides}, key {key}) from {entry.run_dir}")
            return entry
        lock = self.lock(key)
        if not _try_acquire(lock):
            log.info(f"{experiment} {overrides} (key {key}) is being trained by another process; waiting for it")
            lock.acquire()
        try:
            entry = self.find(key)
            if entry is not None:
                log.info(f"reusing stored run {entry.record.get('run_id')} ({experiment} {overrides}, key {key}), trained meanwhile")
                return entry
            record = adoptable_run(cfg, key) or train_in_subprocess(cfg, experiment, overrides, key)
            return self.register(key, Path(record["checkpoints"]["best"] or record["checkpoints"]["last"]), record, training_config(cfg))
        finally:
            lock.release()


def _try_acquire(lock) -> bool:
    from filelock import Timeout

    try:
        lock.acquire(timeout=0)
        return True
    except Timeout:
        return False


def compose_for(experiment: str | None, overrides: list[str], log_dir: str | Path | None = None) -> DictConfig:
    """The config `run.py experiment=<experiment> <overrides>` would get (paths resolved, dummy run dir).

    experiment=None composes the default experiment. Overrides are read as run.py reads them:
    `model.net=timm` selects the config group option, like `model/net=timm`.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    import hylab.resolvers  # noqa: F401
    from hylab.cli import normalize_group_overrides

    all_overrides = normalize_group_overrides([*([f"experiment={experiment}"] if experiment else []), *overrides], CONF_DIR)
    if log_dir is not None:
        all_overrides.append(f"paths.log_dir={log_dir}")
    global_hydra = GlobalHydra.instance()
    saved_hydra = global_hydra.hydra if global_hydra.is_initialized() else None
    saved_config = HydraConfig.instance().cfg
    try:
        global_hydra.clear()
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=all_overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(Path(cfg.paths.log_dir) / "store" / "compose")
        HydraConfig.instance().set_config(cfg)  # keeps its own copy of cfg.hydra for ${hydra:...}
        with open_dict(cfg):
            del cfg["hydra"]
        OmegaConf.resolve(cfg)
    except Exception as err:
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            raise UserError(f"cannot compose experiment={experiment} with {overrides}: {err}") from err
        raise
    finally:
        global_hydra.clear()
        if saved_hydra is not None:
            global_hydra.initialize(saved_hydra)
        HydraConfig.instance().cfg = saved_config
    return cfg


def adoptable_run(cfg: DictConfig, key: str) -> dict | None:
    """A completed training of `key` that was never registered (its parent died after it finished)."""
    from hylab.resume import find_completed_run

    found = find_completed_run(Path(cfg.paths.log_dir) / str(cfg.task_name), key)
    if found is not None:
        log.info(f"adopting the completed, unregistered training {found['run_dir']} (key {key}): not training again")
    return found


def train_in_subprocess(cfg: DictConfig, experiment: str, overrides: list[str], key: str) -> dict:
    """Train the run as `python run.py ...` in a clean process (no DDP variables inherited).

    The training runs in its own process group and dies with this process (die_with_parent.py):
    a store training killed along with the run that asked for it never runs on, outside the
    store's lock, as an orphan. A stop of this process stops the training with SIGTERM, which
    saves a checkpoint: the next request resumes it."""
    run_dir = Path(cfg.paths.log_dir) / str(cfg.task_name) / "runs" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_store-{key[:6]}"
    command = [
        sys.executable, str(ROOT / "hylab" / "die_with_parent.py"), str(os.getpid()),
        sys.executable, str(ROOT / "run.py"), f"experiment={experiment}", *overrides,
        f"paths.log_dir={cfg.paths.log_dir}", f"store.dir={cfg.store.dir}", "store.register_runs=false",
        "task=fit", f"hydra.run.dir={run_dir}",
    ]
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_ENV}
    log.info(f"training {experiment} {overrides} (key {key}) into {run_dir}")
    process = subprocess.Popen(command, cwd=ROOT, env=env, process_group=0)
    try:
        returncode = process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise
    record = read_record_or_skip(run_dir / METRICS_FILE) if (run_dir / METRICS_FILE).is_file() else None
    record = record or {}
    if returncode != 0 or record.get("status") != "completed":
        raise UserError(f"training {experiment} {overrides} failed (exit code {returncode}); its log is in {run_dir}")
    if record.get("config_hash") != key:
        raise RuntimeError(f"store key mismatch: asked for {key}, the run reports {record.get('config_hash')}")
    if not (record.get("checkpoints") or {}).get("last"):
        raise UserError(f"{experiment} {overrides} wrote no checkpoint (callbacks=none?); the store needs one")
    return record
