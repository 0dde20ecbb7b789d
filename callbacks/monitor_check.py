"""A `monitor` the run never logs stops the run before its first training step.

Lightning's ModelCheckpoint and EarlyStopping find out at the end of the first validation, after
a whole epoch of training. The sanity validation before training logs the same validation
metrics (the best-so-far ones excepted: `<name>_best` counts when `<name>` is logged), so the
check runs at its end and the run stops with one line and leaves no folder behind. Without a
sanity validation (`trainer.num_sanity_val_steps=0`) Lightning's own check remains.
"""

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from hylab.errors import RunNotStarted


def monitored(trainer: L.Trainer) -> list[str]:
    """The metrics the trainer's checkpoint and early-stopping callbacks watch."""
    return [cb.monitor for cb in trainer.callbacks if isinstance(cb, (ModelCheckpoint, EarlyStopping)) and cb.monitor]


class MonitorIsLogged(L.Callback):
    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logged = set(trainer.callback_metrics)
        for name in monitored(trainer):
            if name in logged or name.removesuffix("_best") in logged:
                continue
            validation = sorted(n for n in logged if n.startswith("val/")) or sorted(logged)
            raise RunNotStarted(f"monitor={name} is not a metric this run logs; set monitor= to one of: {', '.join(validation)}")
