"""A resumed run does not log again the steps its MLflow or W&B run already holds.

A run killed after its last checkpoint has logged some steps beyond it; the run that continues
from that checkpoint trains (and logs) those steps again. TensorBoard hides the killed run's
copies itself (`purge_step`, hylab/logger_ids.py); MLflow and W&B keep every value logged, so
for them the resumed run reads, per metric, the last step the run holds (with MLflow's own
client, from W&B's offline files) and leaves out values at or before it. Steps are trained
deterministically (callbacks/step_seed.py), so the values kept are the ones it would log.
"""

import logging
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.loggers import Logger, MLFlowLogger, WandbLogger

log = logging.getLogger("hylab")


def mlflow_last_steps(logger: MLFlowLogger) -> dict[str, int]:
    client, run_id = logger.experiment, logger.run_id
    names = client.get_run(run_id).data.metrics
    return {name: max(m.step for m in client.get_metric_history(run_id, name)) for name in names}


def wandb_last_steps(logger: WandbLogger) -> dict[str, int]:
    from hylab.wandb_offline import offline_folders, wandb_curves

    # an online run has no offline folders: W&B's server holds its history
    curves = wandb_curves(offline_folders(Path(logger.save_dir), logger.version))
    return {name: max(step for step, _ in points) for name, points in curves.items() if points}


def last_steps(logger: Logger) -> dict[str, int]:
    if isinstance(logger, MLFlowLogger):
        return mlflow_last_steps(logger)
    if isinstance(logger, WandbLogger):
        return wandb_last_steps(logger)
    return {}


def keep_logged_params(logger: Logger) -> None:
    """An MLflow run refuses a parameter logged again with another value, and a resumed run's
    config differs from the killed one's in `ckpt_path`: a run that holds parameters keeps those
    of its first process (the same training: the resume matched its training hash)."""
    if isinstance(logger, MLFlowLogger) and logger.experiment.get_run(logger.run_id).data.params:
        logger.log_hyperparams = lambda *args, **kwargs: None


def continue_logged_run(logger: Logger) -> None:
    """Make `logger` leave out each metric's values at steps it already holds (and, for MLflow,
    the parameters it holds)."""
    keep_logged_params(logger)
    held = last_steps(logger)
    if not held:
        return
    write = logger.log_metrics

    def log_new_steps(metrics: Mapping[str, float], step: int | None = None) -> None:
        new = {name: value for name, value in metrics.items() if step is None or step > held.get(name, -1)}
        if new:
            write(new, step)

    logger.log_metrics = log_new_steps
    log.info(f"{type(logger).__name__} continues its run, which holds steps up to {max(held.values())}: "
             "those are not logged again")
