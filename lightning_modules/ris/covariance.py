"""The hybrid covariance: learned factors blended with the sample covariance of the snapshots.

    R_pred  = A A^H, trace-normalized to N                 (A: N x K_MAX from the network)
    R_samp  = F F^H, the mean-centred covariance of the ridge back-projected snapshots, trace N
    R_blend = normalize(herm((1 - beta) R_pred + beta R_samp.detach())) + eps I

`hybrid_covariance` is the one function that builds these, for training, validation, test,
predict and the benchmark alike. Because both parts have trace N, R_blend - eps I = W W^H with
W = [sqrt(1-beta) A_n, sqrt(beta) F] (N x (K_MAX + L)), so the losses' eigen-decompositions
run on the small Gram matrix W^H W instead of N x N (`top_eigen_inverse`).
"""

from dataclasses import dataclass

import torch

from datamodules.ris.physics import (
    as_complex,
    hermitian,
    ridge_backprojection,
    safe_eigh,
    sample_covariance_factor,
    trace_normalize,
)


@dataclass
class HybridCovariance:
    blend: torch.Tensor  # R_blend (B, N, N)
    factor: torch.Tensor  # W with R_blend = W W^H + loading I
    sample: torch.Tensor  # R_samp
    pred: torch.Tensor | None  # R_pred, None without a learned part
    beta: float
    loading: float

    def detached(self) -> "HybridCovariance":
        pred = None if self.pred is None else self.pred.detach()
        return HybridCovariance(self.blend.detach(), self.factor.detach(), self.sample.detach(), pred, self.beta, self.loading)


def normalized_factors(factors: torch.Tensor) -> torch.Tensor:
    """A scaled so that tr(A A^H) = |A|_F^2 = N."""
    energy = (factors.abs() ** 2).sum((-2, -1)).clamp_min(1e-24)
    return factors * torch.sqrt(factors.shape[-2] / energy)[..., None, None]


def blend_covariances(r_pred: torch.Tensor | None, r_samp: torch.Tensor, beta: float, loading: float) -> torch.Tensor:
    """(1 - beta) R_pred + beta R_samp (the sample part carries no gradient), made Hermitian,
    trace-normalized to N and loaded with loading * I. Without R_pred it is R_samp alone."""
    r_samp = r_samp.detach()
    mixed = r_samp if r_pred is None else (1.0 - beta) * r_pred + beta * r_samp
    mixed = trace_normalize(hermitian(mixed))
    eye = torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
    return mixed + loading * eye


def hybrid_covariance(batch: dict, factors: torch.Tensor | None, beta: float, ridge_k: float, loading: float,
                      sample_factor: torch.Tensor | None = None) -> HybridCovariance:
    """R_pred, R_samp and R_blend of a batch (y, H, C real-stacked) and the network's factors
    (None: no learned part, R_blend is R_samp). `sample_factor`: F of R_samp when the caller has
    it already (the network computes it from the same batch with the same ridge_k)."""
    if sample_factor is None:
        xhat = ridge_backprojection(as_complex(batch["y"]), as_complex(batch["H"]), as_complex(batch["C"]), ridge_k)
        sample_factor = sample_covariance_factor(xhat)
    sample_factor = sample_factor.detach()
    r_samp = hermitian(sample_factor @ sample_factor.mH)
    if factors is None:
        return HybridCovariance(blend_covariances(None, r_samp, 1.0, loading), sample_factor, r_samp, None, 1.0, loading)
    pred_factor = normalized_factors(factors)
    r_pred = trace_normalize(hermitian(pred_factor @ pred_factor.mH))
    blend = blend_covariances(r_pred, r_samp, beta, loading)
    parts = [(1.0 - beta) ** 0.5 * pred_factor] + ([beta**0.5 * sample_factor] if beta > 0 else [])
    return HybridCovariance(blend, torch.cat(parts, dim=-1), r_samp, r_pred, beta, loading)


class _TopEigenInverse(torch.autograd.Function):
    """f(M) = V diag(f(mu)) V^H for Hermitian M with f(mu_i) = 1/mu_i on the `count` largest
    eigenvalues and 0 on the rest; also returns the eigenvalues (descending).

    For M = W^H W this gives the signal-space projector of W W^H: P_s = W f(M) W^H.
    Backward by the Daleckii-Krein formula (Bhatia, "Matrix Analysis", V.3):
        dL/dM = V (Phi o (V^H S V)) V^H + V diag(dL/dmu) V^H,   S = herm(dL/df(M)),
        Phi_ij = (f_i - f_j) / (mu_i - mu_j), which is -1/(mu_i mu_j) inside the signal block,
        0 inside the rest, and uses only signal-noise gaps across: equal eigenvalues within a
        block give no 0/0 (torch.linalg.eigh's backward does not allow them).
    """

    @staticmethod
    def forward(ctx, matrix: torch.Tensor, count: torch.Tensor, floor: float):
        eigvals, eigvecs = safe_eigh(matrix)
        eigvals, eigvecs = eigvals.flip(-1), eigvecs.flip(-1)
        index = torch.arange(matrix.shape[-1], device=matrix.device)
        signal = (index < count[..., None]).to(eigvals.dtype)
        safe = eigvals.clamp_min(floor)
        values = signal / safe
        result = (eigvecs * values[..., None, :].to(eigvecs.dtype)) @ eigvecs.mH
        ctx.save_for_backward(safe, eigvecs, signal, values)
        ctx.floor = floor
        return result, eigvals

    @staticmethod
    def backward(ctx, grad_result, grad_eigvals):
        safe, eigvecs, signal, values = ctx.saved_tensors
        inner = torch.zeros_like(eigvecs)
        if grad_result is not None:
            q = eigvecs.mH @ hermitian(grad_result) @ eigvecs
            s_i, s_j = signal[..., :, None], signal[..., None, :]
            gap = (safe[..., :, None] - safe[..., None, :]).abs().clamp_min(ctx.floor)
            across = (values[..., :, None] - values[..., None, :]).abs() / gap  # f_i > f_j iff mu_i > mu_j
            inside = -1.0 / (safe[..., :, None] * safe[..., None, :])
            phi = s_i * s_j * inside + (s_i - s_j).abs() * across
            inner = inner + phi.to(q.dtype) * q
        if grad_eigvals is not None:
            inner = inner + torch.diag_embed(grad_eigvals.to(inner.dtype))
        return eigvecs @ inner @ eigvecs.mH, None, None


def top_eigen_inverse(matrix: torch.Tensor, count: torch.Tensor, floor: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return _TopEigenInverse.apply(matrix, count, floor)


def blend_spectrum(cov: HybridCovariance, count: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From the factor W: (Z, eigenvalues) where Z = f(W^H W) (so P_s = W Z W^H projects on the
    top-`count` eigenspace of R_blend) and the leading `width` eigenvalues of R_blend."""
    gram = cov.factor.mH @ cov.factor
    inverse, eigvals = top_eigen_inverse(gram, count)
    eigvals = torch.nn.functional.pad(eigvals.clamp_min(0), (0, max(0, width - eigvals.shape[-1])))[..., :width]
    return inverse, eigvals + cov.loading
