"""Trainer tasks: fit (then test the best checkpoint), test, validate, predict.

Instantiation order: datamodule, LightningModule, callbacks, loggers, Trainer.

`predict` saves what `predict_step` returns (one dict of tensors per batch), concatenated, as
predictions.pt. A LightningModule may define `prediction_metrics(predictions: dict) -> dict`,
which gets those concatenated tensors and returns metrics named `predict/<name>`, e.g.
`{"predict/acc": 0.98}`; they go to metrics.json.

This module imports torch and lightning: it is imported only when a Trainer task runs.
"""

import contextlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from callbacks.carry_over import CarryOver
from callbacks.model_summary import ModelSummaryWithoutFlops
from callbacks.monitor_check import MonitorIsLogged
from callbacks.step_seed import StepSeed
from callbacks.preemption import SaveOnPreemption
from callbacks.run_config import EmbedRunConfig
from hylab.checkpoint_io import AtomicCheckpointIO
from hylab.ddp import leaves_process_as_found
from hylab.errors import UserError
from hylab.pruning import pruning_callbacks
from hylab.stopping import stopped
from hylab.redact import redact
from hylab.instantiate import build, instantiate_group
from hylab.logged_steps import continue_logged_run
from hylab.tasks import TaskResult

log = logging.getLogger("hylab")


@dataclass
class Components:
    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer


@contextlib.contextmanager
def built(cfg: DictConfig):
    """Build the run's components; loggers are always closed after, so the next sweep job starts clean."""
    log.info(f"data: {cfg.data._target_}")
    datamodule = build(cfg.data)
    log.info(f"model: {cfg.model._target_}")
    model = build(cfg.model)
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))  # goes into checkpoints and logger hparams
    callbacks = instantiate_group(cfg.get("callbacks")) + framework_callbacks(cfg, resolved)
    loggers = instantiate_group(cfg.get("logger"))
    # checkpoints written atomically, unless the config brings its own checkpoint plugins
    plugins = {} if cfg.trainer.get("plugins") else {"plugins": [AtomicCheckpointIO()]}
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False, **plugins)
    if cfg.task == "fit" and trainer.is_global_zero:
        for logger in trainer.loggers:
            continue_logged_run(logger)  # on a resume: the steps a killed run logged after its checkpoint
    for logger in trainer.loggers:
        logger.log_hyperparams(resolved)
    status = "failed"
    try:
        with leaves_process_as_found():
            yield Components(datamodule, model, trainer)
        status = "success"
    finally:
        for logger in trainer.loggers:
            logger.finalize(status)
        if "wandb" in sys.modules:
            sys.modules["wandb"].finish()


def framework_callbacks(cfg: DictConfig, resolved: dict) -> list[L.Callback]:
    """What every Trainer run gets: its config and provenance in each checkpoint, a checkpoint
    when a signal stops it, the checkpoint ranking and metrics carried over on a resume, steps
    seeded by (seed, epoch, batch) so a resumed run repeats them, and the model summary without
    Lightning's FLOPs column (always 0 here), and a `monitor` the run never logs stopped before
    the first training step."""
    from hylab.provenance import provenance

    output_dir = Path(cfg.paths.output_dir)
    added = [EmbedRunConfig(resolved, str(output_dir), provenance()), CarryOver(), MonitorIsLogged()] + pruning_callbacks(cfg)
    if cfg.get("seed") is not None:
        added.append(StepSeed(cfg.seed))
    if cfg.trainer.get("enable_model_summary", True) is not False:
        added.append(ModelSummaryWithoutFlops())  # Lightning then adds none of its own
    # last: it may stop the run at the end of a step, after every other callback has seen that step
    return added + [SaveOnPreemption(str(output_dir / "checkpoints"))]


def checkpoint_paths(trainer: L.Trainer) -> dict:
    """The best checkpoint (of the first ModelCheckpoint with a monitor) and the last one (of the
    first without a monitor, which keeps only the latest; else the monitored one's save_last)."""
    callbacks = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)]
    ranked = next((c for c in callbacks if c.monitor is not None), None)
    latest = next((c for c in callbacks if c.monitor is None), None)
    if ranked is None and latest is None:
        return {}
    score = ranked.best_model_score if ranked is not None else None
    last = latest.best_model_path if latest is not None else ranked.last_model_path
    return {
        "best": (ranked.best_model_path if ranked is not None else last) or None,
        "best_score": float(score) if score is not None else None,
        "last": last or None,
    }


def fit(cfg: DictConfig) -> TaskResult:
    with built(cfg) as run:
        run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"))
        carried = next(c for c in run.trainer.callbacks if isinstance(c, CarryOver))
        metrics = carried.carried_metrics(run.trainer.callback_metrics)
        checkpoints = checkpoint_paths(run.trainer)
        progress = {"global_step": run.trainer.global_step, "epochs_completed": run.trainer.current_epoch}
        if cfg.get("test_after_fit") and not run.trainer.interrupted:
            which = cfg.get("test_checkpoint", "best")
            tested = checkpoints.get(which)
            if not tested or run.trainer.fast_dev_run:
                log.warning(f"no {which} checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
                tested = None
            run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=tested)
            metrics |= run.trainer.callback_metrics
        return TaskResult(metrics=metrics, checkpoints=checkpoints, extra={"progress": progress, **stopped(run.trainer)})


def checkpoint_provenance(path: str) -> dict:
    """The provenance of the run that wrote a checkpoint (empty for a checkpoint without one)."""
    from hylab.checkpoints import load_checkpoint

    embedded = load_checkpoint(path, "ckpt_path").get("hylab") or {}
    return {"run_dir": embedded.get("run_dir"), **(embedded.get("provenance") or {})}


def _evaluate(cfg: DictConfig, stage: str) -> TaskResult:
    with built(cfg) as run:
        getattr(run.trainer, stage)(run.model, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)
        return TaskResult(metrics=dict(run.trainer.callback_metrics), checkpoints={"evaluated": str(cfg.ckpt_path)},
                          extra={"checkpoint_provenance": checkpoint_provenance(cfg.ckpt_path)})


def test(cfg: DictConfig) -> TaskResult:
    return _evaluate(cfg, "test")


def validate(cfg: DictConfig) -> TaskResult:
    return _evaluate(cfg, "validate")


def predict(cfg: DictConfig) -> TaskResult:
    """Predictions of the checkpoint on the datamodule's predict split, saved as predictions.pt."""
    with built(cfg) as run:
        if run.trainer.world_size > 1:
            raise UserError("task=predict gathers predictions in one process: use trainer.devices=1 (no DDP)")
        batches = run.trainer.predict(run.model, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)
        batches = [b for b in batches or [] if b]
        merged = {key: torch.cat([b[key].cpu() for b in batches]) for key in batches[0]} if batches else {}
        path = Path(cfg.paths.output_dir) / "predictions.pt"
        torch.save(merged, path)
        hook = getattr(run.model, "prediction_metrics", None)
        metrics = dict(hook(merged)) if callable(hook) and merged else {}
        return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)}, extra={"predictions": str(path)})
