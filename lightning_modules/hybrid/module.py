"""HybridClassifier: the shared classifier (lightning_modules/classifier.py) with the hybrid
family's losses, optimizer levers and teacher.

loss.name:
- ce: label-smoothed cross-entropy on the linear head;
- adaface: AdaFace on the cosine head (net.head=cosine); evaluation uses s * cos(theta);
- edl: the evidential loss on the logits; test reports the misclassification AUROC of u = K/S;
- supcon: SupCon on the projection head over two views (datamodules/hybrid), plus an online
  linear head on the detached embedding (so val/acc tracks the representation).
The test split also logs `test/misclassification_auroc` (EDL: u; otherwise 1 - max softmax).

optimization: gradient centralization and Lookahead wrap the configured optimizer (automatic
optimization); sam.enabled switches to manual optimization: pass 1 (gradient at w, without DDP
gradient sync), ascent to w + eps, pass 2 (gradient at w + eps; BatchNorm running statistics
and AdaFace norm statistics left as pass 1 set them), restore w, clip, step, schedule.
16-bit GradScaler runs are refused with SAM; bf16 and fp32 are fine.

distillation (optional): (1 - w) * task loss + w * T^2 KL(p_t^T || p_s^T), the teacher from
callbacks/distillation_teacher.py, which hands its logits in before each training step.
"""

import contextlib
from collections.abc import Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from hylab.errors import UserError
from hylab.settings import parse_settings
from lightning_modules.classifier import Classifier, hard_labels
from lightning_modules.hybrid import losses
from lightning_modules.hybrid.metrics import auroc, max_softmax_uncertainty
from lightning_modules.hybrid.nets.backbone import parameter_counts
from lightning_modules.hybrid.optimizers import SAM, wrap_optimizer
from lightning_modules.hybrid.settings import DistillSettings, LossSettings, OptimizationSettings
from lightning_modules.optim import make_optimizer, with_schedule


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@contextlib.contextmanager
def frozen_batchnorm_stats(module: nn.Module):
    """BatchNorm layers normalize with the batch but leave their running statistics as they are."""
    norms = [m for m in module.modules() if isinstance(m, BATCH_NORMS) and m.track_running_stats]
    saved = [m.momentum for m in norms]
    counts = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in zip(norms, saved, counts):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def check_sam_precision(sam: bool, precision: str) -> None:
    if sam and precision in ("16-mixed", "16", "16-true"):
        raise UserError(f"model.optimization.sam.enabled=true with trainer.precision={precision}: SAM's two passes do not "
                        "go through the GradScaler here; use trainer.precision=bf16-mixed or 32")


class HybridClassifier(Classifier):
    def __init__(self, net: nn.Module, optimizer: partial, scheduler: partial | None = None, num_classes: int = 10,
                 label_smoothing: float = 0.1, f1_macro: bool = False, lr_scales: Mapping[str, float] | None = None,
                 compile: bool = False, loss: Mapping | None = None, optimization: Mapping | None = None,
                 distillation: Mapping | None = None):
        super().__init__(net, optimizer, scheduler, num_classes, label_smoothing, f1_macro, lr_scales, compile)
        self.loss_cfg = parse_settings(LossSettings, loss, "model.loss")
        self.opt_cfg = parse_settings(OptimizationSettings, optimization, "model.optimization")
        self.distill = parse_settings(DistillSettings, distillation, "model.distillation") if distillation else None
        head_is_cosine = type(net.head).__name__ == "CosineHead"
        if (self.loss_cfg.name == "adaface") != head_is_cosine:
            raise UserError(f"model.loss.name={self.loss_cfg.name} with model.net.head={'cosine' if head_is_cosine else 'linear'}: "
                            "AdaFace needs net.head=cosine, the other losses net.head=linear")
        if self.loss_cfg.name == "supcon" and net.projection is None:
            raise UserError("model.loss.name=supcon needs a projection head: set model.net.projection_dim (e.g. 128)")
        a = self.loss_cfg.adaface
        self.adaface = losses.AdaFaceLoss(a.margin, a.h, a.scale, a.momentum, a.eps) if self.loss_cfg.name == "adaface" else None
        self.automatic_optimization = not self.opt_cfg.sam.enabled
        self.sam: SAM | None = None
        self._teacher_logits: torch.Tensor | None = None
        self.test_scores: list[torch.Tensor] = []
        self.test_wrong: list[torch.Tensor] = []

    # -- the teacher callback's side ------------------------------------------------------------
    @property
    def needs_teacher(self) -> bool:
        return self.distill is not None

    def teacher_token_layers(self):
        return None

    def receive_teacher_outputs(self, outputs) -> None:
        self._teacher_logits = outputs.logits

    # -- set-up ---------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        check_sam_precision(self.opt_cfg.sam.enabled, str(self.trainer.precision))
        if self.needs_teacher and not any(getattr(c, "provides_teacher_outputs", False) for c in self.trainer.callbacks):
            raise UserError("model.distillation is set but no teacher runs: add callbacks.distillation_teacher or set model.distillation=null")
        trainable, total = parameter_counts(self.net)
        self.trainable_share = trainable / total
        for logger in self.loggers:
            logger.log_hyperparams({"params_total": total, "params_trainable": trainable})

    def on_train_start(self) -> None:
        super().on_train_start()
        self.log("train/trainable_share", self.trainable_share)

    def configure_optimizers(self):
        scales = {f"net.{prefix}": scale for prefix, scale in self.lr_scales.items()}
        base = make_optimizer(self.optimizer_factory, self, scales)
        o = self.opt_cfg
        optimizer = wrap_optimizer(base, o.grad_centralization, o.lookahead.k if o.lookahead.enabled else None, o.lookahead.alpha)
        if o.sam.enabled:
            self.sam = SAM(self.parameters(), o.sam.rho, o.sam.adaptive)
        return with_schedule(self, optimizer, self.scheduler_factory)

    # -- losses ---------------------------------------------------------------------------------
    def task_loss(self, batch, update_stats: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, logits for the training accuracy, hard labels)."""
        x, target = batch[0], batch[1]
        name = self.loss_cfg.name
        if name == "supcon":
            views = torch.cat([x, batch[2]]) if len(batch) > 2 else x
            labels = torch.cat([target, target]) if len(batch) > 2 else target
            z = self.net.features(views)
            loss = losses.supcon_loss(self.net.projection(z), labels, self.loss_cfg.supcon.temperature)
            logits = self.net.head(z.detach())
            loss = loss + self.loss_cfg.supcon.probe_weight * F.cross_entropy(logits, labels)
            return loss, logits[: len(target)], target
        z = self.net.features(x)
        if name == "adaface":
            cosine = self.net.head.cosine(z)
            loss = self.adaface(cosine, z.norm(dim=-1), target, update=update_stats)
            logits = self.net.head.scale * cosine
        else:
            logits = self.net.head(z)
            if name == "edl":
                e = self.loss_cfg.edl
                loss = losses.edl_loss(logits, target, self.current_epoch, e.evidence, e.variant, e.annealing_epochs, e.kl_weight)
            else:
                loss = F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)
        if self.distill is not None:
            teacher = self._teacher_logits
            if teacher is None or teacher.shape[0] != logits.shape[0]:
                raise RuntimeError("no teacher logits for this batch: the distillation teacher callback did not run")
            w = self.distill.weight
            loss = (1 - w) * loss + w * losses.distillation_term(logits, teacher, self.distill.temperature)
        return loss, logits, hard_labels(target)

    def _log_train(self, batch_idx: int, loss, logits, labels, **extra) -> None:
        self.track_train_accuracy(logits, labels)
        gate = getattr(self.net.backbone, "last_gate", None) or {}
        self.train_means.add(self, batch_idx, {"train/loss": loss, **{f"train/gate_{stream}": value for stream, value in gate.items()}, **extra})

    def training_step(self, batch, batch_idx: int):
        if self.automatic_optimization:
            loss, logits, labels = self.task_loss(batch)
            self._log_train(batch_idx, loss, logits, labels)
            self._teacher_logits = None
            return loss
        return self._sam_step(batch, batch_idx)

    def _no_sync(self):
        model = self.trainer.model
        return model.no_sync() if hasattr(model, "no_sync") and self.trainer.world_size > 1 else contextlib.nullcontext()

    def _sam_step(self, batch, batch_idx: int):
        optimizer = self.optimizers()
        with self._no_sync():  # the ascent uses this rank's gradient; the update's gradient is synced
            loss, logits, labels = self.task_loss(batch)
            self.manual_backward(loss)
        self.sam.ascend()
        optimizer.zero_grad()
        with frozen_batchnorm_stats(self.net):
            perturbed, _, _ = self.task_loss(batch, update_stats=False)
            self.manual_backward(perturbed)
        self.sam.restore()
        if self.opt_cfg.clip_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.opt_cfg.clip_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad()
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step()
        self._teacher_logits = None
        self._log_train(batch_idx, loss, logits, labels, **{"train/loss_perturbed": perturbed})

    # -- evaluation ----------------------------------------------------------------------------
    def uncertainty(self, logits: torch.Tensor) -> torch.Tensor:
        if self.loss_cfg.name == "edl":
            return losses.dirichlet(logits, self.loss_cfg.edl.evidence)[2]
        return max_softmax_uncertainty(logits)

    def test_step(self, batch, batch_idx: int) -> None:
        logits = self._evaluate(batch, "test")
        self.test_confusion(logits, batch[1])
        self.test_scores.append(self.uncertainty(logits).detach().cpu())
        self.test_wrong.append((logits.argmax(-1) != batch[1]).cpu())

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.test_scores:
            wrong = torch.cat(self.test_wrong)
            if 0 < int(wrong.sum()) < len(wrong):
                value = auroc(torch.cat(self.test_scores), wrong)
                self.log("test/misclassification_auroc", value)
        self.test_scores, self.test_wrong = [], []
