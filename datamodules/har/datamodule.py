"""Windows of wearable recordings for one leave-one-participant-out fold (see data.py).

Windows are normalized per channel with statistics fit on training participants only, held as
float tensors in memory, and augmented per batch on the device while training.
"""

from collections.abc import Mapping
from dataclasses import asdict

import numpy as np
import torch

from datamodules.arrays import ArrayDataset
from datamodules.har.augment import augment
from datamodules.har.data import Splits, Windows, channel_stats, check_finetune_mode, load_watch, make_splits, window_step
from datamodules.har.settings import HarWindowsSettings
from datamodules.loaders import SplitDataModule
from hylab.errors import UserError
from hylab.settings import parse_settings


class HarWindowsDataModule(SplitDataModule):
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
        self.save_hyperparameters(logger=False)
        if finetune_mode is not None:
            check_finetune_mode(finetune_mode)  # the error names finetune.mode, the key users set
        given = {k: v for k, v in self.hparams.items() if v is not None}
        self.settings = parse_settings(HarWindowsSettings, given, "data")
        self.step = window_step(window_size, overlap)
        self.target_split = asdict(self.settings.target_split)
        self.augment_cfg = asdict(self.settings.augment)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.splits: Splits | None = None
        self.class_names: list[str] = []
        self.mean = self.std = None

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
        self.datasets = {name: self._dataset(getattr(self.splits, name)) for name in ("train", "val", "test")}

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
            x = augment(x, cfg["jitter"], cfg["scaling"], cfg["time_warp"])
        return x, y

    def state_dict(self) -> dict:
        """The normalization travels with every checkpoint (plain tensors: weights_only-safe)."""
        return {"mean": self.mean, "std": self.std} if self.mean is not None else {}
