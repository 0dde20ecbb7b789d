"""A classifier for any net that maps a batch to (B, K) logits: images, wearable windows, ...

Loss: (1 - eps) * CE(logits, y) + eps * mean_k CE_k(logits), which is what
`F.cross_entropy(..., label_smoothing=eps)` computes for class indices and for (B, K)
probability targets alike (mixup/cutmix produce the latter). Validation and test report the
plain cross-entropy (eps = 0), the quantity comparable across runs.

Metrics: accuracy; optionally macro-F1 = (1/K) sum_k 2 P_k R_k / (P_k + R_k), the mean of the
per-class F1 scores (torchmetrics MulticlassF1Score, average="macro"), which weighs every class
alike when a split is not balanced; the best-so-far value of each validation metric
(lightning_modules/best_so_far.py, `val/<name>_best`); per-class test accuracy and the test confusion matrix
(a figure under <run dir>/plots). `lr_scales` maps net parameter prefixes (`head`,
`features.0`) to multipliers of the optimizer's lr (layer-wise rates for fine-tuning).
"""

from collections.abc import Mapping
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from hylab.errors import UserError
from lightning_modules.best_so_far import BestSoFar
from lightning_modules.optim import configure_optimizers
from lightning_modules.step_logging import EpochMeans


def smoothed_cross_entropy(logits: torch.Tensor, target: torch.Tensor, eps: float) -> torch.Tensor:
    """Label-smoothed CE; `target` holds class indices (B,) or class probabilities (B, K)."""
    return F.cross_entropy(logits, target, label_smoothing=eps)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    return target if target.ndim == 1 else target.argmax(dim=-1)


def net_parts(net: nn.Module, depth: int = 2) -> list[str]:
    """Names of the net's modules down to `depth` dots: what freeze and lr_scales may name."""
    return [name for name, _ in net.named_modules() if name and name.count(".") < depth]


def check_parts(net: nn.Module, names, key: str) -> None:
    """Each name must be a module or parameter of the net (a prefix of parameter names)."""
    params = [name for name, _ in net.named_parameters()]
    for name in names:
        if not any(p == name or p.startswith(name + ".") for p in params):
            raise UserError(f"{key}: {name!r} is not a part of the net; its parts: {', '.join(net_parts(net))}")


def confusion_figure(confusion: MulticlassConfusionMatrix, matrix: torch.Tensor, names: list[str]):
    """The confusion matrix as a heat map with counts (rows: true classes, columns: predictions)."""
    import matplotlib

    matplotlib.use("Agg")
    figure, _ = confusion.plot(matrix.cpu(), labels=names)
    return figure


class Classifier(L.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        f1_macro: bool = False,
        lr_scales: Mapping[str, float] | None = None,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler or None
        self.lr_scales = dict(lr_scales or {})
        check_parts(net, self.lr_scales, "model.lr_scales")
        # the training accuracy of an epoch: predicted and true classes kept per step, folded into
        # the metric once at the epoch's end (a torchmetrics update per step costs ~50 us)
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self._train_classes: list[tuple[torch.Tensor, torch.Tensor]] = []
        # training scalars: epoch means plus the logger's steps, not one `log` call per step (step_logging.py)
        self.train_means = EpochMeans()
        # evaluation metrics are updated per batch and logged once per epoch (_log_evaluation)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_f1 = MulticlassF1Score(num_classes, average="macro") if f1_macro else None
        self.test_f1 = MulticlassF1Score(num_classes, average="macro") if f1_macro else None
        self.best = BestSoFar({"val/acc": "max", **({"val/f1_macro": "max"} if f1_macro else {})}).add_to(self)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        if compile:
            self.net.compile()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor, batch) -> torch.Tensor:
        return smoothed_cross_entropy(logits, target, self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, target = batch
        logits = self(x)
        loss = self.training_loss(logits, target, batch)
        self.track_train_accuracy(logits, target)
        self.train_means.add(self, batch_idx, {"train/loss": loss})
        return loss

    def track_train_accuracy(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Keep this step's predicted and true classes for the epoch's `train/acc`."""
        self._train_classes.append((logits.detach().argmax(dim=-1), hard_labels(target)))

    def on_train_start(self) -> None:
        self.best.on_train_start(self)

    def on_train_epoch_end(self) -> None:
        self.train_means.log_epoch(self)
        if self._train_classes:  # none after a resume at an epoch's end
            predicted, true = (torch.cat(parts) for parts in zip(*self._train_classes))
            self._train_classes.clear()
            self.train_acc.update(predicted, true)
        if self.train_acc.update_count:
            self.log("train/acc", self.train_acc.compute(), on_epoch=True)
        self.train_acc.reset()

    def _evaluation_metrics(self, stage: str) -> dict:
        metrics = {"loss": self.val_loss, "acc": self.val_acc, "f1_macro": self.val_f1} if stage == "val" else \
            {"loss": self.test_loss, "acc": self.test_acc, "f1_macro": self.test_f1}
        return {name: metric for name, metric in metrics.items() if metric is not None}

    def _evaluate(self, batch, stage: str) -> torch.Tensor:
        """Update the stage's metrics with one batch. The loss is the batch-size-weighted mean over
        the epoch (what `self.log(..., on_epoch=True)` gives), kept by torchmetrics rather than
        logged per batch: a `log` call costs far more than a small net's evaluation step."""
        x, labels = batch
        logits = self(x)
        metrics = self._evaluation_metrics(stage)
        metrics["loss"].update(F.cross_entropy(logits, labels), weight=len(labels))
        for name in ("acc", "f1_macro"):
            if name in metrics:
                metrics[name].update(logits, labels)
        return logits

    def _log_evaluation(self, stage: str) -> dict[str, torch.Tensor]:
        """Log the epoch's `<stage>/loss`, `/acc` (and `/f1_macro`), synced across processes by
        torchmetrics, and start the next epoch afresh."""
        values = {}
        for name, metric in self._evaluation_metrics(stage).items():
            if metric.update_count:
                values[f"{stage}/{name}"] = metric.compute()
                self.log(f"{stage}/{name}", values[f"{stage}/{name}"], prog_bar=True)
            metric.reset()
        return values

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._log_evaluation("val")
        self.best.update_and_log(self, {name: values[name] for name in self.best.modes if name in values})

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._evaluate(batch, "test")
        self.test_confusion(logits, batch[1])

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")
        matrix = self.test_confusion.compute()
        self.test_confusion.reset()
        per_class = matrix.diag().float() / matrix.sum(dim=1).clamp_min(1).float()
        names = self._class_names(len(per_class))
        for name, value in zip(names, per_class):
            self.log(f"test/acc_class/{name}", value, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            from hylab.figures import log_figure

            log_figure(self.trainer, "test/confusion_matrix", confusion_figure(self.test_confusion, matrix, names))

    def _class_names(self, count: int) -> list[str]:
        names = getattr(self.trainer.datamodule, "class_names", None) if self.trainer.datamodule else None
        return list(names) if names and len(names) == count else [str(k) for k in range(count)]

    def predict_step(self, batch, batch_idx: int) -> dict:
        x, labels = batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1), "label": labels}

    def prediction_metrics(self, predictions: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Metrics of the merged predict-step outputs (task=predict): the accuracy of pred vs label."""
        if "pred" not in predictions or "label" not in predictions:
            return {}
        return {"predict/acc": (predictions["pred"] == predictions["label"]).float().mean().item()}

    def configure_optimizers(self):
        scales = {f"net.{prefix}": scale for prefix, scale in self.lr_scales.items()}
        return configure_optimizers(self, self.optimizer_factory, self.scheduler_factory, scales)
