"""Lightning's ModelCheckpoint, with last.ckpt written after every validation again.

Since Lightning 2.6 `save_last=True` writes last.ckpt only when a top-k checkpoint is saved at
the same step, so with save_top_k=1 last.ckpt is a copy of the best one and an epoch that does
not improve the monitored metric leaves it stale: resuming from it repeats epochs, and whatever
happens after the best epoch (weight averaging included) is never saved. Here last.ckpt is
written whenever the parent saved nothing at this step.
"""

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint


class ModelCheckpoint(LightningModelCheckpoint):
    def _save_last_if_missed(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)
