"""What a resumed run carries over from its checkpoint: the ranking of its checkpoints, and the
metrics logged before the checkpoint was written.

Lightning's ModelCheckpoint restores its best score and top-k only from a checkpoint written into
the same folder, and a resumed run writes into a run folder of its own: the first epoch after a
resume would then count as the best whatever its score. `on_load_checkpoint` runs before the
callbacks load their state, so this copies the checkpoints that state names into the new folder
and points the state at the copies: the ranking goes on as if uninterrupted, and the best
checkpoint lives in the run that reports it.

A resume that trains nothing (a run killed while testing after fit) logs no validation metric
again; the metrics logged up to each checkpoint are saved with it and fill in what the resumed
run did not log itself (`carried_metrics`).
"""

import logging
import os
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from hylab.checkpoint_files import copy_file

log = logging.getLogger("hylab")

CHECKPOINT_KEY = "hylab_metrics"
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """Plain floats (a checkpoint still loads with weights_only=True), finite or not."""
    plain = {}
    for name, value in metrics.items():
        value = value.item() if hasattr(value, "numel") and value.numel() == 1 else value
        if isinstance(value, (int, float)):
            plain[name] = float(value)
    return plain


class CarryOver(L.Callback):
    def __init__(self):
        self.metrics: dict[str, float] = {}
        self.loader_states: list[dict] = []

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.metrics | scalar_metrics(trainer.callback_metrics)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.metrics = dict(checkpoint.get(CHECKPOINT_KEY) or {})
        fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
        self.loader_states = list((fit_loop.get("state_dict") or {}).get("combined_loader") or [])
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key) if isinstance(callback, ModelCheckpoint) else None
            if state and callback.dirpath:
                move_ranking(state, Path(callback.dirpath))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        states, self.loader_states = self.loader_states, []
        loaders = [loader for loader in leaves(trainer.train_dataloader) if callable(getattr(loader, "load_state_dict", None))]
        if states and len(states) == len(loaders):
            for loader, state in zip(loaders, states):
                loader.load_state_dict(state)
        elif states:
            log.warning(f"the checkpoint holds the position of {len(states)} training loaders, this run has {len(loaders)}: "
                        "the interrupted epoch starts again from its first batch")

    def carried_metrics(self, logged: dict) -> dict:
        """The metrics of the checkpoint this run resumed from, updated by what it logged itself."""
        return self.metrics | dict(logged)


def leaves(iterables) -> list:
    """The loaders in what `trainer.train_dataloader` returns (one, or a list / dict of them)."""
    if isinstance(iterables, dict):
        return [leaf for value in iterables.values() for leaf in leaves(value)]
    if isinstance(iterables, (list, tuple)):
        return [leaf for value in iterables for leaf in leaves(value)]
    return [] if iterables is None else [iterables]


def move_ranking(state: dict, dirpath: Path) -> None:
    """Point a ModelCheckpoint state written in another folder at copies of its files in `dirpath`."""
    old = state.get("dirpath")
    if not old or os.path.realpath(old) == os.path.realpath(dirpath):
        return

    def moved(path: str | None) -> str | None:
        if not path or os.path.realpath(Path(path).parent) != os.path.realpath(old):
            return path
        target = dirpath / Path(path).name
        if not target.exists() and Path(path).is_file():
            copy_file(Path(path), target)
        return str(target) if target.exists() else path

    state["best_k_models"] = {moved(path): score for path, score in (state.get("best_k_models") or {}).items()}
    for key in PATH_KEYS:
        if key in state:
            state[key] = moved(state[key])
    state["dirpath"] = str(dirpath)
    log.info(f"checkpoint ranking carried over from {old} (best {state.get('best_model_score')}) into {dirpath}")
