"""Image classification data: deterministic train/val/test splits held as uint8 tensors in memory,
normalization and augmentation applied per batch on the device."""

from collections.abc import Mapping
from dataclasses import asdict

import numpy as np
import torch

from datamodules.arrays import ArrayDataset
from datamodules.image import augment
from datamodules.image.settings import ImageDataSettings
from datamodules.image.sources import ImageArrays, check_available, load_source
from datamodules.loaders import SplitDataModule
from hylab.errors import UserError
from hylab.settings import parse_settings


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): round(fraction * n_k) of each class k held out, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out.append(members[: int(round(fraction * len(members)))])
    held = np.sort(np.concatenate(held_out))
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """`labels` with round(fraction * n) of them, chosen at random, moved to a different class
    drawn uniformly from the other num_classes - 1 (symmetric label noise, e.g. for SAM)."""
    if not fraction:
        return labels
    rng = np.random.default_rng(seed)
    flipped = rng.choice(len(labels), size=round(fraction * len(labels)), replace=False)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy


class ImageClassificationDataModule(SplitDataModule):
    settings_schema = ImageDataSettings

    def __init__(
        self,
        source: str = "digits",
        data_dir: str = "data",
        download: bool = False,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 8,
        test_fraction: float | None = 0.2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        train_subset: int | None = None,
        label_noise: float = 0.0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        augment: Mapping | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        given = {k: v for k, v in self.hparams.items() if v is not None or k in ("test_fraction",)}
        self.settings = parse_settings(self.settings_schema, given, "data")
        check_available(source, data_dir, download)
        self.augment_cfg = asdict(self.settings.augment)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.class_names: list[str] = []
        self.mean = self.std = None

    def prepare_data(self) -> None:
        if self.hparams.download:
            load_source(self.hparams.source, self.hparams.data_dir, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        arrays = load_source(hp.source, hp.data_dir, download=False)
        self._check_shape(arrays)
        train_x, train_y, test_x, test_y = self._splits(arrays)
        keep, val = stratified_split(train_y, hp.val_fraction, hp.split_seed + 1)
        if hp.train_subset:
            keep = np.sort(np.random.default_rng(hp.split_seed + 2).permutation(keep)[: hp.train_subset])
        self.class_names = arrays.class_names
        scaled = train_x[keep].astype(np.float32) / 255.0
        self.mean = torch.tensor(scaled.mean(axis=(0, 1, 2)), dtype=torch.float32)
        self.std = torch.tensor(scaled.std(axis=(0, 1, 2)), dtype=torch.float32).clamp_min(1e-3)
        train_labels = noisy_labels(train_y[keep], hp.label_noise, hp.num_classes, hp.split_seed + 3)
        self.datasets = {
            "train": self._dataset(train_x[keep], train_labels),
            "val": self._dataset(train_x[val], train_y[val]),
            "test": self._dataset(test_x, test_y),
        }

    def _splits(self, arrays: ImageArrays):
        if arrays.test_images is not None:
            return arrays.train_images, arrays.train_labels, arrays.test_images, arrays.test_labels
        if not self.hparams.test_fraction:
            raise UserError(f"data={self.hparams.source} has no official test split: set data.test_fraction (e.g. 0.2)")
        train, test = stratified_split(arrays.train_labels, self.hparams.test_fraction, self.hparams.split_seed)
        images, labels = arrays.train_images, arrays.train_labels
        return images[train], labels[train], images[test], labels[test]

    def _check_shape(self, arrays: ImageArrays) -> None:
        _, height, width, chans = arrays.train_images.shape
        hp = self.hparams
        if (height, width, chans) != (hp.image_size, hp.image_size, hp.in_chans):
            raise UserError(
                f"data={hp.source} holds {height}x{width}x{chans} images but the config says "
                f"image_size={hp.image_size}, in_chans={hp.in_chans}: fix data.image_size / data.in_chans"
            )
        classes = int(arrays.train_labels.max()) + 1
        if classes > hp.num_classes:
            raise UserError(f"data={hp.source} has {classes} classes but data.num_classes={hp.num_classes}")

    @staticmethod
    def _dataset(images: np.ndarray, labels: np.ndarray) -> ArrayDataset:
        return ArrayDataset(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), torch.from_numpy(labels))

    def transform_batch(self, images: torch.Tensor, labels: torch.Tensor, train: bool):
        """uint8 images -> normalized float; crop/flip/cutout only when training."""
        images = images.float().div_(255.0)
        if train:
            images = augment.random_crop(images, self.augment_cfg["crop_padding"])
            if self.augment_cfg["hflip"]:
                images = augment.random_hflip(images)
        mean = self.mean.to(images.device)[None, :, None, None]
        std = self.std.to(images.device)[None, :, None, None]
        images = (images - mean) / std
        if train:
            images = augment.cutout(images, self.augment_cfg["cutout_size"])
        return images, labels

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        return self.transform_batch(*batch, train=training)
