"""Near-field MUSIC: a coarse grid over (azimuth, elevation, inverse range), peak picking, and
damped Newton refinement of each peak; source counting by MDL / AIC.

MUSIC (Schmidt, IEEE Trans. AP 1986) with unit-modulus steering vectors, |a|^2 = N:
    null(eta) = 1 - |U_s^H a(eta)|^2 / N   (0 on the signal subspace),  P(eta) = 1 / null(eta)
Range is searched as inverse range rho = 1/r: the near-field phase curvature is linear in 1/r,
so a uniform grid in rho is uniform in resolution. Everything is batched torch.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F

from datamodules.ris.physics import RISGeometry, safe_eigh, steering
from lightning_modules.ris.settings import GridSettings


class SearchGrid(GridSettings):
    """The grid settings with the axes and box they define."""

    @classmethod
    def of(cls, settings: GridSettings) -> "SearchGrid":
        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(GridSettings)})

    def axes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(azimuth rad, elevation rad, inverse range 1/m) grid axes."""
        def axis(bounds, step):
            count = max(1, round((bounds[1] - bounds[0]) / step) + 1)
            return torch.deg2rad(torch.linspace(bounds[0], bounds[1], count, dtype=torch.float64))

        rho = torch.linspace(1 / self.range_m[1], 1 / self.range_m[0], self.inverse_range_points, dtype=torch.float64)
        return axis(self.azimuth_deg, self.azimuth_step_deg), axis(self.elevation_deg, self.elevation_step_deg), rho

    def lower(self) -> torch.Tensor:
        return torch.tensor([math.radians(self.azimuth_deg[0]), math.radians(self.elevation_deg[0]), 1 / self.range_m[1]])

    def upper(self) -> torch.Tensor:
        return torch.tensor([math.radians(self.azimuth_deg[1]), math.radians(self.elevation_deg[1]), 1 / self.range_m[0]])


@dataclass
class NearFieldMusic:
    """Grid MUSIC + Newton refinement for one geometry. Estimates are (azimuth rad, elevation
    rad, range m) per source slot."""

    geometry: RISGeometry
    grid: SearchGrid = field(default_factory=SearchGrid)
    newton_steps: int = 8
    chunk: int = 64

    @cached_property
    def positions(self) -> torch.Tensor:
        return self.geometry.element_positions(torch.float32)

    @cached_property
    def dictionary(self) -> torch.Tensor:
        """(G, N) steering vectors of the grid, G = azimuths x elevations x inverse ranges."""
        azimuth, elevation, rho = self.grid.axes()
        az, el, inv = torch.meshgrid(azimuth, elevation, rho, indexing="ij")
        a = steering(self.geometry.element_positions(), self.geometry.wavenumber, az, el, 1.0 / inv)
        return a.reshape(-1, a.shape[-1]).to(torch.complex64)

    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(len(axis) for axis in self.grid.axes())

    @staticmethod
    def signal_basis(cov: torch.Tensor, count: torch.Tensor, width: int) -> torch.Tensor:
        """The `count` leading eigenvectors of each covariance, zero-padded to `width` columns."""
        _, eigvecs = safe_eigh(cov)
        basis = eigvecs.flip(-1)[..., :width]
        keep = torch.arange(width, device=cov.device) < count[:, None]
        return basis * keep[:, None, :].to(basis.dtype)

    def null_spectrum(self, basis: torch.Tensor) -> torch.Tensor:
        """null(eta) on the grid, (B, A, E, R); basis (B, N, K) with unused columns zero."""
        dictionary = self.dictionary.to(basis.device)
        parts = []
        for start in range(0, basis.shape[0], self.chunk):
            projection = basis[start : start + self.chunk].mH @ dictionary.T  # (b, K, G)
            parts.append(1.0 - (projection.abs() ** 2).sum(-2) / dictionary.shape[-1])
        return torch.cat(parts).reshape(-1, *self.grid_shape()).clamp_min(1e-9)

    def spectrum(self, cov: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """The MUSIC pseudo-spectrum 1/null on the grid, (B, A, E, R)."""
        return 1.0 / self.null_spectrum(self.signal_basis(cov, count, int(count.max())))

    def grid_peaks(self, null: torch.Tensor, width: int) -> torch.Tensor:
        """The `width` deepest local minima of null per scene as (azimuth, elevation, rho), (B, width, 3)."""
        score = -torch.log(null)
        pooled = F.max_pool3d(score[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        score = torch.where(score >= pooled, score, torch.full_like(score, -torch.inf))
        index = score.flatten(1).topk(width, dim=1).indices
        a, e, r = torch.unravel_index(index, null.shape[1:])
        azimuth, elevation, rho = (axis.to(null.device, torch.float32) for axis in self.grid.axes())
        return torch.stack([azimuth[a], elevation[e], rho[r]], dim=-1)

    def null_at(self, params: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """null(eta) at points params (S, P, 3) = (azimuth, elevation, rho) for bases (S, N, K)."""
        positions = self.positions.to(basis.device, params.dtype)
        a = steering(positions, self.geometry.wavenumber, params[..., 0], params[..., 1], 1.0 / params[..., 2])
        projection = a.to(basis.dtype) @ basis.conj()  # (S, P, K) = (U^H a)^T
        return 1.0 - (projection.abs() ** 2).sum(-1) / basis.shape[-2]

    def refine(self, basis: torch.Tensor, start: torch.Tensor, step: float = 1e-4) -> torch.Tensor:
        """Levenberg-damped Newton on null(azimuth, elevation, rho) from each grid peak, in float64
        with central-difference gradient and Hessian (19 points a step, all sources at once). A step
        is kept only where it lowers null; estimates stay inside the search box."""
        batch, width, _ = start.shape
        # source s of scene b is row b*width + s; its basis is the scene's
        basis = basis.to(torch.complex128).repeat_interleave(width, dim=0)
        params = start.reshape(-1, 3).double()
        lower, upper = self.grid.lower().to(params), self.grid.upper().to(params)
        eye = torch.eye(3, dtype=params.dtype, device=params.device)
        pairs = [(i, j) for i in range(3) for j in range(i + 1, 3)]
        offsets = [torch.zeros(3)] + [s * eye[i].cpu() for i in range(3) for s in (1, -1)]
        offsets += [si * eye[i].cpu() + sj * eye[j].cpu() for i, j in pairs for si in (1, -1) for sj in (1, -1)]
        stencil = step * torch.stack(offsets).to(params)  # (19, 3)
        damping = torch.full((len(params),), 1e-3, dtype=params.dtype, device=params.device)
        for _ in range(self.newton_steps):
            values = self.null_at(params[:, None, :] + stencil, basis)  # (S, 19)
            centre, plus, minus = values[:, 0], values[:, 1:7:2], values[:, 2:7:2]
            grad = (plus - minus) / (2 * step)
            hess = torch.diag_embed((plus - 2 * centre[:, None] + minus) / step**2)
            for n, (i, j) in enumerate(pairs):
                pp, pm, mp, mm = values[:, 7 + 4 * n : 11 + 4 * n].unbind(-1)
                hess[:, i, j] = hess[:, j, i] = (pp - pm - mp + mm) / (4 * step**2)
            scale = hess.diagonal(dim1=-2, dim2=-1).abs().mean(-1).clamp_min(1e-9)
            system = hess + (damping * scale)[:, None, None] * eye
            delta = torch.linalg.solve(system, -grad.unsqueeze(-1)).squeeze(-1)
            trial = torch.minimum(torch.maximum(params + delta, lower), upper)
            improved = self.null_at(trial[:, None, :], basis)[:, 0] < centre
            params = torch.where(improved[:, None], trial, params)
            damping = torch.where(improved, damping * 0.3, damping * 10.0).clamp(1e-9, 1e9)
        return params.reshape(batch, width, 3).to(start.dtype)

    def estimate(self, cov: torch.Tensor, count: torch.Tensor, width: int) -> torch.Tensor:
        """(B, width, 3) estimates (azimuth rad, elevation rad, range m); slots >= count are padding."""
        cov = cov.detach()
        count = count.clamp(1, width)
        basis = self.signal_basis(cov, count, width)
        start = self.grid_peaks(self.null_spectrum(basis), width)
        refined = self.refine(basis, start) if self.newton_steps > 0 else start
        return torch.cat([refined[..., :2], 1.0 / refined[..., 2:]], dim=-1)


def information_criteria(eigvals: torch.Tensor, snapshots: int, k_max: int) -> dict[str, torch.Tensor]:
    """Number of sources by AIC and MDL (Wax & Kailath, IEEE Trans. ASSP 1985) from eigenvalues
    in descending order. Only the m = min(N, L - 1) leading eigenvalues are used: a covariance of
    L mean-centred snapshots has no more than L - 1 nonzero ones.
        AIC(k) = -2 L (m-k) log(g_k / a_k) + 2 k (2m - k)
        MDL(k) = -L (m-k) log(g_k / a_k) + k (2m - k) log(L) / 2
    g_k, a_k: geometric and arithmetic means of eigenvalues k+1..m. k runs over 1..k_max."""
    m = min(eigvals.shape[-1], snapshots - 1)
    lam = eigvals[..., :m].clamp_min(1e-12)
    ks = torch.arange(1, k_max + 1, device=eigvals.device)
    tail = torch.arange(m, device=eigvals.device)[None, :] >= ks[:, None]  # (k, m): eigenvalues k+1..m
    count = tail.sum(-1).to(lam.dtype)
    log_geo = (torch.log(lam)[..., None, :] * tail).sum(-1) / count
    log_arith = torch.log((lam[..., None, :] * tail).sum(-1) / count)
    fit = (m - ks).to(lam.dtype) * (log_arith - log_geo)  # (m-k) log(a_k / g_k) >= 0
    penalty = (ks * (2 * m - ks)).to(lam.dtype)
    aic = 2 * snapshots * fit + 2 * penalty
    mdl = snapshots * fit + 0.5 * penalty * math.log(snapshots)
    return {"aic": aic.argmin(-1) + 1, "mdl": mdl.argmin(-1) + 1}
