"""Lightning's StochasticWeightAveraging, with the averaged weights validated and checkpointed.

Lightning's callback (2.6) averages the weights of the epochs from swa_epoch_start on, then:
- for a model with BatchNorm, loads the average and runs one extra epoch without optimizer steps
  to recompute the BatchNorm statistics; that epoch's validation scores the averaged model, but
  ModelCheckpoint does not save it (it saves at most once per global step, and the extra epoch
  takes no step), so last.ckpt and the best checkpoint never hold the average;
- for a model without BatchNorm, loads the average only in on_train_end, after the last
  validation and checkpoint: the average is neither validated nor saved.

Here the extra epoch always runs (for a model without BatchNorm it only costs forward passes) and
checkpoint callbacks may save once more during it, so the averaged model is validated, saved as
last.ckpt, and becomes the best checkpoint when its score is the best.
"""

import lightning as L
from lightning.pytorch.callbacks import StochasticWeightAveraging as LightningSWA


class StochasticWeightAveraging(LightningSWA):
    @staticmethod
    def pl_module_contains_batch_norm(pl_module: L.LightningModule) -> bool:
        return True  # always run the final pass (BatchNorm update and validation of the average)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        if self._max_epochs != -1 and trainer.current_epoch == self.swa_end + 1:
            for callback in trainer.checkpoint_callbacks:
                callback._last_global_step_saved = -1  # let it save at this step once more
