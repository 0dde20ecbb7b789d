"""Skip optimizer steps whose loss or gradients are NaN/inf, and stop the run when they keep coming."""

import lightning as L
import torch

from hylab.errors import UserError


class NonFiniteGradientsError(UserError):
    """Too many optimizer steps in a row had a NaN/inf loss or NaN/inf gradients."""


class NonFiniteGuard(L.Callback):
    """Before each optimizer step, check that the step is finite. If not, drop its gradients (the
    optimizer then skips every parameter, weight decay and momentum included), count the step as
    skipped, and after `max_consecutive` skipped steps in a row stop with a clear error.

    Two checks, one cheap and one not:

    - every step, the loss of each backward pass since the last optimizer step (one scalar per
      micro-batch, folded into a flag on the loss's device and read once per optimizer step);
    - every `grad_check_every` optimizer steps, the total norm of all gradients
      (torch.nn.utils.get_total_norm: a norm per parameter, then one of those), which also
      catches a finite loss whose gradients are not.

    A step with a finite loss but non-finite gradients between two gradient checks is applied:
    it writes NaN into the weights it touches, every later loss is NaN, and the run stops. So a
    run whose gradients turn NaN stops within `grad_check_every + max_consecutive` optimizer
    steps; `grad_check_every=1` checks every step (skip every such step, at the full cost).

    Under DDP (more than one process) the guard checks the gradients every step and only them:
    they are all-reduced here, so every rank skips the same steps, while each rank's loss is its
    own (a skip decided from it on one rank alone would let the ranks' weights drift apart).
    """

    def __init__(self, max_consecutive: int = 25, grad_check_every: int = 16):
        if grad_check_every < 1:
            raise UserError(f"callbacks.non_finite_guard.grad_check_every={grad_check_every}: give 1 or more")
        self.max_consecutive = max_consecutive
        self.grad_check_every = grad_check_every
        self.skipped_total = 0
        self.skipped_in_a_row = 0
        self._loss_finite: torch.Tensor | None = None  # all losses since the last optimizer step finite
        self._steps_seen = 0

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        finite = torch.isfinite(loss.detach()).all()
        self._loss_finite = finite if self._loss_finite is None else self._loss_finite & finite

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        loss_finite, self._loss_finite = self._loss_finite, None
        self._steps_seen += 1
        if trainer.world_size > 1:
            finite = self._gradients_finite(optimizer, every=1)
        else:
            finite = (loss_finite is None or bool(loss_finite)) and self._gradients_finite(optimizer, self.grad_check_every)
        if finite:
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

    def _gradients_finite(self, optimizer, every: int) -> bool:
        """True on the steps between gradient checks; on a check step, whether the total norm is finite."""
        if (self._steps_seen - 1) % every:
            return True
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))

    def state_dict(self) -> dict:
        return {"skipped_total": self.skipped_total}

    def load_state_dict(self, state_dict: dict) -> None:
        self.skipped_total = state_dict.get("skipped_total", 0)
