"""A resumed run writes into a folder of its own; the checkpoint ranking must still go on from
the best score before the interruption (callbacks/carry_over.py)."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from callbacks.carry_over import CarryOver

SCORES = [0.9, 0.5, 0.4]  # val/acc by epoch: every epoch after the first is worse


class Scripted(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", SCORES[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    return DataLoader(TensorDataset(torch.ones(4, 1)), batch_size=2)


def fit(folder: Path, epochs: int, ckpt_path: Path | None, carry_over: bool) -> ModelCheckpoint:
    best = ModelCheckpoint(dirpath=folder, filename="epoch_{epoch}", monitor="val/acc", mode="max", save_top_k=1)
    callbacks = [best, *([CarryOver()] if carry_over else [])]
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=folder)
    trainer.fit(Scripted(), loader(), loader(), ckpt_path=ckpt_path)
    return best


def test_the_best_score_survives_a_resume_into_another_folder(tmp_path):
    first = fit(tmp_path / "first", 1, None, carry_over=True)
    assert first.best_model_score == 0.9

    resumed = fit(tmp_path / "resumed", 3, Path(first.best_model_path), carry_over=True)
    assert float(resumed.best_model_score) == pytest.approx(0.9)  # the worse epochs after the resume did not take its place
    assert Path(resumed.best_model_path) == tmp_path / "resumed" / "epoch_epoch=0.ckpt"
    assert [p.name for p in (tmp_path / "resumed").glob("*.ckpt")] == ["epoch_epoch=0.ckpt"]  # top-1 stays one file
    assert torch.load(resumed.best_model_path, weights_only=True)["epoch"] == 0


def test_without_it_lightning_ranks_the_first_epoch_after_a_resume_best(tmp_path):
    # Why CarryOver exists: ModelCheckpoint reloads its best score only from its own folder.
    first = fit(tmp_path / "first", 1, None, carry_over=False)
    resumed = fit(tmp_path / "resumed", 3, Path(first.best_model_path), carry_over=False)
    assert float(resumed.best_model_score) == pytest.approx(0.5)
