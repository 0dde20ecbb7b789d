"""Human-activity recognition from wearable windows: any 1-D net, cross-entropy, accuracy and macro-F1.

A window is classified exactly as an image is (lightning_modules/image_classification.py: the
label-smoothed cross-entropy, accuracy, best-so-far accuracy, per-class test accuracy and the
confusion-matrix figure). This adds what personalization needs:

- macro-F1 = (1/K) sum_k 2 P_k R_k / (P_k + R_k), the mean of the per-class F1 scores
  (torchmetrics MulticlassF1Score, average="macro"): a held-out participant's windows are not
  balanced over classes, and macro-F1 weighs every exercise alike;
- layer-wise learning rates for fine-tuning: `lr_scales` maps net parameter prefixes
  (`head`, `features.0`) to multipliers of the optimizer's lr. Frozen layers (see
  callbacks/har_finetune.py) are left out of the optimizer.
"""

from collections.abc import Mapping
from functools import partial

import torch
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from hylab.errors import UserError
from lightning_modules.image_classification import ImageClassifier
from lightning_modules.optim import configure_optimizers


def net_parts(net: nn.Module, depth: int = 2) -> list[str]:
    """Names of the net's modules down to `depth` dots: what freeze and lr_scales may name."""
    return [name for name, _ in net.named_modules() if name and name.count(".") < depth]


def check_parts(net: nn.Module, names, key: str) -> None:
    """Each name must be a module or parameter of the net (a prefix of parameter names)."""
    params = [name for name, _ in net.named_parameters()]
    for name in names:
        if not any(p == name or p.startswith(name + ".") for p in params):
            raise UserError(f"{key}: {name!r} is not a part of the net; its parts: {', '.join(net_parts(net))}")


class HarClassifier(ImageClassifier):
    def __init__(
        self,
        net: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        num_classes: int = 7,
        label_smoothing: float = 0.0,
        lr_scales: Mapping[str, float] | None = None,
        compile: bool = False,
    ):
        # A plain dict before save_hyperparameters (in super) records it: checkpoints stay weights_only-loadable.
        lr_scales = {str(prefix): float(scale) for prefix, scale in dict(lr_scales or {}).items()}
        super().__init__(net, optimizer, scheduler, num_classes, label_smoothing, compile)
        self.lr_scales = lr_scales
        check_parts(net, self.lr_scales, "model.lr_scales")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro")
        self.test_f1 = MulticlassF1Score(num_classes, average="macro")
        self.val_f1_best = MaxMetric()
        self.val_f1_best.persistent(True)

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.trainer.global_step == 0:
            self.val_f1_best.reset()

    def _evaluate(self, batch, stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        logits = super()._evaluate(batch, stage, accuracy)
        f1 = self.val_f1 if stage == "val" else self.test_f1
        f1(logits, batch[1])
        self.log(f"{stage}/f1_macro", f1, on_epoch=True, prog_bar=True)
        return logits

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        if self.trainer.sanity_checking:
            return
        self.val_f1_best(self.val_f1.compute())
        self.log("val/f1_macro_best", self.val_f1_best.compute(), sync_dist=True, prog_bar=True)

    def configure_optimizers(self):
        scales = {f"net.{prefix}": scale for prefix, scale in self.lr_scales.items()}
        return configure_optimizers(self, self.optimizer_factory, self.scheduler_factory, scales)
