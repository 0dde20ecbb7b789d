"""Report the monitored metric to an optuna trial after every validation; stop when pruned."""

import logging

import lightning as L

log = logging.getLogger("hylab.pruning")


class OptunaPruning(L.Callback):
    """Reports `monitor` to `trial` at step = epoch (0-based) after each validation and, when the
    study's pruner prunes the trial, stops training at the end of that epoch, like early stopping:
    the checkpoints of that validation are written, the run ends normally, and the trial gets
    the user attr `pruned_at_epoch` (epochs trained) for the sweeper to tell optuna. Rank 0
    reports and asks the pruner; its decision goes to every rank, as EarlyStopping's does."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.pruned_at_epoch: int | None = None
        self.reported_epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at_epoch is not None:
            return
        prune = self.report(trainer) if trainer.is_global_zero else False
        if trainer.strategy.reduce_boolean_decision(prune, all=False):
            self.pruned_at_epoch = trainer.current_epoch + 1
            trainer.should_stop = True
            if trainer.is_global_zero:
                from hylab.pruning import PRUNED_ATTR

                self.trial.set_user_attr(PRUNED_ATTR, self.pruned_at_epoch)
                log.info(f"trial {self.trial.number} pruned at epoch {self.pruned_at_epoch}")

    def report(self, trainer: L.Trainer) -> bool:
        """Report this epoch's value (the first validation of an epoch counts); True to prune."""
        value = trainer.callback_metrics.get(self.monitor)
        epoch = trainer.current_epoch
        if value is None or epoch == self.reported_epoch:
            return False
        self.reported_epoch = epoch
        self.trial.report(float(value), step=epoch)
        return self.trial.should_prune()
