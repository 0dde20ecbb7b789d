"""Skip optimizer steps whose gradients are NaN/inf, and stop the run when they keep coming."""

import lightning as L
import torch

from hylab.errors import UserError


class NonFiniteGradientsError(UserError):
    """Too many optimizer steps in a row had NaN/inf gradients."""


class NonFiniteGuard(L.Callback):
    """Before each optimizer step, check that the gradients are finite. If not, drop them (the
    optimizer then skips every parameter, weight decay and momentum included), count the step
    as skipped, and after `max_consecutive` skipped steps in a row stop with a clear error.

    Under DDP the gradients are already all-reduced here, so every rank skips the same steps.
    The check is one total norm over all gradients per step (torch.nn.utils.get_total_norm).
    """

    def __init__(self, max_consecutive: int = 25):
        self.max_consecutive = max_consecutive
        self.skipped_total = 0
        self.skipped_in_a_row = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if bool(torch.isfinite(norm)):
            self.skipped_in_a_row = 0
            return
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        self.skipped_total += 1
        self.skipped_in_a_row += 1
        pl_module.log("train/nonfinite_steps", float(self.skipped_total), on_step=True, on_epoch=False)
        if self.skipped_in_a_row >= self.max_consecutive:
            raise NonFiniteGradientsError(
                f"{self.skipped_in_a_row} optimizer steps in a row had NaN/inf gradients (last at global step "
                f"{trainer.global_step}, {self.skipped_total} skipped in all). Lower model.optimizer.lr, set "
                "trainer.gradient_clip_val (e.g. 1.0), or use trainer.precision=32; the last good checkpoint "
                "is in the run's checkpoints/ folder"
            )

    def state_dict(self) -> dict:
        return {"skipped_total": self.skipped_total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_total = state_dict.get("skipped_total", 0)
