"""Cramer-Rao bound for the coded-snapshot RIS model (derivation in docs/ris.md).

Snapshot l is y_l ~ CN(0, S_l) independently, S_l = G_l A P A^H G_l^H + s2 I_M, G_l = H diag(c_l).
The Fisher information of the real parameter vector eta is the Slepian-Bangs formula summed
over the (differently coded) snapshots:
    J_ij = sum_l tr(S_l^-1 dS_l/deta_i S_l^-1 dS_l/deta_j)
with eta = (source positions, source powers, s2). For positions, dS_l/dtheta_kp =
G_l (d_kp (P A^H)_k + (A P)_k d_kp^H) G_l^H, d_kp = da_k/dtheta_kp. Powers are either the K
diagonal entries of P (sources known to be uncorrelated, as simulated) or all K^2 real
parameters of a Hermitian P (the classical stochastic model). CRB = J^-1; we report the
diagonal entries of the position block.

Computation: with W_l = S_l^-1/2, Q_il = W_l dS_l/deta_i W_l is Hermitian, so
J_ij = sum_l Re <Q_il, Q_jl>: one matrix product over the flattened Q's, in float64.
"""

from collections.abc import Callable

import torch

Steering = Callable[[torch.Tensor], torch.Tensor]  # (K, P) real -> (N, K) complex


def per_source_jacobian(steer: Callable[[torch.Tensor], torch.Tensor], params: torch.Tensor) -> torch.Tensor:
    """d a_s / d theta_sp as (S, N, P) complex for params (S, P), where steer maps (S, P) to the
    (S, N) steering vectors of S independent sources (forward-mode autodiff, one source at a time)."""
    def one(single):
        return torch.view_as_real(steer(single[None])[0])  # (N, 2)

    jac = torch.func.vmap(torch.func.jacfwd(one))(params)  # (S, N, 2, P)
    return torch.complex(jac[..., 0, :], jac[..., 1, :])


def steering_jacobian(steering: Steering, params: torch.Tensor) -> torch.Tensor:
    """d a_k / d theta_kp as (N, K, P) complex for params (K, P)."""
    return per_source_jacobian(lambda p: steering(p).mT, params).permute(1, 0, 2)


def covariance_derivatives(sensing, a, d, powers, power_model: str) -> torch.Tensor:
    """dS_l/deta for every parameter: (D, L, M, M). sensing (L, M, N); a (N, K); d (N, K, P);
    powers (K, K) Hermitian."""
    b = sensing @ a  # (L, M, K): G_l a_k
    e = torch.einsum("lmn,nkp->lmkp", sensing, d)  # G_l d_kp
    bp = b @ powers  # (L, M, K): G_l (A P)_k
    rows = []
    for k in range(a.shape[1]):
        for p in range(d.shape[2]):
            first = e[:, :, k, p, None] * bp[:, None, :, k].conj()
            rows.append(first + first.mH)  # G (d (PA^H)_k + (AP)_k d^H) G^H
    count = a.shape[1]
    if power_model == "diagonal":
        rows += [b[:, :, k, None] * b[:, None, :, k].conj() for k in range(count)]
    elif power_model == "full":
        for i in range(count):
            for j in range(i, count):
                outer = b[:, :, i, None] * b[:, None, :, j].conj()
                rows.append(outer if i == j else outer + outer.mH)  # real part of P_ij
                if i != j:
                    rows.append(1j * (outer - outer.mH))  # imaginary part of P_ij
    else:
        raise ValueError(f"power_model={power_model!r}: use diagonal or full")
    rows.append(torch.eye(b.shape[1], dtype=b.dtype).expand(b.shape[0], -1, -1))  # noise power
    return torch.stack(rows)


def fisher_information(steering: Steering, params: torch.Tensor, sensing: torch.Tensor, powers: torch.Tensor,
                       noise_var: float, power_model: str = "diagonal") -> torch.Tensor:
    """J for one scene. params (K, P) real; sensing (L, M, N) complex (G_l); powers (K,) source
    powers (uncorrelated sources) or a (K, K) Hermitian matrix. Parameter order: positions
    (k-major, then p), powers, noise power."""
    params, sensing = params.double(), sensing.to(torch.complex128)
    powers = powers.to(torch.complex128)
    powers = torch.diag(powers) if powers.ndim == 1 else powers
    a = steering(params).to(torch.complex128)
    d = steering_jacobian(steering, params).to(torch.complex128)
    cov = sensing @ (a @ powers @ a.mH) @ sensing.mH + noise_var * torch.eye(sensing.shape[1], dtype=torch.complex128)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    whitening = (eigvecs * eigvals.rsqrt()[..., None, :].to(eigvecs.dtype)) @ eigvecs.mH  # S_l^-1/2
    derivs = covariance_derivatives(sensing, a, d, powers, power_model)
    whitened = (whitening @ derivs @ whitening).flatten(1)  # (D, L*M*M)
    return (whitened.conj() @ whitened.T).real


def position_crb(fisher: torch.Tensor, count: int, per_source: int) -> torch.Tensor:
    """(K, P) Cramer-Rao variances of the position parameters from J."""
    bound = torch.linalg.inv(fisher)
    return bound.diagonal()[: count * per_source].reshape(count, per_source)
