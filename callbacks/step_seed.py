"""Every training step's randomness a function of (seed, epoch, batch, rank), so a run resumed
from any checkpoint, at an epoch boundary or in the middle of an epoch, continues exactly as the
uninterrupted run would have.

`seed_everything` seeds once at the start; a resumed run starts again from that seed, and its
augmentation and dropout would then draw other numbers than the uninterrupted run drew for the
same step. Lightning does not save the global generators in a checkpoint (and under DDP only rank
0's would be saved), so instead of restoring them this reseeds torch, numpy and `random` before
each training batch. The data loaders must not draw from the global
generators themselves (datamodules/loaders.py gives each loader its own generator, an
epoch-seeded order and a position that is saved in checkpoints).
"""

import random

import lightning as L
import numpy as np
import torch

def step_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A well-mixed 32-bit seed for one (seed, epoch, batch, rank)."""
    entropy = [int(seed) % 2**32, int(epoch), int(batch), int(rank)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def reseed(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class StepSeed(L.Callback):
    """Reseeds at the start of each training epoch and after each training batch, for the next one.

    Lightning transfers and augments a batch (`on_after_batch_transfer`) before it calls
    `on_train_batch_start`, so the seed of batch k+1 is set at the end of batch k; the checkpoint
    carries that position, and a run resumed in the middle of an epoch reseeds with it when
    training starts."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.next_batch: tuple[int, int] | None = None  # (epoch, batch) the next draw belongs to

    def _reseed(self, trainer: L.Trainer, epoch: int, batch: int) -> None:
        self.next_batch = (epoch, batch)
        reseed(step_seed(self.seed, epoch, batch, trainer.global_rank))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.next_batch is not None:  # restored from a checkpoint
            self._reseed(trainer, *self.next_batch)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer, trainer.current_epoch, 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        self._reseed(trainer, trainer.current_epoch, batch_idx + 1)

    def state_dict(self) -> dict:
        return {"next_batch": list(self.next_batch) if self.next_batch is not None else None}

    def load_state_dict(self, state_dict: dict) -> None:
        position = state_dict.get("next_batch")
        self.next_batch = tuple(position) if position is not None else None
