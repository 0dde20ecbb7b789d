"""DeiT students trained from labels, from a teacher's logits, and/or from its token maps.

A Classifier (lightning_modules/classifier.py: same metrics, validation, test, optimizer wiring) whose net is a DeiT
(lightning_modules/image/nets/deit.py) with two heads. The loss per mode (formulas in losses.py):

- none: 0.5 * CE_eps(z_cls, y) + 0.5 * CE_eps(z_dist, y): no teacher; the distillation token
  is a second class token, so the scratch baseline has the very same net.
- hard: (1 - alpha) * CE_eps(z_cls, y) + alpha * CE(z_dist, argmax z_t)
- soft: (1 - alpha) * CE_eps(z_cls, y) + alpha * tau^2 * KL(softmax(z_t/tau) || softmax(z_dist/tau))
- token distillation (on top of any of them): + lambda_tok * L_tok (+ lambda_rel * L_rel after
  rel_warmup_epochs).

Validation, test and predict use the net's inference output, the average of the two heads.

The teacher is not part of this module: callbacks/distillation_teacher.py runs it and hands its outputs
for the current batch to `receive_teacher_outputs` before each training step.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from hylab.errors import UserError
from hylab.settings import parse_settings
from lightning_modules.classifier import Classifier, hard_labels
from lightning_modules.image.losses import TokenDistiller, alpha_at, distillation_loss
from lightning_modules.image.settings import DistillationSettings, TokenDistillationSettings


@dataclass
class TeacherOutputs:
    """What the teacher computed for the current training batch (under no_grad)."""

    logits: torch.Tensor
    token_maps: list[torch.Tensor] = field(default_factory=list)


def check_student_layers(tokens: TokenDistillationSettings, depth: int) -> None:
    bad = [layer for layer in tokens.student_layers if not 0 <= layer < depth]
    if bad:
        raise UserError(f"model.token_distillation.student_layers={tokens.student_layers}: the student has blocks 0..{depth - 1}; {bad} do not exist")


class DeiTClassifier(Classifier):
    def __init__(
        self,
        net: nn.Module,
        optimizer: partial,
        scheduler: partial | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.1,
        compile: bool = False,
        distillation: Mapping | None = None,
        token_distillation: Mapping | None = None,
    ):
        super().__init__(net, optimizer, scheduler, num_classes, label_smoothing, compile=compile)
        self.distillation = parse_settings(DistillationSettings, distillation, "model.distillation")
        self.tokens = parse_settings(TokenDistillationSettings, token_distillation, "model.token_distillation")
        self.token_distiller: TokenDistiller | None = None
        if self.tokens.enabled:
            check_student_layers(self.tokens, len(net.blocks))
            t = self.tokens
            self.token_distiller = TokenDistiller(
                net.embed_dim, t.teacher_dims, t.proj_dim, t.lambda_tok, t.lambda_rel, t.rel_warmup_epochs,
                t.rel_tau, t.lambda_cka, t.lambda_gram,
            )
        self._teacher_outputs: TeacherOutputs | None = None
        self._total_steps = 1

    # -- the teacher callback's side ------------------------------------------------------------
    @property
    def needs_teacher(self) -> bool:
        return self.distillation.mode != "none" or self.tokens.enabled

    def teacher_token_layers(self) -> list[int] | None:
        """Which teacher layers' token maps the loss needs (None: logits only)."""
        return list(self.tokens.teacher_layers) if self.tokens.enabled else None

    def receive_teacher_outputs(self, outputs: TeacherOutputs) -> None:
        self._teacher_outputs = outputs

    def on_fit_start(self) -> None:
        has_teacher = any(getattr(callback, "provides_teacher_outputs", False) for callback in self.trainer.callbacks)
        if self.needs_teacher and not has_teacher:
            raise UserError(
                f"model.distillation.mode={self.distillation.mode} / model.token_distillation.enabled="
                f"{self.tokens.enabled} need a teacher: add callbacks.distillation_teacher (see "
                "conf/experiment/deit_distill.yaml) or set model.distillation.mode=none"
            )

    def on_train_start(self) -> None:
        super().on_train_start()
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    # -- training -------------------------------------------------------------------------------
    def current_alpha(self) -> float:
        d = self.distillation
        return alpha_at(self.trainer.global_step / self._total_steps, d.alpha_schedule, d.alpha, d.alpha_start)

    def logit_terms(self, cls_logits, dist_logits, target, teacher: TeacherOutputs | None) -> dict[str, torch.Tensor]:
        eps = self.hparams.label_smoothing
        if self.distillation.mode == "none":
            return {"cls": 0.5 * F.cross_entropy(cls_logits, target, label_smoothing=eps),
                    "dist": 0.5 * F.cross_entropy(dist_logits, target, label_smoothing=eps)}
        alpha = self.current_alpha()
        d = self.distillation
        return distillation_loss(cls_logits, dist_logits, target, teacher.logits, d.mode, alpha, eps, d.tau, d.kl_reduction)

    def take_teacher_outputs(self, batch_size: int) -> TeacherOutputs | None:
        outputs, self._teacher_outputs = self._teacher_outputs, None
        if not self.needs_teacher:
            return None
        if outputs is None:
            raise RuntimeError("no teacher outputs for this batch: the distillation teacher callback did not run")
        if outputs.logits.shape[0] != batch_size:
            raise RuntimeError(f"teacher outputs are for {outputs.logits.shape[0]} images, the batch has {batch_size}")
        return outputs

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, target = batch
        teacher = self.take_teacher_outputs(images.shape[0])
        if self.token_distiller is not None:
            cls_logits, dist_logits, student_maps = self.net(images, token_layers=self.tokens.student_layers)
        else:
            cls_logits, dist_logits = self.net(images, separate_heads=True)
        terms = self.logit_terms(cls_logits, dist_logits, target, teacher)
        scalars = {}
        if self.token_distiller is not None:
            token_terms, diagnostics = self.token_distiller(student_maps, teacher.token_maps, self.current_epoch)
            terms |= token_terms
            scalars |= {f"train/{name}": value for name, value in diagnostics.items()}
        loss = torch.stack(list(terms.values())).sum()
        scalars |= {f"train/loss_{name}": value for name, value in terms.items()}
        step_only = {"train/alpha": self.current_alpha()} if self.distillation.mode != "none" else None
        self.train_means.add(self, batch_idx, {"train/loss": loss, **scalars}, step_only=step_only)
        self.track_train_accuracy((cls_logits + dist_logits) / 2, target)
        return loss
