"""Windows of wearable recordings for one leave-one-participant-out fold (see har_data.py).

Windows are normalized per channel with statistics fit on training participants only, held as
float tensors in memory, and augmented per batch on the device while training.
"""

from collections.abc import Mapping

import lightning as L
import numpy as np
import torch

from datamodules.har_augment import augment
from datamodules.har_data import Splits, Windows, channel_stats, check_finetune_mode, load_watch, make_splits, window_step
from datamodules.images import ArrayDataset, InMemoryLoaders
from hylab.errors import UserError

AUGMENTATIONS = ("jitter", "scaling", "time_warp")
NORMALIZE_WITH = ("base", "train")


class HarWindowsDataModule(InMemoryLoaders, L.LightningDataModule):
    """target_subject: the held-out participant (0..9). finetune_mode: None for a base run, else
    a finetune.mode (what trains: base participants and/or the target's fine-tune block).
    normalize_with: "base" = statistics of the base training participants (the inputs a base
    model learned on, also when fine-tuning it), "train" = of this run's own training windows."""

    def __init__(
        self,
        target_subject: int = 0,
        finetune_mode: str | None = None,
        window_size: int = 100,
        overlap: float = 0.5,
        target_split: Mapping[str, float] | None = None,
        base_val_participants: int = 1,
        split_seed: int = 0,
        normalize_with: str = "base",
        augment: Mapping[str, float] | None = None,
        num_classes: int = 7,
        in_channels: int = 6,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["target_split", "augment"])
        if finetune_mode is not None:
            check_finetune_mode(finetune_mode)
        if normalize_with not in NORMALIZE_WITH:
            raise UserError(f"data.normalize_with={normalize_with!r} is not allowed; choose one of: {', '.join(NORMALIZE_WITH)}")
        self.step = window_step(window_size, overlap)
        self.target_split = dict(target_split or {"finetune": 0.5, "val": 0.2, "test": 0.3})
        self.augment_cfg = {name: float(value) for name, value in dict(augment or {}).items()}
        unknown = set(self.augment_cfg) - set(AUGMENTATIONS)
        if unknown:
            raise UserError(f"data.augment has unknown keys {sorted(unknown)}; allowed: {', '.join(AUGMENTATIONS)}")
        self.splits: Splits | None = None
        self.class_names: list[str] = []
        self.mean = self.std = None
        self.train_set = self.val_set = self.test_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        hp = self.hparams
        recordings = load_watch()
        self._check_shape(recordings.signals[0].shape[1], len(recordings.class_names))
        self.splits = make_splits(
            recordings, hp.target_subject, hp.finetune_mode, hp.window_size, self.step,
            self.target_split, hp.base_val_participants, hp.split_seed,
        )
        self.class_names = recordings.class_names
        reference = self.splits.base_train if hp.normalize_with == "base" else self.splits.train
        mean, std = channel_stats(reference)
        self.mean, self.std = torch.from_numpy(mean), torch.from_numpy(std)
        self.train_set, self.val_set, self.test_set = (self._dataset(w) for w in (self.splits.train, self.splits.val, self.splits.test))

    def _check_shape(self, channels: int, classes: int) -> None:
        hp = self.hparams
        if channels != hp.in_channels or classes != hp.num_classes:
            raise UserError(
                f"data=har_watch has {channels} channels and {classes} classes, but data.in_channels={hp.in_channels}, "
                f"data.num_classes={hp.num_classes}"
            )

    def _dataset(self, windows: Windows) -> ArrayDataset:
        x = (windows.x - self.mean.numpy()[None, :, None]) / self.std.numpy()[None, :, None]
        return ArrayDataset(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(windows.y))

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            cfg = self.augment_cfg
            x = augment(x, cfg.get("jitter", 0.0), cfg.get("scaling", 0.0), cfg.get("time_warp", 0.0))
        return x, y

    def state_dict(self) -> dict:
        """The normalization travels with every checkpoint (plain tensors: weights_only-safe)."""
        return {"mean": self.mean, "std": self.std} if self.mean is not None else {}
