"""RIS near-field localization: learn the covariance of the RIS-side signal so that MUSIC finds
angles and ranges better than it does on the sample covariance of the same snapshots.

One module serves the learned model (net given) and the classical baseline (net=null: R_blend
is R_samp and MUSIC runs on it). Training, validation, test, predict and the benchmark all go
through `hybrid_covariance` and `localize`. Losses are in losses.py, MUSIC in music.py, scores in metrics.py.
"""

import dataclasses
import math
from functools import partial

import lightning as L
import torch
from torch import nn

from datamodules.ris.physics import RISGeometry, as_complex, safe_eigh, steering
from hylab.errors import UserError
from hylab.settings import parse_settings
from lightning_modules.best_so_far import BestSoFar
from lightning_modules.optim import configure_optimizers
from lightning_modules.ris.covariance import HybridCovariance, hybrid_covariance
from lightning_modules.ris.likelihood import likelihood_grid, refine_scenes, ris_refiner
from lightning_modules.ris.losses import count_loss, covariance_losses, heatmap_loss, present_mask
from lightning_modules.ris.metrics import LocalizationScores, match_sources, truth_of
from lightning_modules.ris.music import NearFieldMusic, SearchGrid, information_criteria
from lightning_modules.ris.settings import RISLocalizerSettings


class RISLocalizer(L.LightningModule):
    """Settings: `RISLocalizerSettings` (lightning_modules/ris/settings.py), the plain keys of `model`."""

    def __init__(self, net: nn.Module | None = None, optimizer: partial | None = None,
                 scheduler: partial | None = None, **settings):
        super().__init__()
        self.settings = parse_settings(RISLocalizerSettings, settings, "model")
        self.save_hyperparameters(dataclasses.asdict(self.settings), logger=False)
        if self.settings.k_from == "head" and net is None:
            raise UserError("model.k_from='head' needs a count head, and this model has no net: use truth, mdl or aic")
        if net is not None and getattr(net, "ridge_k", self.settings.ridge_k) != self.settings.ridge_k:
            raise UserError(f"model.net.ridge_k={net.ridge_k} differs from model.ridge_k={self.settings.ridge_k}: they must agree")
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler or None
        self.geometry = RISGeometry.of(self.settings.geometry)
        music = self.settings.music
        self.music = NearFieldMusic(self.geometry, SearchGrid.of(music), newton_steps=music.newton_steps)
        self.refiner = ris_refiner(self.geometry, self.music.grid.lower(), self.music.grid.upper(), self.settings.ml)
        self.register_buffer("element_positions", self.geometry.element_positions(torch.float32), persistent=False)
        self.scores = nn.ModuleDict({stage: LocalizationScores() for stage in ("val", "test")})
        self.best = BestSoFar({"val/rmse_deg": "min"}, attributes={"val/rmse_deg": "val_rmse_best"}).add_to(self)  # the name its checkpoints hold

    # ---- the one path from a batch to covariances and estimates ----
    def covariances(self, batch: dict) -> tuple[HybridCovariance, dict]:
        hp = self.settings
        out = self.net(batch["y"], batch["H"], batch["C"]) if self.net is not None else {}
        cov = hybrid_covariance(batch, out.get("factors"), hp.beta, hp.ridge_k, hp.loading, out.get("sample_factor"))
        return cov, out

    def source_count(self, cov: HybridCovariance, out: dict, batch: dict, source: str) -> torch.Tensor:
        if source == "ml":  # the candidates' subspace: the count head's K, or k_max without a head
            return out["count_logits"].argmax(-1) + 1 if "count_logits" in out else torch.full_like(batch["k"], self.settings.k_max)
        if source == "truth":
            return batch["k"]
        if source == "head":
            return out["count_logits"].argmax(-1) + 1
        eigvals = safe_eigh(cov.blend.detach())[0].flip(-1)
        return information_criteria(eigvals, self.settings.snapshots, self.settings.k_max)[source]

    def localize(self, batch: dict) -> dict:
        """Covariances, K and estimates (B, K_MAX, 3) for one batch: MUSIC, then (refine=ml) the
        maximum-likelihood fit on the snapshots; k_from=ml picks K by the criterion on those fits."""
        hp = self.settings
        cov, out = self.covariances(batch)
        k_used = self.source_count(cov, out, batch, hp.k_from)
        k_counted = self.source_count(cov, out, batch, "head" if self.net is not None else "mdl")
        if hp.refine == "ml" or hp.k_from == "ml":
            estimates, k_used = self.refine(batch, cov, out, k_used, {"ml": self.order_penalty(batch)} if hp.k_from == "ml" else None)
            if hp.k_from == "ml":
                k_counted = k_used
        else:
            estimates = self.music.estimate(cov.blend, k_used, hp.k_max)
        return {"covariance": cov, "net": out, "k_used": k_used, "k_counted": k_counted, "estimates": estimates}

    def order_penalty(self, batch: dict) -> float:
        """The information criterion's penalty per real parameter: order_penalty, or 1.5 log(L M)."""
        penalty = self.settings.ml.order_penalty
        return 1.5 * math.log(batch["y"].shape[-3] * batch["y"].shape[-2]) if penalty is None else penalty

    def refine(self, batch: dict, cov: HybridCovariance, out: dict, count: torch.Tensor, counts: dict | None = None):
        """ML fits on the snapshots from a pool: the net's k_max position proposals (if it has a
        net), 2 k_max MUSIC peaks of R_blend (their subspace has `count` columns) and, with
        ml.grid_step_deg, a coarse grid. `counts`: name -> count
        tensor or criterion penalty (default: fit `count` sources); returns (estimates, count), or
        a dict of them when `counts` is given."""
        hp = self.settings
        pool = self.music.estimate(cov.blend, count, 2 * hp.k_max)
        if "positions" in out:  # a net's own proposals (its heat map's strongest cells) come first
            pool = torch.cat([out["positions"].detach().to(pool), pool], 1)
        if hp.ml.grid_step_deg is not None:
            grid = likelihood_grid(self.music.grid, hp.ml.grid_step_deg, hp.ml.grid_inverse_range_points)
            pool = torch.cat([pool, grid.to(pool)[None].expand(len(pool), -1, -1)], 1)
        y, channel, codes = (as_complex(batch[key]) for key in ("y", "H", "C"))
        results = refine_scenes(self.refiner, y, channel, codes, pool, hp.k_max, counts or {"given": count})
        return results if counts is not None and len(counts) > 1 else next(iter(results.values()))

    def forward(self, batch: dict) -> dict:
        return self.localize(batch)

    # ---- losses ----
    def losses(self, batch: dict, cov: HybridCovariance, out: dict) -> dict[str, torch.Tensor]:
        truth = steering(self.element_positions, self.geometry.wavenumber, batch["azimuth"], batch["elevation"], batch["range"])
        parts = covariance_losses(cov, as_complex(batch["R_true"]), truth, batch["k"])
        if "count_logits" in out:
            parts["count"] = count_loss(out["count_logits"], batch["k"])
        if "heat" in out:
            present = present_mask(batch["k"], self.settings.k_max)
            cells, offsets = self.net.cells_of(batch["azimuth"], batch["elevation"], batch["range"])
            parts["heatmap"] = heatmap_loss(out["heat"], out["offsets"], cells, offsets, present)
        parts["loss"] = sum(getattr(self.settings.loss_weights, name) * value for name, value in parts.items())
        return parts

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        if self.net is None:
            raise UserError("this model has no learned part (model.net=null): use task=ris_classical, not fit")
        cov, out = self.covariances(batch)
        parts = self.losses(batch, cov, out)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss")
        return {"loss": parts["loss"], "covariance": cov.detached(), "count": batch["k"]}

    def _evaluate(self, batch: dict, stage: str) -> dict:
        result = self.localize(batch)
        cov, out = result["covariance"], result["net"]
        parts = self.losses(batch, cov, out)
        for name, value in parts.items():
            self.log(f"{stage}/{name}", value, on_epoch=True, sync_dist=True, prog_bar=name == "loss")
        errors = match_sources(result["estimates"], result["k_used"], truth_of(batch), batch["k"])
        errors = dataclasses.replace(errors, count_correct=(result["k_counted"] == batch["k"]).cpu())
        self.scores[stage].update(errors)
        return result

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._evaluate(batch, "test")

    def _log_scores(self, stage: str) -> dict[str, torch.Tensor]:
        values = self.scores[stage].compute()
        self.scores[stage].reset()
        for name, value in values.items():
            self.log(f"{stage}/{name}", value, prog_bar=name in ("rmse_deg", "rmse_m"))
        return values

    def on_train_start(self) -> None:
        self.best.on_train_start(self)

    def on_validation_epoch_end(self) -> None:
        values = self._log_scores("val")
        self.best.update_and_log(self, {"val/rmse_deg": values["rmse_deg"]}, prog_bar=False)

    def on_test_epoch_end(self) -> None:
        self._log_scores("test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        result = self.localize(batch)
        return {
            "estimates": result["estimates"], "k_used": result["k_used"], "k_counted": result["k_counted"],
            "truth": truth_of(batch), "k": batch["k"], "snr_db": batch["snr_db"],
        }

    def configure_optimizers(self):
        if self.net is None or self.optimizer_factory is None:
            raise UserError("this model has no learned part or no optimizer: use task=ris_classical")
        return configure_optimizers(self, self.optimizer_factory, self.scheduler_factory, self.head_lr_scales())

    def head_lr_scales(self) -> dict[str, float]:
        """The heads (the net's top-level modules named *head*) train at head_lr_multiplier x lr."""
        heads = [name for name, child in self.net.named_children() if "head" in name and any(True for _ in child.parameters())]
        return {f"net.{name}": self.settings.head_lr_multiplier for name in heads}
