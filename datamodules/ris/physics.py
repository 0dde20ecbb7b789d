"""The RIS measurement model: array geometry, near-field steering, the BS-RIS channel, phase
codes, coded snapshots, and the classical inverse (ridge back-projection, sample covariance).

Coordinates: the RIS lies in the y-z plane centred at the origin and faces +x. A source at
azimuth theta (from +x towards +y), elevation phi and range r sits at r*u with
u = (cos phi cos theta, cos phi sin theta, sin phi).

Snapshot l (Pan et al., "RIS-aided near-field localization", and the usual coded-snapshot model):
    x_l = sum_k a(theta_k, phi_k, r_k) s_kl            (RIS-side signal, N)
    y_l = H diag(c_l) x_l + n_l,  n_l ~ CN(0, sigma^2 I_M)   (BS, M antennas)
Everything here is plain torch on complex tensors; the real/imag stacking [..., 2] for the
network is `as_real` / `as_complex`.
"""

import dataclasses
import math
from functools import lru_cache

import torch

from datamodules.ris.settings import Geometry


def as_real(z: torch.Tensor) -> torch.Tensor:
    """Complex (...) -> real (..., 2) with [..., 0] = Re, [..., 1] = Im."""
    return torch.view_as_real(z.resolve_conj())


def as_complex(x: torch.Tensor) -> torch.Tensor:
    """Real (..., 2) -> complex (...)."""
    return torch.view_as_complex(x.contiguous())


class RISGeometry(Geometry):
    """The geometry settings with the arrays they define (positions, wavenumber)."""

    @classmethod
    def of(cls, geometry: Geometry) -> "RISGeometry":
        return geometry if isinstance(geometry, cls) else cls(**dataclasses.asdict(geometry))

    @property
    def num_elements(self) -> int:
        return self.rows * self.cols

    @property
    def element_spacing(self) -> float:
        return self.spacing if self.spacing is not None else self.wavelength / 2

    @property
    def wavenumber(self) -> float:
        return 2 * math.pi / self.wavelength

    def element_positions(self, dtype=torch.float64) -> torch.Tensor:
        """(N, 3) RIS element positions; element n = row * cols + col, y varies fastest."""
        d = self.element_spacing
        y = (torch.arange(self.cols, dtype=dtype) - (self.cols - 1) / 2) * d
        z = (torch.arange(self.rows, dtype=dtype) - (self.rows - 1) / 2) * d
        zz, yy = torch.meshgrid(z, y, indexing="ij")
        return torch.stack([torch.zeros_like(yy), yy, zz], dim=-1).reshape(-1, 3)

    def bs_positions(self, dtype=torch.float64) -> torch.Tensor:
        """(M, 3) BS antenna positions: a horizontal half-wavelength ULA broadside to the RIS."""
        azimuth = math.radians(self.bs_azimuth_deg)
        centre = self.bs_distance * torch.tensor([math.cos(azimuth), math.sin(azimuth), 0.0], dtype=dtype)
        along = torch.tensor([-math.sin(azimuth), math.cos(azimuth), 0.0], dtype=dtype)
        offsets = (torch.arange(self.bs_antennas, dtype=dtype) - (self.bs_antennas - 1) / 2) * self.wavelength / 2
        return centre + offsets[:, None] * along


def unit_direction(azimuth: torch.Tensor, elevation: torch.Tensor) -> torch.Tensor:
    """(..., 3) unit vector towards (azimuth, elevation), radians."""
    cos_el = torch.cos(elevation)
    return torch.stack([cos_el * torch.cos(azimuth), cos_el * torch.sin(azimuth), torch.sin(elevation)], dim=-1)


def path_difference(positions: torch.Tensor, azimuth, elevation, distance, model: str = "exact") -> torch.Tensor:
    """d_n - r: how much farther element n is from the source than the array centre, (..., N).

    exact:   d_n = |r u - p_n| = sqrt(r^2 - 2 r u.p_n + |p_n|^2); d_n - r is computed as
             (|p_n|^2 - 2 r u.p_n) / (d_n + r), which keeps its precision when r >> |p_n|.
    fresnel: second-order expansion in |p_n| / r,  d_n - r ~ -u.p_n + (|p_n|^2 - (u.p_n)^2) / (2 r)
    far:     plane wave, d_n - r ~ -u.p_n
    """
    u = unit_direction(azimuth, elevation)
    projection = u @ positions.to(u.dtype).T  # (..., N)
    r = distance[..., None]
    if model == "far":
        return -projection
    squared_norm = (positions.to(u.dtype) ** 2).sum(-1)
    if model == "fresnel":
        return -projection + (squared_norm - projection**2) / (2 * r)
    if model != "exact":
        raise ValueError(f"steering model {model!r}: use exact, fresnel or far")
    numerator = squared_norm - 2 * r * projection
    return numerator / (torch.sqrt(r**2 + numerator) + r)


def steering(positions: torch.Tensor, wavenumber: float, azimuth, elevation, distance, model: str = "exact") -> torch.Tensor:
    """Near-field steering vector a_n = exp(-j k (d_n - r)), phase referenced to the array centre.
    Angles and range broadcast together; returns (..., N) complex (unit modulus)."""
    phase = -wavenumber * path_difference(positions, azimuth, elevation, distance, model)
    return torch.polar(torch.ones_like(phase), phase)


@lru_cache(maxsize=8)
def line_of_sight(geometry: RISGeometry) -> torch.Tensor:
    """(M, N) exp(-j k |b_m - p_n|): the spherical-wave BS-RIS path (fixed for a geometry)."""
    gap = torch.cdist(geometry.bs_positions(), geometry.element_positions())
    return torch.polar(torch.ones_like(gap), -geometry.wavenumber * gap)


def bs_ris_channel(geometry: RISGeometry, rician_k_db: float, generator: torch.Generator, dtype=torch.complex64) -> torch.Tensor:
    """H (M, N): spherical-wave line of sight between BS antennas and RIS elements plus a Rayleigh
    scattered part with Rician factor K, scaled so that |H|_F^2 = M (each BS antenna collects
    unit gain from the whole RIS, so the SNR below is per BS antenna)."""
    los = line_of_sight(geometry)
    scatter = complex_normal(los.shape, generator, los.dtype)
    k = 10 ** (rician_k_db / 10)
    channel = math.sqrt(k / (1 + k)) * los + math.sqrt(1 / (1 + k)) * scatter
    channel = channel * math.sqrt(channel.shape[0] / (channel.abs() ** 2).sum())
    return channel.to(dtype)


def random_codes(snapshots: int, elements: int, bits: int, generator: torch.Generator, dtype=torch.complex64) -> torch.Tensor:
    """C (L, N): unit-modulus RIS phase codes, uniform phases (bits=0) or 2^bits levels."""
    if bits > 0:
        levels = 2**bits
        phase = torch.randint(levels, (snapshots, elements), generator=generator).double() * (2 * math.pi / levels)
    else:
        phase = torch.rand(snapshots, elements, generator=generator, dtype=torch.float64) * 2 * math.pi
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


def complex_normal(shape, generator: torch.Generator, dtype=torch.complex64) -> torch.Tensor:
    """CN(0, 1) samples."""
    parts = torch.randn((*shape, 2), generator=generator, dtype=torch.float64)
    return torch.view_as_complex(parts / math.sqrt(2)).to(dtype)


def coded_snapshots(channel, codes, ris_signal, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    """y_l = H diag(c_l) x_l + n_l for every snapshot l: (L, M)."""
    received = (codes * ris_signal) @ channel.T
    return received + noise_std * complex_normal(received.shape, generator, received.dtype)


def ridge_backprojection(y: torch.Tensor, channel: torch.Tensor, codes: torch.Tensor, ridge_k: float) -> torch.Tensor:
    """x_hat_l = argmin |y_l - G_l x|^2 + alpha_l |x|^2 with G_l = H diag(c_l), i.e.
    x_hat_l = G_l^H (G_l G_l^H + alpha_l I_M)^-1 y_l   (= (G^H G + alpha I_N)^-1 G^H y by the
    push-through identity, an M x M solve instead of N x N), with the scale-invariant ridge
    alpha_l = ridge_k * tr(G_l^H G_l) / N: scaling H leaves x_hat scaled, not reshaped.
    y (..., L, M), channel (..., M, N), codes (..., L, N) -> (..., L, N)."""
    elements = channel.shape[-1]
    sensing = channel.unsqueeze(-3) * codes.unsqueeze(-2)  # G_l: (..., L, M, N)
    gram = sensing @ sensing.mH  # (..., L, M, M)
    alpha = ridge_k * gram.diagonal(dim1=-2, dim2=-1).sum(-1).real / elements
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    solved = torch.linalg.solve(gram + alpha[..., None, None] * eye, y.unsqueeze(-1))
    return (sensing.mH @ solved).squeeze(-1)


def trace_normalize(cov: torch.Tensor, target: float | None = None, eps: float = 1e-12) -> torch.Tensor:
    """Scale (..., N, N) so that its trace is `target` (default N)."""
    size = cov.shape[-1]
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1).real
    scale = (target if target is not None else size) / trace.clamp_min(eps)
    return cov * scale[..., None, None]


def hermitian(cov: torch.Tensor) -> torch.Tensor:
    return 0.5 * (cov + cov.mH)


def sample_covariance_factor(xhat: torch.Tensor) -> torch.Tensor:
    """F (..., N, L) with F F^H = R_samp, the mean-centred sample covariance of the back-projected
    snapshots R = 1/(L-1) sum_l (x_l - mean)(x_l - mean)^H, trace-normalized to N (|F|_F^2 = N).
    The factor form has rank <= L-1, which keeps eigen-decompositions to L x L."""
    centred = (xhat - xhat.mean(dim=-2, keepdim=True)).mT
    energy = (centred.abs() ** 2).sum((-2, -1)).clamp_min(1e-24)
    return centred * torch.sqrt(xhat.shape[-1] / energy)[..., None, None]


def sample_covariance(xhat: torch.Tensor) -> torch.Tensor:
    """R_samp = F F^H (see `sample_covariance_factor`). xhat (..., L, N) -> (..., N, N)."""
    factor = sample_covariance_factor(xhat)
    return hermitian(factor @ factor.mH)


def source_covariance(positions, wavenumber: float, azimuth, elevation, distance, powers) -> torch.Tensor:
    """R = sum_k p_k a_k a_k^H over the sources present (powers 0 for absent slots),
    trace-normalized to N. azimuth/elevation/distance/powers (..., K) -> (..., N, N)."""
    a = steering(positions, wavenumber, azimuth, elevation, distance)  # (..., K, N)
    cov = (a.mT * powers[..., None, :].to(a.dtype)) @ a.conj()
    return trace_normalize(cov)


def safe_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh (ascending), except that a batch element holding NaN/inf gets NaN
    eigenvalues and eigenvectors instead of stopping the run with a LAPACK error, so that a bad
    scene surfaces as a non-finite loss (which NonFiniteGuard skips and counts)."""
    finite = torch.isfinite(torch.view_as_real(matrix) if matrix.is_complex() else matrix)
    finite = finite.flatten(-3 if matrix.is_complex() else -2).all(-1)
    if bool(finite.all()):
        return torch.linalg.eigh(matrix)
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    eigvals, eigvecs = torch.linalg.eigh(torch.where(finite[..., None, None], matrix, eye))
    nan = torch.tensor(float("nan"), device=matrix.device)
    return (torch.where(finite[..., None], eigvals, nan),
            torch.where(finite[..., None, None], eigvecs, nan.to(eigvecs.dtype)))
