"""Lightning's StochasticWeightAveraging, with the averaged weights validated and checkpointed.

Lightning's callback (2.6) averages the weights of the epochs from swa_epoch_start on, then:
- for a model with BatchNorm, loads the average and runs one extra epoch without optimizer steps
  to recompute the BatchNorm statistics; that epoch's validation scores the averaged model, but
  ModelCheckpoint does not save it (it saves at most once per global step, and the extra epoch
  takes no step), so last.ckpt and the best checkpoint never hold the average;
- for a model without BatchNorm, loads the average only in on_train_end, after the last
  validation and checkpoint: the average is neither validated nor saved.

Here the extra epoch always runs (for a model without BatchNorm it only costs forward passes),
and after its validation this callback saves the averaged model itself through the checkpoint
callbacks' public attributes: every callback without a monitor (last.ckpt) saves it, a monitored
callback with save_top_k=1 saves it and makes it its best when the average scores best.
"""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.callbacks import StochasticWeightAveraging as LightningSWA
from lightning.pytorch.trainer.states import TrainerFn


class StochasticWeightAveraging(LightningSWA):
    @staticmethod
    def pl_module_contains_batch_norm(pl_module: L.LightningModule) -> bool:
        return True  # always run the final pass (BatchNorm update and validation of the average)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.current_epoch == self.swa_end + 1:  # the extra epoch: the module holds the average
            save_averaged_model(trainer)


def save_averaged_model(trainer: L.Trainer) -> None:
    metrics = {**trainer.callback_metrics, "epoch": torch.tensor(trainer.current_epoch), "step": torch.tensor(trainer.global_step)}
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        path = callback.format_checkpoint_name(metrics)
        previous = callback.best_model_path
        if callback.monitor is None:
            callback.best_model_path = path  # without a monitor the "best" is the latest
        else:
            score = metrics.get(callback.monitor)
            if callback.save_top_k != 1 or score is None or not callback.check_monitor_top_k(trainer, score):
                continue
            callback.best_model_path, callback.best_model_score = path, score
            callback.kth_best_model_path, callback.kth_value = path, score
            callback.best_k_models = {path: score}
        trainer.save_checkpoint(path, callback.save_weights_only)  # after the bookkeeping: it is saved too
        if previous and previous != path:
            trainer.strategy.remove_checkpoint(previous)
