"""A test-only callback: every rank saves its final weights, so a test can compare ranks."""

from pathlib import Path

import lightning as L
import torch


class SaveRankWeights(L.Callback):
    def __init__(self, folder: str):
        self.folder = Path(folder)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.folder / f"weights_rank{trainer.global_rank}.pt")
