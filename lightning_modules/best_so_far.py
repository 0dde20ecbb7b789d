"""The best-so-far value of validation metrics, logged as `<name>_best`: one tracker for every
family (`val/acc_best`, `val/bpb_best`, `val/rmse_deg_best`, ...), so a sweep's default
`optimized_metric: ${monitor}_best` exists whatever the family.

`modes` maps metric names (`val/acc`) to "max" or "min". `add_to` registers one torchmetrics
Max/MinMetric per name on the module, as `<name with / as _>_best` (`val_acc_best`) unless
`attributes` names it otherwise (names that checkpoints already hold): saved with the module's
state, so the best survives a resume from a checkpoint; cleared when a fresh fit starts.
"""

from collections.abc import Mapping

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MinMetric


class BestSoFar:
    def __init__(self, modes: Mapping[str, str], attributes: Mapping[str, str] | None = None):
        self.modes = dict(modes)
        self.attributes = {name: (attributes or {}).get(name) or self.attribute(name) for name in self.modes}

    @staticmethod
    def attribute(name: str) -> str:
        return name.replace("/", "_") + "_best"

    def add_to(self, module: nn.Module) -> "BestSoFar":
        for name, mode in self.modes.items():
            metric = MaxMetric() if mode == "max" else MinMetric()
            metric.persistent(True)
            setattr(module, self.attributes[name], metric)
        return self

    def on_train_start(self, module: L.LightningModule) -> None:
        if module.trainer.global_step == 0:  # keep the best values when resuming
            for name in self.modes:
                getattr(module, self.attributes[name]).reset()

    def update_and_log(self, module: L.LightningModule, values: Mapping[str, torch.Tensor], prog_bar: bool = True) -> None:
        """Fold this epoch's `values` in and log the best of each (skipped while sanity checking)."""
        if module.trainer.sanity_checking:
            return
        for name, value in values.items():
            metric = getattr(module, self.attributes[name])
            metric(value)
            module.log(f"{name}_best", metric.compute(), sync_dist=True, prog_bar=prog_bar)
