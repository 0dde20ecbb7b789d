"""Parts of a loaded net kept fixed, through Lightning's BaseFinetuning hook.

`freeze_before_training` (BaseFinetuning calls it in `setup`, before the optimizer is built, so
frozen parameters never enter it) takes the gradient off the parts a subclass names;
`finetune_function` (at every training epoch start) puts those parts back in eval mode, so their
BatchNorm statistics stay the loaded net's and their dropout is off.

Not `BaseFinetuning.freeze(train_bn=False)`: it sets BatchNorm's `track_running_stats=False`,
and such a layer normalises with the batch's statistics even in eval mode. The parts never
rejoin the optimizer, so there are no parameter groups for BaseFinetuning to record and restore
on a resume: the epoch hook calls `finetune_function` without recording them.
"""

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn


class FrozenParts(BaseFinetuning):
    def __init__(self):
        super().__init__()
        self.frozen: list[nn.Module] = []

    def frozen_parameters(self, pl_module: L.LightningModule) -> list[nn.Parameter]:
        """The parameters that get no gradient (a subclass names them)."""
        return []

    def eval_modules(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """The modules kept in eval mode while training (a subclass names them)."""
        return []

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        for param in self.frozen_parameters(pl_module):
            param.requires_grad_(False)
        self.frozen = self.eval_modules(pl_module)
        for module in self.frozen:
            module.eval()

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer) -> None:
        for module in self.frozen:
            module.eval()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for optimizer in trainer.optimizers or [None]:
            self.finetune_function(pl_module, trainer.current_epoch, optimizer)
