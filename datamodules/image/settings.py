"""Settings of the image DataModules (torch-free; see hylab.settings)."""

from dataclasses import dataclass, field
from typing import Literal

from hylab.settings import between, non_negative

Source = Literal["digits", "mnist5k", "fashion_mnist", "mnist", "cifar10"]


@dataclass
class AugmentSettings:
    """Training-batch augmentation: random crop after zero padding, horizontal flip, cutout (0 = off)."""

    crop_padding: int = field(default=0, metadata=non_negative())
    hflip: bool = False
    cutout_size: int = field(default=0, metadata=non_negative())


@dataclass
class MixingSettings:
    """MixUp / CutMix (datamodules/image/mixing.py); both alphas 0 switch mixing off."""

    mixup_alpha: float = field(default=0.0, metadata=non_negative())
    cutmix_alpha: float = field(default=0.0, metadata=non_negative())
    prob: float = field(default=1.0, metadata=between(0, 1))
    switch_prob: float = field(default=0.5, metadata=between(0, 1))
    mode: Literal["batch", "pair", "elem"] = "batch"


@dataclass
class ImageDataSettings:
    source: Source = "digits"
    data_dir: str = "data"
    download: bool = False
    num_classes: int = field(default=10, metadata=between(2, None))
    in_chans: int = field(default=1, metadata=between(1, None))
    image_size: int = field(default=8, metadata=between(1, None))
    test_fraction: float | None = field(default=0.2, metadata=between(0, 1, high_open=True))
    val_fraction: float = field(default=0.1, metadata=between(0, 1, high_open=True))
    split_seed: int = 0
    train_subset: int | None = field(default=None, metadata=between(1, None))
    # the fraction of training labels replaced by another class, drawn uniformly (val and test keep theirs)
    label_noise: float = field(default=0.0, metadata=between(0, 1, high_open=True))
    batch_size: int = field(default=64, metadata=between(1, None))
    eval_batch_size: int | None = field(default=None, metadata=between(1, None))
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    num_workers: int = field(default=0, metadata=non_negative())
    pin_memory: bool = False


@dataclass
class MixingImageDataSettings(ImageDataSettings):
    mixing: MixingSettings = field(default_factory=MixingSettings)


SCHEMAS = {"ImageClassificationDataModule": ImageDataSettings, "MixingImageDataModule": MixingImageDataSettings}
