"""RISBeamspaceNet: coded snapshots (y, H, C) -> covariance factors A (N x K_MAX), a source
count, and the positions behind A (the direct angle/range regressors).

Backbone (no parameters up to the CNN):
  1. ridge back-projection of each snapshot to the RIS, x_hat_l = G_l^H (G_l G_l^H + alpha I)^-1 y_l,
     and the mean-centred sample covariance R = F F^H (trace N), blind to the unknown phase of
     each snapshot's source signals;
  2. beamspace images on a coarse (azimuth, elevation, inverse range) grid with near-field
     steering vectors a_g: the Bartlett spectrum a_g^H R a_g / N (log, relative to its scene mean)
     and the share of a_g in the K_MAX leading eigenvectors of R (a soft MUSIC spectrum);
  3. a residual CNN over (azimuth, elevation) with the inverse-range bins as channels.
Heads:
  heat    one logit per grid cell: "a source is nearest to this cell" (trained as a CenterNet
          heat map: Zhou, Wang & Kraehenbuehl, "Objects as Points", 2019);
  offset  the sub-cell position of that source, within +-1 cell on each axis;
  factors the K_MAX strongest local maxima of heat, j = 1..K_MAX, give
          A[:, j] = sqrt(sigmoid(heat_j)) a(cell_j + offset_j): steering vectors on the array
          manifold, so R_pred = A A^H has the structure of a true source covariance;
  count   MLP over the sorted top heat logits, log-eigenvalues of R and pooled features.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from datamodules.ris.physics import RISGeometry, as_complex, ridge_backprojection, safe_eigh, sample_covariance_factor, steering
from hylab.settings import parse_settings
from lightning_modules.ris.settings import BeamspaceNetSettings


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm = nn.GroupNorm(4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(self.norm(x)))))


class RISBeamspaceNet(nn.Module):
    """Settings: `BeamspaceNetSettings` (lightning_modules/ris/settings.py), the keys of `model.net`."""

    def __init__(self, **settings):
        super().__init__()
        s = self.settings = parse_settings(BeamspaceNetSettings, settings, "model.net")
        self.geometry = RISGeometry.of(s.geometry)
        self.k_max, self.ridge_k = s.k_max, s.ridge_k
        self.spectrum_size = min(self.geometry.num_elements, s.snapshots - 1)
        step = s.angle_step_deg
        azimuth = torch.deg2rad(torch.arange(s.azimuth_deg[0], s.azimuth_deg[1] + 1e-9, step, dtype=torch.float64))
        elevation = torch.deg2rad(torch.arange(s.elevation_deg[0], s.elevation_deg[1] + 1e-9, step, dtype=torch.float64))
        rho = torch.linspace(1 / s.range_m[1], 1 / s.range_m[0], s.inverse_range_bins, dtype=torch.float64)
        self.axes = [azimuth.float(), elevation.float(), rho.float()]
        self.steps = torch.tensor([math.radians(step), math.radians(step), float(rho[1] - rho[0]) if len(rho) > 1 else 1.0])
        self.lower = torch.tensor([float(azimuth[0]), float(elevation[0]), float(rho[0])])
        self.upper = torch.tensor([float(azimuth[-1]), float(elevation[-1]), float(rho[-1])])
        # (G, N) near-field steering vectors; rho varies fastest, then elevation, then azimuth
        az, el, inv = torch.meshgrid(azimuth, elevation, rho, indexing="ij")
        positions = self.geometry.element_positions()
        dictionary = steering(positions, self.geometry.wavenumber, az, el, 1.0 / inv).reshape(-1, positions.shape[0])
        self.register_buffer("dictionary", dictionary.to(torch.complex64), persistent=False)
        self.register_buffer("element_positions", positions.float(), persistent=False)
        bins, channels = s.inverse_range_bins, s.channels
        self.stem = nn.Conv2d(2 * bins, channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(s.blocks)])
        self.heat_head = nn.Conv2d(channels, bins, 1)
        self.offset_head = nn.Conv2d(channels, 3 * bins, 1)
        self.count_head = nn.Sequential(
            nn.Linear(channels + self.spectrum_size + s.k_max + 1, channels), nn.GELU(), nn.Linear(channels, s.k_max)
        )
        nn.init.constant_(self.heat_head.bias, -4.0)  # most cells hold no source

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        return tuple(len(axis) for axis in self.axes)

    def covariance_factor(self, y: torch.Tensor, channel: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """F (B, N, L) with F F^H = R_samp (trace N); inputs real-stacked."""
        xhat = ridge_backprojection(as_complex(y), as_complex(channel), as_complex(codes), self.ridge_k)
        return sample_covariance_factor(xhat)

    def beamspace(self, factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 2*bins, A, E), log-eigenvalues of R (B, L-1)) from F."""
        size = factor.shape[-2]
        gram_vals, gram_vecs = safe_eigh(factor.mH @ factor)
        gram_vals, gram_vecs = gram_vals.flip(-1), gram_vecs.flip(-1)
        leading = factor @ gram_vecs[..., : self.k_max] / gram_vals[..., None, : self.k_max].clamp_min(1e-9).sqrt()
        # one matmul for both spectra; |z|^2 summed over columns, computed on the real view
        power = torch.view_as_real(self.dictionary.conj() @ torch.cat([factor, leading], -1)).pow(2).sum(-1)
        bartlett = power[..., : factor.shape[-1]].sum(-1) / size  # a^H R a / N, (B, G)
        captured = power[..., factor.shape[-1] :].sum(-1) / size  # |U_K^H a|^2 / N
        bartlett = torch.log(bartlett.clamp_min(1e-9) / bartlett.mean(-1, keepdim=True).clamp_min(1e-9))
        a, e, r = self.grid_shape
        images = torch.stack([bartlett, captured], 1).reshape(-1, 2, a, e, r).permute(0, 1, 4, 2, 3).reshape(-1, 2 * r, a, e)
        spectrum = gram_vals[..., : self.spectrum_size].clamp_min(1e-6).log()
        return images, spectrum

    def heat_and_offsets(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """heat logits (B, A, E, R), offsets in cells (B, A, E, R, 3) within +-1, pooled features."""
        features = self.blocks(self.stem(images))
        a, e, r = self.grid_shape
        heat = self.heat_head(features).permute(0, 2, 3, 1)
        offsets = torch.tanh(self.offset_head(features).reshape(-1, 3, r, a, e).permute(0, 3, 4, 2, 1))
        return heat, offsets, features.mean((-2, -1))

    def select(self, heat: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The strongest local maxima of heat: positions (B, K_MAX, 3) as (azimuth, elevation, rho)
        of the first K_MAX, and the heat logits of the first K_MAX + 1 (B, K_MAX + 1), descending."""
        pooled = F.max_pool3d(heat[:, None], kernel_size=3, stride=1, padding=1)[:, 0]
        peaks = torch.where(heat >= pooled, heat, torch.full_like(heat, -1e4))
        logits, index = peaks.flatten(1).topk(self.k_max + 1, dim=1)
        index = index[:, : self.k_max]
        cells = torch.stack(torch.unravel_index(index, heat.shape[1:]), -1)  # (B, K, 3)
        grid = torch.stack([axis.to(heat.device)[cells[..., i]] for i, axis in enumerate(self.axes)], -1)
        chosen = offsets.flatten(1, 3).gather(1, index[..., None].expand(-1, -1, 3))
        positions = grid + chosen * self.steps.to(heat.device)
        positions = torch.minimum(torch.maximum(positions, self.lower.to(heat.device)), self.upper.to(heat.device))
        return positions, logits

    def cells_of(self, azimuth: torch.Tensor, elevation: torch.Tensor, distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest grid cell (..., 3) of each position and its offset from it in cells (..., 3)."""
        point = torch.stack([azimuth, elevation, 1.0 / distance], -1)
        scaled = (point - self.lower.to(point.device)) / self.steps.to(point.device)
        top = torch.tensor(self.grid_shape, device=point.device) - 1
        cells = torch.minimum(torch.round(scaled).clamp_min(0), top).long()
        return cells, (scaled - cells).clamp(-1, 1)

    def forward(self, y: torch.Tensor, channel: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
        """y (B, L, M, 2), channel (B, M, N, 2), codes (B, L, N, 2) -> factors (B, N, K_MAX) complex,
        count_logits (B, K_MAX), positions (B, K_MAX, 3) as (azimuth rad, elevation rad, range m),
        heat (B, A, E, R) and offsets (B, A, E, R, 3) for the heat-map loss, and sample_factor F
        (B, N, L) of R_samp, so that the blend need not back-project again."""
        with torch.no_grad():
            sample_factor = self.covariance_factor(y, channel, codes)
            images, spectrum = self.beamspace(sample_factor)
        heat, offsets, pooled = self.heat_and_offsets(images)
        positions, logits = self.select(heat, offsets)
        a = steering(self.element_positions, self.geometry.wavenumber, positions[..., 0], positions[..., 1], 1.0 / positions[..., 2])
        factors = (a * torch.sigmoid(logits[:, : self.k_max])[..., None].sqrt()).mT  # (B, N, K)
        count_logits = self.count_head(torch.cat([pooled, spectrum, logits], -1))
        positions = torch.cat([positions[..., :2], 1.0 / positions[..., 2:]], -1)
        return {
            "factors": factors, "count_logits": count_logits, "positions": positions,
            "heat": heat, "offsets": offsets, "sample_factor": sample_factor,
        }
