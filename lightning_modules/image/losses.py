"""Losses of the image family beyond the classifier's smoothed cross-entropy
(lightning_modules/classifier.py): distillation for DeiT students, i.e. logit distillation
(hard, soft) with its alpha schedules, and self-supervised token distillation (token alignment,
batch relations, CKA, Gram).

Notation: z_cls, z_dist the student's class- and distillation-token logits, z_t the teacher's
logits, y the (possibly mixed, soft) labels, CE_eps label-smoothed cross-entropy.
KL(p_t || p_s) = sum_k p_t,k (log p_t,k - log p_s,k), the teacher distribution as the target;
this is `F.kl_div(log p_s, log p_t, log_target=True)`, which DeiT's code writes as
KL(student / tau, teacher / tau) in argument order.
"""

import math
from typing import get_args

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.image.settings import AlphaSchedule, KlReduction

KL_REDUCTIONS = get_args(KlReduction)
ALPHA_SCHEDULES = get_args(AlphaSchedule)


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float, reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(z_t / tau) || softmax(z_s / tau)) summed over classes, then
    - "batchmean": divided by B, the KL divergence per sample (Hinton et al. 2015; timm's
      TokenDistillationTask);
    - "element_mean": divided by B * K, a per-element mean (DeiT's reference code), K times weaker.
    """
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl reduction {reduction!r} is not one of {KL_REDUCTIONS}")
    total = F.kl_div(
        F.log_softmax(student_logits / tau, dim=-1),
        F.log_softmax(teacher_logits / tau, dim=-1),
        reduction="sum",
        log_target=True,
    )
    count = student_logits.shape[0] if reduction == "batchmean" else student_logits.numel()
    return total / count


def hard_distillation_terms(dist_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """CE(z_dist, argmax z_t): the teacher's decision as a hard label (DeiT, eq. 3)."""
    return F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))


def soft_distillation_terms(dist_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float, reduction: str) -> torch.Tensor:
    """tau^2 * KL(softmax(z_t / tau) || softmax(z_dist / tau)) (DeiT, eq. 2); tau^2 keeps the
    gradient scale independent of tau (Hinton et al. 2015)."""
    return tau * tau * kl_to_teacher(dist_logits, teacher_logits, tau, reduction)


def distillation_loss(
    cls_logits: torch.Tensor,
    dist_logits: torch.Tensor,
    target: torch.Tensor,
    teacher_logits: torch.Tensor,
    mode: str,
    alpha: float,
    label_smoothing: float = 0.0,
    tau: float = 3.0,
    reduction: str = "batchmean",
) -> dict[str, torch.Tensor]:
    """The two weighted terms of the DeiT objective:
    hard: (1 - alpha) * CE_eps(z_cls, y) + alpha * CE(z_dist, argmax z_t)
    soft: (1 - alpha) * CE_eps(z_cls, y) + alpha * tau^2 * KL(softmax(z_t/tau) || softmax(z_dist/tau))
    """
    supervised = F.cross_entropy(cls_logits, target, label_smoothing=label_smoothing)
    if mode == "hard":
        distilled = hard_distillation_terms(dist_logits, teacher_logits)
    elif mode == "soft":
        distilled = soft_distillation_terms(dist_logits, teacher_logits, tau, reduction)
    else:
        raise ValueError(f"distillation mode {mode!r} is not hard or soft")
    return {"cls": (1.0 - alpha) * supervised, "dist": alpha * distilled}


def alpha_at(progress: float, schedule: str, alpha: float, alpha_start: float) -> float:
    """alpha at training progress p in [0, 1], going from alpha_start (p = 0) to alpha (p = 1):
    constant: alpha
    linear:   a0 + (a - a0) * p
    cosine:   a + (a0 - a) * (1 + cos(pi * p)) / 2
    """
    p = min(1.0, max(0.0, progress))
    if schedule == "constant":
        return alpha
    if schedule == "linear":
        return alpha_start + (alpha - alpha_start) * p
    if schedule == "cosine":
        return alpha + (alpha_start - alpha) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"alpha schedule {schedule!r} is not one of {ALPHA_SCHEDULES}")


class ProjectionHead(nn.Sequential):
    """Linear -> LayerNorm -> GELU -> Linear -> LayerNorm, on the last dim of (B, N, C) tokens."""

    def __init__(self, in_dim: int, proj_dim: int = 256):
        super().__init__(
            nn.Linear(in_dim, proj_dim), nn.LayerNorm(proj_dim), nn.GELU(), nn.Linear(proj_dim, proj_dim), nn.LayerNorm(proj_dim)
        )


def grid_to_tokens(grid: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, C, H, W) -> (B, H'*W', C), bilinearly resized to `size` = (H', W') first if given
    (a 14x14 teacher map onto a 7x7 student grid: 196 -> 49 tokens)."""
    if size is not None and tuple(grid.shape[-2:]) != tuple(size):
        grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def token_alignment_loss(student_tokens: list[torch.Tensor], teacher_tokens: list[torch.Tensor]) -> torch.Tensor:
    """L_tok = (1/L) * sum_l mean_{b,n} (1 - cos(P_s(z_s)_{l,b,n}, P_t(z_t)_{l,b,n})), the inputs
    being the projected (B, N, D) tokens of the L layer pairs."""
    losses = [(1.0 - F.cosine_similarity(s, t, dim=-1)).mean() for s, t in zip(student_tokens, teacher_tokens, strict=True)]
    return torch.stack(losses).mean()


def cosine_similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """C_ij = cos(f_i, f_j) for the rows of (B, D) features: a (B, B) matrix."""
    unit = F.normalize(features, dim=-1)
    return unit @ unit.T


def relational_loss(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """L_rel = KL(softmax(C_t / tau) || softmax(C_s / tau)), row-wise over the batch, mean over rows.
    C the (B, B) cosine similarities of the pooled tokens. The diagonal (always 1) is left out of
    the softmax: it says nothing about how samples relate. O(B^2) memory and time."""
    batch = student_pooled.shape[0]
    if batch < 2:
        return student_pooled.sum() * 0.0
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=student_pooled.device)
    c_s = cosine_similarity_matrix(student_pooled)[off_diagonal].view(batch, batch - 1)
    c_t = cosine_similarity_matrix(teacher_pooled)[off_diagonal].view(batch, batch - 1)
    return F.kl_div(F.log_softmax(c_s / tau, dim=-1), F.log_softmax(c_t / tau, dim=-1), reduction="batchmean", log_target=True)


def _centered_gram(features: torch.Tensor) -> torch.Tensor:
    features = features - features.mean(dim=0, keepdim=True)
    return features @ features.T


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Linear CKA (Kornblith et al. 2019) of (B, D1) and (B, D2):
    <K, L>_F / (||K||_F ||L||_F), K = X_c X_c^T, L = Y_c Y_c^T, X_c, Y_c column-centred."""
    k, l = _centered_gram(x), _centered_gram(y)
    return (k * l).sum() / (k.norm() * l.norm()).clamp_min(1e-12)


def cka_loss(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
    """1 - CKA(student, teacher): 0 when the two representations agree up to rotation and scale."""
    return 1.0 - linear_cka(student_pooled, teacher_pooled)


def gram_loss(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor) -> torch.Tensor:
    """mean_ij (C_s,ij - C_t,ij)^2 with C the cosine-similarity (normalized Gram) matrices."""
    return (cosine_similarity_matrix(student_pooled) - cosine_similarity_matrix(teacher_pooled)).pow(2).mean()


class TokenDistiller(nn.Module):
    """Self-supervised token distillation between paired student / teacher layers.

    stage 1 (epoch < rel_warmup_epochs): lambda_tok * L_tok
    stage 2 (afterwards):                lambda_tok * L_tok + lambda_rel * L_rel
    (+ lambda_cka * (1 - CKA) and lambda_gram * L_gram when switched on), added to the classification loss.

    Teacher maps are resized bilinearly to the student's grid; P_s, P_t are ProjectionHeads (part
    of the student module, trained with it). L_rel, CKA and Gram compare the batch structure of
    the mean-pooled projected student tokens with that of the mean-pooled raw teacher tokens:
    the teacher side is fixed, so these terms cannot be satisfied by both projections collapsing
    to a constant (which L_tok alone would allow).
    """

    def __init__(
        self,
        student_dim: int,
        teacher_dims: list[int],
        proj_dim: int = 256,
        lambda_tok: float = 1.0,
        lambda_rel: float = 0.1,
        rel_warmup_epochs: int = 10,
        rel_tau: float = 0.1,
        lambda_cka: float = 0.0,
        lambda_gram: float = 0.0,
    ):
        super().__init__()
        self.student_proj = nn.ModuleList(ProjectionHead(student_dim, proj_dim) for _ in teacher_dims)
        self.teacher_proj = nn.ModuleList(ProjectionHead(dim, proj_dim) for dim in teacher_dims)
        self.lambda_tok, self.lambda_rel, self.rel_tau = lambda_tok, lambda_rel, rel_tau
        self.lambda_cka, self.lambda_gram = lambda_cka, lambda_gram
        self.rel_warmup_epochs = rel_warmup_epochs

    def forward(self, student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor], epoch: int) -> tuple[dict, dict]:
        """(weighted loss terms, diagnostics) for paired (B, C, H, W) maps."""
        projected_s, projected_t, pooled_s, pooled_t = [], [], [], []
        for s_map, t_map, p_s, p_t in zip(student_maps, teacher_maps, self.student_proj, self.teacher_proj, strict=True):
            s_tokens = grid_to_tokens(s_map)
            t_tokens = grid_to_tokens(t_map.to(s_map.dtype), size=tuple(s_map.shape[-2:]))
            projected_s.append(p_s(s_tokens))
            projected_t.append(p_t(t_tokens))
            pooled_s.append(projected_s[-1].mean(dim=1))
            pooled_t.append(t_tokens.mean(dim=1))
        terms = {"tok": self.lambda_tok * token_alignment_loss(projected_s, projected_t)}
        if self.lambda_rel > 0 and epoch >= self.rel_warmup_epochs:
            rel = torch.stack([relational_loss(s, t, self.rel_tau) for s, t in zip(pooled_s, pooled_t)]).mean()
            terms["rel"] = self.lambda_rel * rel
        if self.lambda_cka > 0:
            terms["cka"] = self.lambda_cka * torch.stack([cka_loss(s, t) for s, t in zip(pooled_s, pooled_t)]).mean()
        if self.lambda_gram > 0:
            terms["gram"] = self.lambda_gram * torch.stack([gram_loss(s, t) for s, t in zip(pooled_s, pooled_t)]).mean()
        # Spread of the projected teacher tokens over the batch: near 0 means the projections collapsed.
        diagnostics = {"tok_proj_std": torch.stack([p.mean(dim=1).std(dim=0).mean() for p in projected_t]).mean().detach()}
        return terms, diagnostics
