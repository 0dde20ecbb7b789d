"""Lightning's EMAWeightAveraging, with the averaged weights also used by test and predict.

Lightning's callback (2.6) validates with the average and saves it as a checkpoint's
`state_dict` (the training weights go under `current_model_state`). When the same Trainer then
loads a checkpoint to evaluate it (`trainer.test(ckpt_path="best")`, which `test_after_fit`
runs), its `on_load_checkpoint` puts the *training* weights back into the module, so the test
scored weights that validation never chose, and a later `task=test` from the same checkpoint
(a fresh Trainer, which keeps `state_dict`) disagreed with it. Outside fitting the module keeps
the checkpoint's `state_dict`, the average, here.
"""

import lightning as L
from lightning.pytorch.callbacks import EMAWeightAveraging as LightningEMA
from lightning.pytorch.trainer.states import TrainerFn


class EMAWeightAveraging(LightningEMA):
    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # evaluating: the module already holds the checkpoint's averaged weights
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
