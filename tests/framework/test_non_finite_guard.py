import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.non_finite_guard import NonFiniteGuard, NonFiniteGradientsError


class Regression(L.LightningModule):
    """Linear regression whose loss is NaN on the steps listed in `nan_steps`."""

    def __init__(self, nan_steps):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.nan_steps = set(nan_steps)
        self.weights_before_step = {}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.weights_before_step[self.global_step] = self.layer.weight.detach().clone()
        return loss * float("nan") if self.global_step in self.nan_steps else loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1, weight_decay=0.1)


def _trainer(guard, steps):
    return L.Trainer(max_steps=steps, callbacks=[guard], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")


def _data():
    x = torch.randn(64, 4)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def test_isolated_nan_steps_are_skipped_without_touching_weights():
    torch.manual_seed(0)
    model, guard = Regression(nan_steps=[2, 3]), NonFiniteGuard(max_consecutive=5)
    _trainer(guard, 6).fit(model, _data())
    assert guard.skipped_total == 2 and guard.skipped_in_a_row == 0
    # Lightning's global_step counts optimizer.step calls, skipped ones too; the weights did not move on them
    assert torch.equal(model.weights_before_step[2], model.weights_before_step[3])
    assert torch.equal(model.weights_before_step[3], model.weights_before_step[4])
    assert not torch.equal(model.weights_before_step[4], model.weights_before_step[5])
    assert torch.isfinite(model.layer.weight).all()


def test_too_many_nan_steps_in_a_row_stop_with_a_clear_message():
    model, guard = Regression(nan_steps=range(100)), NonFiniteGuard(max_consecutive=3)
    with pytest.raises(NonFiniteGradientsError, match=r"3 optimizer steps in a row had NaN/inf gradients.*gradient_clip_val"):
        _trainer(guard, 10).fit(model, _data())
    assert torch.isfinite(model.layer.weight).all()


class NanGradients(Regression):
    """A finite loss whose gradients are NaN on the steps in `nan_grad_steps` (as a backward
    through sqrt(0) or an overflow gives them)."""

    def __init__(self, nan_grad_steps, nan_steps=()):
        super().__init__(nan_steps)
        self.nan_grad_steps = set(nan_grad_steps)

    def on_after_backward(self):
        if self.global_step in self.nan_grad_steps:
            for param in self.parameters():
                param.grad.fill_(float("nan"))


def test_nan_gradients_under_a_finite_loss_are_skipped_when_checked_every_step():
    torch.manual_seed(0)
    model, guard = NanGradients(nan_grad_steps=[1, 4]), NonFiniteGuard(max_consecutive=5, grad_check_every=1)
    _trainer(guard, 6).fit(model, _data())
    assert guard.skipped_total == 2
    assert torch.equal(model.weights_before_step[1], model.weights_before_step[2])
    assert torch.isfinite(model.layer.weight).all()


@pytest.mark.parametrize("every", [4, 16])
def test_gradients_that_turn_nan_stop_the_run_within_the_check_interval_plus_max_consecutive(every):
    """Checked on a cadence, a NaN gradient between checks reaches the weights; every later loss
    is then NaN, so the run still stops, within grad_check_every + max_consecutive steps."""
    model, guard = NanGradients(nan_grad_steps=range(3, 1000)), NonFiniteGuard(max_consecutive=3, grad_check_every=every)
    trainer = _trainer(guard, 100)
    with pytest.raises(NonFiniteGradientsError, match="3 optimizer steps in a row"):
        trainer.fit(model, DataLoader(_data().dataset, batch_size=1))
    assert trainer.global_step <= 3 + every + 3


def test_a_nan_loss_in_one_accumulated_micro_batch_skips_the_optimizer_step():
    torch.manual_seed(0)

    class NanMicroBatch(Regression):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if batch_idx == 4 else loss  # the first of step 2's two micro-batches

    model, guard = NanMicroBatch(nan_steps=[]), NonFiniteGuard(max_consecutive=5)
    trainer = L.Trainer(max_steps=4, callbacks=[guard], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", accumulate_grad_batches=2)
    trainer.fit(model, _data())
    assert guard.skipped_total == 1
    assert torch.isfinite(model.layer.weight).all()
