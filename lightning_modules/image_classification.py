"""Image classification: any image net, label-smoothed cross-entropy on hard or soft targets.

Loss: (1 - eps) * CE(logits, y) + eps * mean_k CE_k(logits), which is what
`F.cross_entropy(..., label_smoothing=eps)` computes for class indices and for (B, K)
probability targets alike (mixup/cutmix produce the latter). Validation and test report the
plain cross-entropy (eps = 0), the quantity comparable across runs.
"""

from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from lightning_modules.optim import configure_optimizers


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Label-smoothed CE; `target` holds class indices (B,) or class probabilities (B, K)."""
    return F.cross_entropy(logits, target, label_smoothing=eps)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    return target if target.ndim == 1 else target.argmax(dim=-1)


class ImageClassifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # survives resume from a checkpoint
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        if compile:
            self.net.compile()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor, batch) -> torch.Tensor:
        return smoothed_cross_entropy(logits, target, self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, target = batch
        logits = self(images)
        loss = self.training_loss(logits, target, batch)
        self.train_acc(logits, hard_labels(target))
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_start(self) -> None:
        if self.trainer.global_step == 0:  # keep the best value when resuming
            self.val_acc_best.reset()

    def _evaluate(self, batch, stage: str, accuracy: MulticlassAccuracy) -> torch.Tensor:
        images, labels = batch
        logits = self(images)
        self.log(f"{stage}/loss", F.cross_entropy(logits, labels), on_epoch=True, sync_dist=True, prog_bar=True)
        accuracy(logits, labels)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=True)
        return logits

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), sync_dist=True, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._evaluate(batch, "test", self.test_acc)
        self.test_confusion(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        matrix = self.test_confusion.compute()
        self.test_confusion.reset()
        per_class = matrix.diag().float() / matrix.sum(dim=1).clamp_min(1).float()
        names = self._class_names(len(per_class))
        for name, value in zip(names, per_class):
            self.log(f"test/acc_class/{name}", value, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            from hylab.figures import log_figure

            figure, _ = self.test_confusion.plot(matrix.cpu(), labels=names)
            log_figure(self.trainer, "test/confusion_matrix", figure)

    def _class_names(self, count: int) -> list[str]:
        names = getattr(self.trainer.datamodule, "class_names", None) if self.trainer.datamodule else None
        return list(names) if names and len(names) == count else [str(k) for k in range(count)]

    def predict_step(self, batch, batch_idx: int) -> dict:
        images, labels = batch
        probs = self(images).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1), "label": labels}

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer_factory, self.scheduler_factory)
