"""Losses of the RIS family (weights: settings.LossWeights); each is a mean over the batch.

    nmse      |R_pred - R_true|_F^2 / |R_true|_F^2                 (the learned covariance itself)
    subspace  mean over true sources k of 1 - a_k^H P_s a_k / N    (P_s: top-K eigenprojector of
              R_blend; the MUSIC null spectrum at the true sources, 0 when they lie in the signal space)
    eigengap  lambda_{K+1} / lambda_K of R_blend                   (0 when the K-th gap is clean)
    count     cross-entropy of the source-count logits (class K-1)
    heatmap   CenterNet loss of the beamspace detector (Zhou et al., "Objects as Points", 2019):
              penalty-reduced focal loss of the cell heat map against Gaussians (sigma = 1 cell)
              at the true sources' nearest cells, plus L1 of the sub-cell offsets there
"""

import torch
import torch.nn.functional as F

from lightning_modules.ris.covariance import HybridCovariance, blend_spectrum


def present_mask(count: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) bool: slot j < count[b], the slots that hold scene b's sources."""
    return torch.arange(width, device=count.device)[None, :] < count[:, None]


def nmse_loss(r_pred: torch.Tensor, r_true: torch.Tensor) -> torch.Tensor:
    error = (r_pred - r_true).abs().pow(2).sum((-2, -1))
    return (error / r_true.abs().pow(2).sum((-2, -1)).clamp_min(1e-12)).mean()


def subspace_loss(factor: torch.Tensor, inverse: torch.Tensor, true_steering: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """a^H P_s a with P_s = W Z W^H (`blend_spectrum`); true_steering (B, K_MAX, N) unit modulus,
    present (B, K_MAX) bool."""
    seen = true_steering @ factor.conj()  # (B, K_MAX, R): rows (W^H a_k)^T
    captured = torch.einsum("bkr,brs,bks->bk", seen.conj(), inverse, seen).real
    missing = 1.0 - captured / true_steering.shape[-1]
    return (missing * present).sum() / present.sum().clamp_min(1)


def eigengap_loss(eigvals: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """eigvals (B, N) in descending order; count (B,) true K."""
    kth = eigvals.gather(-1, (count - 1)[:, None])[:, 0]
    next_ = eigvals.gather(-1, count[:, None])[:, 0]
    return (next_ / kth.clamp_min(1e-9)).mean()


def count_loss(logits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, count - 1)


def heatmap_loss(heat: torch.Tensor, offsets: torch.Tensor, cells: torch.Tensor, cell_offsets: torch.Tensor,
                 present: torch.Tensor, alpha: float = 2.0, gamma: float = 4.0) -> torch.Tensor:
    """heat (B, A, E, R) logits; offsets (B, A, E, R, 3); cells/cell_offsets (B, K_MAX, 3) of the
    true sources; present (B, K_MAX).
        focal = -1/P sum [ (1-p)^alpha log p                    at the P true cells
                           (1-t)^gamma p^alpha log(1-p)         elsewhere, t the Gaussian target ]"""
    shape = heat.shape[1:]
    coords = torch.stack(torch.meshgrid(*[torch.arange(n, device=heat.device) for n in shape], indexing="ij"), -1)
    distance2 = ((coords[None, None] - cells[:, :, None, None, None, :]) ** 2).sum(-1).float()  # (B, K, A, E, R)
    target = (torch.exp(-distance2 / 2) * present[:, :, None, None, None]).amax(1)
    positive = target >= 1.0 - 1e-6
    log_p, log_not_p = F.logsigmoid(heat), F.logsigmoid(-heat)
    p = torch.sigmoid(heat)
    focal_pos = ((1 - p) ** alpha * log_p)[positive].sum()
    focal_neg = ((1 - target) ** gamma * p**alpha * log_not_p)[~positive].sum()
    focal = -(focal_pos + focal_neg) / positive.sum().clamp_min(1)
    flat = offsets.flatten(1, 3)
    index = (cells[..., 0] * shape[1] + cells[..., 1]) * shape[2] + cells[..., 2]
    predicted = flat.gather(1, index[..., None].expand(-1, -1, 3))
    offset = ((predicted - cell_offsets).abs().sum(-1) * present).sum() / present.sum().clamp_min(1)
    return focal + offset


def covariance_losses(cov: HybridCovariance, r_true: torch.Tensor, true_steering: torch.Tensor, count: torch.Tensor) -> dict[str, torch.Tensor]:
    """nmse (when there is a learned covariance), subspace and eigengap of one batch."""
    k_max = true_steering.shape[1]
    present = present_mask(count, k_max)
    inverse, eigvals = blend_spectrum(cov, count, k_max + 1)
    losses = {
        "subspace": subspace_loss(cov.factor, inverse, true_steering, present),
        "eigengap": eigengap_loss(eigvals, count),
    }
    if cov.pred is not None:
        losses["nmse"] = nmse_loss(cov.pred, r_true)
    return losses
