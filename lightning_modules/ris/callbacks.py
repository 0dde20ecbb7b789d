"""Watch the hybrid covariance of the RIS family while it trains.

Every `every_n_steps` training steps it logs beta, the trace and Frobenius norm of R_pred,
R_samp and R_blend, |R_blend - R_pred|_F, numerical ranks, and the share of R_blend's trace in
its K leading eigenvalues (K the true count). At the end of each validation epoch it draws the
MUSIC spectrum of the first validation scene with the true sources marked, through
hylab.figures.log_figure (PNG under the run's plots/ and to every logger that takes images).
"""

import lightning as L
import torch

from datamodules.ris.physics import safe_eigh
from hylab.settings import parse_settings
from lightning_modules.ris.covariance import HybridCovariance
from lightning_modules.ris.losses import present_mask
from lightning_modules.ris.metrics import truth_of
from lightning_modules.ris.settings import CovarianceLoggerSettings


def numerical_rank(eigvals: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """Eigenvalues above tolerance * the largest; eigvals (B, N) descending."""
    return (eigvals > tolerance * eigvals[:, :1]).sum(-1).float()


def covariance_statistics(cov: HybridCovariance, count: torch.Tensor) -> dict[str, float]:
    """Batch means of the quantities above; rank and top-K share of R_blend exclude the loading."""
    stats = {"beta": float(cov.beta)}
    named = {"blend": cov.blend, "samp": cov.sample} | ({"pred": cov.pred} if cov.pred is not None else {})
    for name, matrix in named.items():
        stats[f"tr_{name}"] = float(matrix.diagonal(dim1=-2, dim2=-1).sum(-1).real.mean())
        stats[f"fro_{name}"] = float(torch.linalg.matrix_norm(matrix).mean())
    if cov.pred is not None:
        stats["fro_blend_minus_pred"] = float(torch.linalg.matrix_norm(cov.blend - cov.pred).mean())
    unloaded = {name: matrix for name, matrix in named.items() if name != "blend"}
    eye = torch.eye(cov.blend.shape[-1], dtype=cov.blend.dtype, device=cov.blend.device)
    unloaded["blend"] = cov.blend - cov.loading * eye
    for name, matrix in unloaded.items():
        eigvals = safe_eigh(matrix)[0].flip(-1)
        stats[f"rank_{name}"] = float(numerical_rank(eigvals).mean())
        if name == "blend":
            top = present_mask(count, eigvals.shape[-1])
            share = (eigvals.clamp_min(0) * top).sum(-1) / eigvals.clamp_min(0).sum(-1).clamp_min(1e-12)
            stats["topk_energy_blend"] = float(share.mean())
    return stats


def spectrum_figure(spectrum: torch.Tensor, axes, truth: torch.Tensor, count: int, estimates: torch.Tensor | None = None):
    """Two panels of a (A, E, R) MUSIC spectrum in dB: azimuth-elevation (max over range) and
    azimuth-range (max over elevation); true sources as white circles, estimates as red crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    db = 10 * torch.log10(spectrum / spectrum.max()).cpu().numpy()
    azimuth, elevation, rho = (np.degrees(axes[0].numpy()), np.degrees(axes[1].numpy()), axes[2].numpy())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.pcolormesh(azimuth, elevation, db.max(axis=2).T, shading="nearest", cmap="viridis")
    right.pcolormesh(azimuth, 1 / rho, db.max(axis=1).T, shading="nearest", cmap="viridis")
    true = truth[:count].cpu().numpy()
    marks = {"facecolors": "none", "edgecolors": "white", "s": 120, "linewidths": 2, "label": "true"}
    left.scatter(np.degrees(true[:, 0]), np.degrees(true[:, 1]), **marks)
    right.scatter(np.degrees(true[:, 0]), true[:, 2], **marks)
    if estimates is not None:
        est = estimates[:count].cpu().numpy()
        left.scatter(np.degrees(est[:, 0]), np.degrees(est[:, 1]), marker="x", c="red", s=60, label="estimate")
        right.scatter(np.degrees(est[:, 0]), est[:, 2], marker="x", c="red", s=60)
    left.set(xlabel="azimuth (deg)", ylabel="elevation (deg)", title="MUSIC spectrum, max over range (dB)")
    right.set(xlabel="azimuth (deg)", ylabel="range (m)", yscale="log", title="max over elevation (dB)")
    left.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    return figure


class RISCovarianceLogger(L.Callback):
    """Settings: `CovarianceLoggerSettings` (every_n_steps, plot_spectrum)."""

    def __init__(self, **settings):
        self.settings = parse_settings(CovarianceLoggerSettings, settings, "callbacks.ris_covariance_logger")
        self.first_scene: dict | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not isinstance(outputs, dict) or "covariance" not in outputs:
            return
        if trainer.global_step % self.settings.every_n_steps:
            return
        stats = covariance_statistics(outputs["covariance"], outputs["count"])
        # straight to the loggers: self.log would re-emit the last value at every logging step
        for logger in trainer.loggers:
            logger.log_metrics({f"train/{name}": value for name, value in stats.items()}, step=trainer.global_step)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and isinstance(outputs, dict) and "covariance" in outputs:
            self.first_scene = {
                "blend": outputs["covariance"].blend[:1].detach(),
                "k_used": outputs["k_used"][:1],
                "estimates": outputs["estimates"][0].detach(),
                "truth": truth_of(batch)[0],
                "count": int(batch["k"][0]),
            }

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        scene, self.first_scene = self.first_scene, None
        if not self.settings.plot_spectrum or scene is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        from hylab.figures import log_figure

        music = pl_module.music
        spectrum = music.spectrum(scene["blend"], scene["k_used"])[0]
        figure = spectrum_figure(spectrum, music.grid.axes(), scene["truth"], scene["count"], scene["estimates"])
        log_figure(trainer, "val/music_spectrum", figure)
