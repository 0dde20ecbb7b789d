"""Losses of the hybrid family: AdaFace, evidential deep learning, supervised contrastive,
and logit distillation from a teacher.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lightning_modules.image.losses import kl_to_teacher


# -- AdaFace -----------------------------------------------------------------------------------
def synced_mean_std(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std of `values` over every DDP rank (sum, sum of squares, count)."""
    stats = torch.stack([values.sum(), values.pow(2).sum(), values.new_tensor(float(values.numel()))])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    total, squares, count = stats
    mean = total / count
    var = (squares - count * mean * mean) / (count - 1).clamp_min(1)
    return mean, var.clamp_min(0).sqrt()


class AdaFaceLoss(nn.Module):
    """AdaFace (Kim, Jain, Liu, CVPR 2022): a margin that adapts to image quality, proxied by the
    feature norm.

        z_hat   = clip(h * (|z| - mu) / (sigma + eps), -1, 1)
        g_angle = -m * z_hat,    g_add = m * z_hat + m
        target logit  s * (cos(theta_y + g_angle) - g_add),   other logits s * cos(theta_j)

    mu, sigma: exponential moving averages (momentum t) of the batch's detached feature norms,
    computed over all DDP ranks. z_hat = -1 gives ArcFace's cos(theta + m), z_hat = 0 CosFace's
    cos(theta) - m (so does h = 0), z_hat = 1 gives cos(theta - m) - 2m.
    """

    def __init__(self, margin: float = 0.4, h: float = 0.333, scale: float = 64.0, momentum: float = 0.01, eps: float = 1e-3):
        super().__init__()
        self.margin, self.h, self.scale, self.momentum, self.eps = margin, h, scale, momentum, eps
        self.register_buffer("norm_mean", torch.tensor(20.0))
        self.register_buffer("norm_std", torch.tensor(100.0))

    def update_statistics(self, norms: torch.Tensor) -> None:
        mean, std = synced_mean_std(norms.detach().float())
        self.norm_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
        self.norm_std.mul_(1 - self.momentum).add_(self.momentum * std)

    def quality(self, norms: torch.Tensor) -> torch.Tensor:
        return (self.h * (norms.detach() - self.norm_mean) / (self.norm_std + self.eps)).clamp(-1, 1)

    def margin_logits(self, cosine: torch.Tensor, labels: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
        theta = cosine.acos()
        target = F.one_hot(labels, cosine.shape[1]).bool()
        g_angle = (-self.margin * z_hat)[:, None]
        g_add = (self.margin * z_hat + self.margin)[:, None]
        shifted = torch.cos((theta + g_angle).clamp(self.eps, math.pi - self.eps)) - g_add
        return self.scale * torch.where(target, shifted, cosine)

    def forward(self, cosine: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor, update: bool = True) -> torch.Tensor:
        if update and self.training:
            self.update_statistics(norms)
        return F.cross_entropy(self.margin_logits(cosine, labels, self.quality(norms)), labels)


# -- evidential deep learning ------------------------------------------------------------------
def evidence(logits: torch.Tensor, kind: str = "relu") -> torch.Tensor:
    if kind == "relu":
        return F.relu(logits)
    if kind == "softplus":
        return F.softplus(logits)
    if kind == "exp":
        return torch.exp(logits.clamp(-10, 10))
    raise ValueError(f"evidence {kind!r} is not relu, softplus or exp")


def dirichlet(logits: torch.Tensor, kind: str = "relu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alpha, p_hat, u): alpha = e + 1, S = sum alpha, p_hat = alpha / S, uncertainty u = K / S."""
    alpha = evidence(logits, kind) + 1.0
    strength = alpha.sum(dim=-1, keepdim=True)
    return alpha, alpha / strength, logits.shape[-1] / strength.squeeze(-1)


def kl_to_uniform_dirichlet(alpha: torch.Tensor) -> torch.Tensor:
    """KL(Dir(alpha) || Dir(1)) = lnG(sum a) - lnG(K) - sum lnG(a_j) + sum (a_j - 1)(psi(a_j) - psi(sum a))."""
    total = alpha.sum(dim=-1)
    k = alpha.shape[-1]
    return (torch.lgamma(total) - math.lgamma(k) - torch.lgamma(alpha).sum(-1)
            + ((alpha - 1) * (torch.digamma(alpha) - torch.digamma(total)[:, None])).sum(-1))


def edl_loss(logits: torch.Tensor, labels: torch.Tensor, epoch: int, kind: str = "relu", variant: str = "mse",
             annealing_epochs: int = 10, kl_weight: float = 1.0) -> torch.Tensor:
    """Sensoy, Kaplan, Kandemir (NeurIPS 2018), per sample, then the batch mean:
        mse:     sum_j (y_j - p_j)^2 + p_j (1 - p_j) / (S + 1)        (eq. 5)
        log:     sum_j y_j (log S - log alpha_j)                        (eq. 3)
        digamma: sum_j y_j (psi(S) - psi(alpha_j))                      (eq. 4)
    plus lambda_t * KL(Dir(alpha~) || Dir(1)), alpha~ = y + (1 - y) alpha (the misleading evidence
    only), lambda_t = kl_weight * min(1, epoch / annealing_epochs)."""
    alpha, p_hat, _ = dirichlet(logits, kind)
    y = F.one_hot(labels, logits.shape[-1]).to(alpha.dtype)
    strength = alpha.sum(dim=-1, keepdim=True)
    if variant == "mse":
        fit = ((y - p_hat) ** 2 + p_hat * (1 - p_hat) / (strength + 1)).sum(-1)
    elif variant == "log":
        fit = (y * (strength.log() - alpha.log())).sum(-1)
    elif variant == "digamma":
        fit = (y * (torch.digamma(strength) - torch.digamma(alpha))).sum(-1)
    else:
        raise ValueError(f"EDL variant {variant!r} is not mse, log or digamma")
    annealing = kl_weight * min(1.0, epoch / annealing_epochs)
    regularizer = kl_to_uniform_dirichlet(y + (1 - y) * alpha)
    return (fit + annealing * regularizer).mean()


# -- supervised contrastive --------------------------------------------------------------------
def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Khosla et al. (NeurIPS 2020), L_out (eq. 2) over the 2B views (B images x 2 views,
    `features` (2B, D) with `labels` (2B,)):

        L = mean_{i with P(i) non-empty} -1/|P(i)| sum_{p in P(i)} log( exp(z_i.z_p / tau) / sum_{a != i} exp(z_i.z_a / tau) )

    z L2-normalized, P(i) every other view with the label of i (its own second view included).
    Anchors without a positive are left out of the mean; with none at all the loss is 0."""
    z = F.normalize(features.float(), dim=-1)
    count = z.shape[0]
    logits = z @ z.T / temperature
    self_mask = torch.eye(count, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, -torch.inf)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(dim=1)
    has = n_pos > 0
    if not has.any():
        return features.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positives, 0.0).sum(dim=1)[has] / n_pos[has]
    return -mean_log_prob.mean()


# -- distillation ------------------------------------------------------------------------------
def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) per sample (batchmean; Hinton et al. 2015)."""
    return temperature ** 2 * kl_to_teacher(student_logits, teacher_logits, temperature, "batchmean")
