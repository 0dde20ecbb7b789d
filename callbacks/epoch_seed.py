"""Every epoch's randomness a function of (seed, epoch), so a run resumed from an epoch-end
checkpoint continues exactly as the uninterrupted run would have.

`seed_everything` seeds once at the start; a resumed run starts again from that seed, and its
shuffling, augmentation and dropout then draw other numbers than the uninterrupted run drew for
the same epoch. Reseeding at the start of each training epoch removes that difference, provided
the data loaders do not draw from the global generator themselves (datamodules/loaders.py gives
each loader its own generator and an epoch-seeded shuffle).
"""

import random

import lightning as L
import numpy as np
import torch

SEED_STRIDE = 1_000_003  # keeps the epochs' seeds apart from small user seeds


class EpochSeed(L.Callback):
    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch_seed = (self.seed + SEED_STRIDE * (trainer.current_epoch + 1) + trainer.global_rank) % 2**32
        random.seed(epoch_seed)
        np.random.seed(epoch_seed)
        torch.manual_seed(epoch_seed)
