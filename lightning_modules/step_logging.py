"""Training scalars at a few calls of `self.log` per epoch instead of a few per step.

Each `LightningModule.log` call costs about 1 ms of Python on CPU (Lightning moves the logged
name's stored result to the value's device on every call, walking its state), whatever the
value. A training step that logs its loss and its terms pays that per name per step: 4-5 % of a
90 ms step for five names (bench/overhead.py, docs/RESULTS.md). `EpochMeans` keeps a running
sum per name as a tensor instead (no host sync) and calls `log`

- once per epoch per name, from `log_epoch` (the epoch's mean over its steps, synced across
  processes), under the plain name (`train/loss`);
- every `trainer.log_every_n_steps` steps for the names in `per_step`, under `<name>_step`
  (`train/loss_step`): the steps the logger writes anyway, so those curves keep their density;
  and at each epoch's last step, so that the run's final metrics hold the last value.
"""

from collections.abc import Iterable, Mapping

import lightning as L
import torch


class EpochMeans:
    def __init__(self, per_step: Iterable[str] = ("train/loss",), prog_bar: Iterable[str] = ("train/loss",)):
        self.per_step, self.prog_bar = set(per_step), set(prog_bar)
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    @staticmethod
    def is_logging_step(module: L.LightningModule, batch_idx: int) -> bool:
        """Whether this training step is one the logger writes (every log_every_n_steps), or the
        epoch's last."""
        trainer = module.trainer
        every = trainer.log_every_n_steps
        return every > 0 and ((module.global_step + 1) % every == 0 or batch_idx + 1 == trainer.num_training_batches)

    def add(self, module: L.LightningModule, batch_idx: int, values: Mapping[str, torch.Tensor | float],
            step_only: Mapping[str, float] | None = None) -> None:
        """Fold one step's `values` into the epoch means; on a logging step also log those named in
        `per_step`, and the `step_only` values (which get no epoch mean), as they are."""
        for name, value in values.items():
            value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
            if name in self.sums:
                self.sums[name] += value
                self.counts[name] += 1
            else:
                self.sums[name] = value.float().clone()
                self.counts[name] = 1
        if not self.is_logging_step(module, batch_idx):
            return
        for name in self.per_step & values.keys():
            module.log(f"{name}_step", values[name], on_step=True, on_epoch=False, prog_bar=name in self.prog_bar)
        for name, value in (step_only or {}).items():
            module.log(name, value, on_step=True, on_epoch=False)

    def log_epoch(self, module: L.LightningModule) -> None:
        """Log each name's mean over this epoch's steps and start the next epoch afresh."""
        for name, total in self.sums.items():
            module.log(name, total / self.counts[name], on_step=False, on_epoch=True, sync_dist=True, prog_bar=name in self.prog_bar)
        self.sums.clear()
        self.counts.clear()
