"""Trainer tasks: fit (then test the best checkpoint), test, validate, predict.

Instantiation order: datamodule, LightningModule, callbacks, loggers, Trainer.
"""

import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from callbacks.run_config import EmbedRunConfig
from hylab.errors import UserError
from hylab.instantiate import build, instantiate_group
from hylab.tasks import TaskResult

log = logging.getLogger("hylab")


@dataclass
class Components:
    datamodule: L.LightningDataModule
    model: L.LightningModule
    trainer: L.Trainer


# Set by Lightning's launchers for the processes of one run; restored after it.
DISTRIBUTED_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK")


@contextlib.contextmanager
def leaves_process_as_found():
    """Close the process group and restore the launcher's env vars: the next job of a sweep
    in this process must start a fresh DDP group, not reuse a dead one."""
    saved = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def built(cfg: DictConfig):
    """Build the run's components; loggers are always closed after, so the next sweep job starts clean."""
    log.info(f"data: {cfg.data._target_}")
    datamodule = build(cfg.data)
    log.info(f"model: {cfg.model._target_}")
    model = build(cfg.model)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    callbacks = instantiate_group(cfg.get("callbacks"))
    callbacks.append(EmbedRunConfig(resolved, str(cfg.paths.output_dir)))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
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


def checkpoint_paths(trainer: L.Trainer) -> dict:
    callback = trainer.checkpoint_callback
    if callback is None:
        return {}
    score = callback.best_model_score
    return {
        "best": callback.best_model_path or None,
        "best_score": float(score) if score is not None else None,
        "last": callback.last_model_path or None,
    }


def fit(cfg: DictConfig) -> TaskResult:
    with built(cfg) as run:
        run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = dict(run.trainer.callback_metrics)
        checkpoints = checkpoint_paths(run.trainer)
        progress = {"global_step": run.trainer.global_step, "epochs_completed": run.trainer.current_epoch}
        if cfg.get("test_after_fit") and not run.trainer.interrupted:
            best = checkpoints.get("best")
            if not best or run.trainer.fast_dev_run:
                log.warning("no best checkpoint (fast_dev_run or no checkpoint callback): testing the current weights")
                best = None
            run.trainer.test(run.model, datamodule=run.datamodule, ckpt_path=best)
            metrics |= run.trainer.callback_metrics
        return TaskResult(metrics=metrics, checkpoints=checkpoints, extra={"progress": progress})


def _evaluate(cfg: DictConfig, stage: str) -> TaskResult:
    with built(cfg) as run:
        getattr(run.trainer, stage)(run.model, datamodule=run.datamodule, ckpt_path=cfg.ckpt_path)
        return TaskResult(metrics=dict(run.trainer.callback_metrics), checkpoints={"evaluated": str(cfg.ckpt_path)})


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
        metrics = {}
        if "pred" in merged and "label" in merged:
            metrics["predict/acc"] = (merged["pred"] == merged["label"]).float().mean().item()
        return TaskResult(metrics=metrics, checkpoints={"evaluated": str(cfg.ckpt_path)}, extra={"predictions": str(path)})
