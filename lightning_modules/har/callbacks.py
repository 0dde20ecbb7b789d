"""Fine-tuning from a shared base model, obtained through the run store.

finetune.mode (datamodules/har/data.py FINETUNE_MODES) decides what a run trains on and whether
it starts from a base model. When it does, `setup` asks the run store for the base run
(hylab.checkpoints.load_from_source, experiment = base experiment + base overrides): the first
job that needs a base config trains it, in its own process, under a file lock; every other job,
concurrent or later, waits for it and reuses it. A base net that does not fit fails with a clear
error, then the layers named by `freeze` are fixed through Lightning's BaseFinetuning hook
(callbacks/frozen_parts.py): no gradient, left out of the optimizer, and kept in eval mode so
their BatchNorm statistics stay the base's.

This is a callback, not part of the LightningModule, so the module stays a plain classifier and
`setup` runs before the optimizer is built (frozen layers never enter it).
"""

import json
import logging
from pathlib import Path

import lightning as L
from torch import nn

from callbacks.frozen_parts import FrozenParts
from datamodules.har.data import check_finetune_mode
from hylab.checkpoints import load_from_source
from hylab.errors import UserError
from hylab.net_source import NetSource
from hylab.records import atomic_write_text
from lightning_modules.classifier import check_parts
from lightning_modules.har.aggregate import BASE_RECORD

log = logging.getLogger("hylab.har")


def under(name: str, prefix: str) -> bool:
    """`name` is `prefix` or inside it (dotted module and parameter names)."""
    return name == prefix or name.startswith(prefix + ".")


def overlapping(a: str, b: str) -> bool:
    return under(a, b) or under(b, a)


class FineTuneFromBase(FrozenParts):
    """store_dir: the run store of the base runs (None: the one the base experiment's config names)."""

    def __init__(
        self,
        mode: str,
        base_experiment: str,
        base_overrides: list[str],
        extra_base_overrides: list[str] | None = None,
        freeze: list[str] | None = None,
        lr_scales: dict | None = None,
        store_dir: str | None = None,
        log_dir: str | None = None,
    ):
        super().__init__()
        self.mode_name = mode
        self.mode = check_finetune_mode(mode)
        self.base_experiment = base_experiment
        self.base_overrides = [str(o) for o in base_overrides] + [str(o) for o in extra_base_overrides or []]
        self.freeze = [str(name) for name in freeze or []]
        self.store_dir, self.log_dir = store_dir, log_dir
        self.base_record: dict | None = None
        self.prepared = False
        self._check_combination(dict(lr_scales or {}))

    def _check_combination(self, lr_scales: dict) -> None:
        if not self.mode.from_base:
            for key, value in (("finetune.freeze", self.freeze), ("finetune.lr_scales", lr_scales)):
                if value:
                    raise UserError(
                        f"{key}={value} adjusts layers of a base model, but finetune.mode={self.mode_name} trains a fresh one: "
                        f"set {key} empty, or use finetune.mode=full_fine_tuning or target_only_fine_tuning"
                    )
            return
        if not self.base_experiment:
            raise UserError(f"finetune.mode={self.mode_name} starts from a base model: set finetune.base.experiment (e.g. har_base)")
        clash = [(f, s) for f in self.freeze for s in lr_scales if overlapping(f, s)]
        if clash:
            raise UserError(f"finetune.lr_scales sets a rate for {clash[0][1]!r}, which finetune.freeze keeps fixed ({clash[0][0]!r}): drop one of them")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.prepared:
            return
        net = pl_module.net
        check_parts(net, self.freeze, "finetune.freeze")
        data_mode = getattr(trainer.datamodule, "hparams", {}).get("finetune_mode") if trainer.datamodule else None
        if data_mode != self.mode_name:
            raise UserError(f"data.finetune_mode={data_mode} differs from finetune.mode={self.mode_name}: leave data.finetune_mode at ${{finetune.mode}}")
        if self.mode.from_base:
            self.base_record = self._load_base(net)
            if trainer.is_global_zero:
                atomic_write_text(Path(trainer.default_root_dir) / BASE_RECORD, json.dumps(self.base_record, indent=2) + "\n")
        super().setup(trainer, pl_module, stage)  # BaseFinetuning: freeze_before_training
        self.prepared = True

    def _load_base(self, net: nn.Module) -> dict:
        try:
            source = NetSource(experiment=self.base_experiment, overrides=self.base_overrides, store_dir=self.store_dir, log_dir=self.log_dir)
            base, _, found = load_from_source(source, "finetune.base", expected=net)
        except UserError as err:
            if "does not fit the net" not in str(err):
                raise
            raise UserError(f"{err}; give the base run this job's net settings through finetune.base.extra_overrides") from None
        net.load_state_dict(base.state_dict())
        log.info(f"fine-tuning from base model {found.record['store_key']} ({found.record['run_dir']})")
        return {
            "key": found.record["store_key"], "checkpoint": str(found.path), "run_dir": found.record["run_dir"],
            "experiment": self.base_experiment, "overrides": self.base_overrides, "metrics": found.metrics,
        }

    def frozen_parameters(self, pl_module: L.LightningModule) -> list[nn.Parameter]:
        return [param for name, param in pl_module.net.named_parameters() if any(under(name, f) for f in self.freeze)]

    def eval_modules(self, pl_module: L.LightningModule) -> list[nn.Module]:
        return [module for name, module in pl_module.net.named_modules() if name and any(under(name, f) for f in self.freeze)]
