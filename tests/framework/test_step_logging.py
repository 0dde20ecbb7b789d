"""EpochMeans: the epoch mean of a training scalar and its values at the logger's steps, as the
logger records them in a real Lightning fit."""

import csv

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.step_logging import EpochMeans

BATCHES = 5


class KnownLosses(L.LightningModule):
    """Step i's loss is exactly i (plus a zero-valued term that gives it a gradient); `train/aux`
    is 10 * i, logged as an epoch mean only."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.means = EpochMeans()

    def training_step(self, batch, batch_idx):
        loss = self.weight.sum() * 0 + float(batch_idx)
        self.means.add(self, batch_idx, {"train/loss": loss, "train/aux": torch.tensor(10.0 * batch_idx)}, step_only={"train/alpha": 0.5})
        return loss

    def on_train_epoch_end(self):
        self.means.log_epoch(self)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path) -> L.Trainer:
    loader = DataLoader(TensorDataset(torch.zeros(BATCHES, 1)), batch_size=1)
    trainer = L.Trainer(max_epochs=2, log_every_n_steps=2, logger=L.pytorch.loggers.CSVLogger(tmp_path, name="", version=""),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(KnownLosses(), loader)
    return trainer


@pytest.fixture
def logged_rows(tmp_path):
    fit(tmp_path)
    with open(tmp_path / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_epoch_means_are_the_mean_over_the_epochs_steps(logged_rows):
    epochs = [row for row in logged_rows if row.get("train/loss")]
    assert [float(row["train/loss"]) for row in epochs] == [2.0, 2.0]  # mean of 0..4, each epoch afresh
    assert [float(row["train/aux"]) for row in epochs] == [20.0, 20.0]


def test_step_values_are_logged_at_the_loggers_steps_only(logged_rows):
    steps = [(int(row["step"]), float(row["train/loss_step"])) for row in logged_rows if row.get("train/loss_step")]
    # every 2nd optimizer step (global steps 1, 3, 5, 7, 9), with that step's own loss
    assert steps == [(1, 1.0), (3, 3.0), (5, 0.0), (7, 2.0), (9, 4.0)]
    assert all(row.get("train/alpha") for row in logged_rows if row.get("train/loss_step"))
    assert not any(row.get("train/aux_step") for row in logged_rows)  # not in per_step


def test_the_last_steps_values_reach_the_runs_final_metrics(tmp_path):
    # the epoch's last step (batch 4, global step 9) is not a logger step, but it is logged
    metrics = fit(tmp_path).callback_metrics
    assert float(metrics["train/loss_step"]) == 4.0 and float(metrics["train/loss"]) == 2.0
