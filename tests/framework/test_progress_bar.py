"""The default progress bar moves at most every min_interval seconds, and ends every loop at its total."""

import time

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from callbacks.progress_bar import ProgressBar
from tests.helpers import run_in_process


class SlowRegression(L.LightningModule):
    def __init__(self, seconds: float):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.seconds = seconds

    def training_step(self, batch, batch_idx):
        time.sleep(self.seconds)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class BarPositions(L.Callback):
    """What the bar shows after each training batch (it runs after the bar's own hook)."""

    def __init__(self, bar: ProgressBar):
        self.bar, self.positions, self.val_ends = bar, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.positions.append(self.bar.progress.tasks[self.bar.train_progress_bar_id].completed)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_ends.append(self.bar.progress.tasks[self.bar.val_progress_bar_id].completed)


def _fit(bar: ProgressBar, seconds: float) -> BarPositions:
    x = torch.randn(120, 4)
    data = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)  # 30 batches
    positions = BarPositions(bar)
    trainer = L.Trainer(max_epochs=1, callbacks=[bar, positions], logger=False, enable_checkpointing=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=7)
    trainer.fit(SlowRegression(seconds), data, data)
    return positions


def test_the_bar_moves_during_an_epoch_and_ends_at_its_total():
    seen = _fit(ProgressBar(min_interval=0.1), seconds=0.01)  # 30 steps of 10 ms or more: an update every ~10
    assert seen.positions[-1] == 30 and seen.val_ends == [7]
    assert seen.positions == sorted(seen.positions)
    moves = len(set(seen.positions))
    assert 3 <= moves <= 15  # it moved during the epoch, and not at every batch


def test_min_interval_zero_updates_at_every_batch():
    seen = _fit(ProgressBar(min_interval=0.0), seconds=0.0)
    assert seen.positions == list(range(1, 31))


@pytest.mark.slow
def test_a_run_with_the_default_callbacks_shows_the_bar(tmp_path, capsys):
    _, record = run_in_process(["debug=limit", "trainer.max_epochs=1", "test_after_fit=false"], tmp_path / "run")
    assert record["status"] == "completed"
    assert "Epoch 0/0" in capsys.readouterr().out
