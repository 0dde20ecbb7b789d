"""Report the monitored metric to an optuna trial after every validation; stop when pruned."""

import logging

import lightning as L

log = logging.getLogger("hylab.pruning")


class OptunaPruning(L.Callback):
    """Reports `monitor` to `trial` at step = epoch (0-based) after each validation and, when the
    study's pruner prunes the trial, stops training at the end of that epoch, like early stopping:
    the checkpoints of that validation are written, the run ends normally, and the trial gets
    the user attr `pruned_at_epoch` (epochs trained) for the sweeper to tell optuna. Only rank 0
    reports; Lightning shares its stop decision with the other ranks."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at_epoch: int | None = None
        self.reported_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self.pruned_at_epoch is not None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return
        epoch = trainer.current_epoch
        if epoch == self.reported_epoch:  # several validations in one epoch: the first counts
            return
        self.reported_epoch = epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            from hylab.pruning import PRUNED_ATTR

            self.pruned_at_epoch = epoch + 1
            self.trial.set_user_attr(PRUNED_ATTR, self.pruned_at_epoch)
            trainer.should_stop = True
            log.info(f"trial {self.trial.number} pruned at epoch {self.pruned_at_epoch} ({self.monitor}={float(value):.4g})")
