"""Localization errors over matched sources.

Estimated and true sources of a scene are paired by the optimal assignment (Kuhn-Munkres,
scipy.optimize.linear_sum_assignment) on the cost
    (d azimuth)^2 + (d elevation)^2 [deg^2] + (RANGE_WEIGHT * d range)^2 [deg^2 per m^2 * m^2],
so pairing follows direction first; when fewer sources are estimated than exist (or more), only
min(K_est, K) pairs count. Reported: angle RMSE sqrt(mean(d az^2 + d el^2)) in degrees, its
azimuth and elevation parts, range RMSE in metres, and the fraction of scenes whose K is right;
for the benchmark also median errors and the share of outliers (angle error > 5 deg), since
RMSE over a mix of good estimates and a few wild ones is ruled by the wild ones.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchmetrics import SumMetric

RANGE_WEIGHT_DEG_PER_M = 1.0
OUTLIER_DEG = 5.0  # a matched source whose angle error exceeds this counts as an outlier


def rmse_of_sums(azimuth_sq, elevation_sq, range_sq, pairs) -> dict[str, torch.Tensor]:
    """Angle RMSE sqrt(mean(d az^2 + d el^2)) [deg], its two parts, and range RMSE [m] from sums
    of squared errors over `pairs` matched sources."""
    return {
        "rmse_deg": ((azimuth_sq + elevation_sq) / pairs).sqrt(),
        "rmse_az_deg": (azimuth_sq / pairs).sqrt(),
        "rmse_el_deg": (elevation_sq / pairs).sqrt(),
        "rmse_m": (range_sq / pairs).sqrt(),
    }


@dataclass
class MatchedErrors:
    """Squared errors of every matched pair (flat over scenes) and per-scene count hits."""

    azimuth_sq_deg: torch.Tensor
    elevation_sq_deg: torch.Tensor
    range_sq_m: torch.Tensor
    count_correct: torch.Tensor

    def summary(self) -> dict[str, float]:
        def median(values):
            return math.sqrt(float(values.median())) if len(values) else float("nan")

        angle = self.azimuth_sq_deg + self.elevation_sq_deg
        sums = (self.azimuth_sq_deg.sum(), self.elevation_sq_deg.sum(), self.range_sq_m.sum())
        rmse = {name: float(value) for name, value in rmse_of_sums(*sums, len(angle)).items()}  # no pairs: NaN
        return rmse | {
            "k_acc": float(self.count_correct.float().mean()),
            "median_deg": median(angle),
            "median_m": median(self.range_sq_m),
            "outliers": float((angle > OUTLIER_DEG**2).float().mean()) if len(angle) else float("nan"),
        }


def match_sources(estimate: torch.Tensor, k_est: torch.Tensor, truth: torch.Tensor, k_true: torch.Tensor) -> MatchedErrors:
    """estimate/truth (B, K_MAX, 3) as (azimuth rad, elevation rad, range m); slots beyond the
    scene's count are ignored."""
    est, tru = estimate.detach().double().cpu().numpy(), truth.detach().double().cpu().numpy()
    k_est_np, k_true_np = k_est.cpu().numpy(), k_true.cpu().numpy()
    az, el, rg = [], [], []
    for b in range(len(est)):
        e, t = est[b, : k_est_np[b]], tru[b, : k_true_np[b]]
        d_az = np.degrees(e[:, None, 0] - t[None, :, 0])
        d_el = np.degrees(e[:, None, 1] - t[None, :, 1])
        d_r = e[:, None, 2] - t[None, :, 2]
        cost = d_az**2 + d_el**2 + (RANGE_WEIGHT_DEG_PER_M * d_r) ** 2
        rows, cols = linear_sum_assignment(np.nan_to_num(cost, nan=1e12, posinf=1e12))  # NaN errors stay NaN
        az.append(d_az[rows, cols] ** 2)
        el.append(d_el[rows, cols] ** 2)
        rg.append(d_r[rows, cols] ** 2)
    flat = [torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0) for parts in (az, el, rg)]
    return MatchedErrors(*flat, count_correct=(k_est.cpu() == k_true.cpu()))


def truth_of(batch: dict) -> torch.Tensor:
    """(B, K_MAX, 3) true (azimuth, elevation, range) of a network batch."""
    return torch.stack([batch["azimuth"], batch["elevation"], batch["range"]], dim=-1)


class LocalizationScores(nn.Module):
    """Sums of squared errors over matched sources and count hits, synced across processes."""

    def __init__(self):
        super().__init__()
        for name in ("az", "el", "range", "pairs", "k_hits", "scenes"):
            # NaN errors must surface as a NaN RMSE; the default strategy drops them and flatters the model
            setattr(self, name, SumMetric(nan_strategy="disable"))

    def update(self, errors: MatchedErrors) -> None:
        self.az.update(errors.azimuth_sq_deg.sum())
        self.el.update(errors.elevation_sq_deg.sum())
        self.range.update(errors.range_sq_m.sum())
        self.pairs.update(float(len(errors.range_sq_m)))
        self.k_hits.update(errors.count_correct.float().sum())
        self.scenes.update(float(len(errors.count_correct)))

    def compute(self) -> dict[str, torch.Tensor]:
        pairs = self.pairs.compute().clamp_min(1)
        return rmse_of_sums(self.az.compute(), self.el.compute(), self.range.compute(), pairs) | {
            "k_acc": self.k_hits.compute() / self.scenes.compute().clamp_min(1),
        }

    def reset(self) -> None:
        for metric in self.children():
            metric.reset()
