"""Settings of the wearable-window DataModule (torch-free; see hylab.settings), and the
fine-tuning modes that decide what a run trains on."""

from dataclasses import dataclass, field
from typing import Literal

from hylab.settings import between, non_negative


@dataclass(frozen=True)
class FineTuneMode:
    train_on: tuple[str, ...]  # whose windows train the run: "base" participants and/or the "target"
    from_base: bool  # starts from a base model trained on the base participants


# finetune.mode -> what the run trains on and whether it starts from a base model.
FINETUNE_MODES = {
    "full_fine_tuning": FineTuneMode(("base", "target"), from_base=True),
    "target_only_fine_tuning": FineTuneMode(("target",), from_base=True),
    "target_only": FineTuneMode(("target",), from_base=False),
}
FineTuneModeName = Literal[tuple(FINETUNE_MODES)]


@dataclass
class TargetSplitSettings:
    """Fractions of each target recording, cut in time into contiguous blocks (they sum to 1)."""

    finetune: float = field(metadata=between(0, 1, low_open=True))
    val: float = field(metadata=between(0, 1, low_open=True))
    test: float = field(metadata=between(0, 1, low_open=True))

    def __post_init__(self):
        if abs(self.finetune + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"target_split fractions {self.finetune}, {self.val}, {self.test} must sum to 1")


@dataclass
class HarAugmentSettings:
    """Sigmas of the training-batch augmentations, in units of a channel's std; 0 = off."""

    jitter: float = field(default=0.0, metadata=non_negative())
    scaling: float = field(default=0.0, metadata=non_negative())
    time_warp: float = field(default=0.0, metadata=non_negative())


@dataclass
class HarWindowsSettings:
    target_subject: int = field(default=0, metadata=non_negative())
    finetune_mode: FineTuneModeName | None = None
    window_size: int = field(default=100, metadata=between(2, None))
    overlap: float = field(default=0.5, metadata=between(0, 1, high_open=True))
    target_split: TargetSplitSettings = field(default_factory=lambda: TargetSplitSettings(0.5, 0.2, 0.3))
    base_val_participants: int = field(default=1, metadata=between(1, None))
    split_seed: int = 0
    normalize_with: Literal["base", "train"] = "base"
    augment: HarAugmentSettings = field(default_factory=HarAugmentSettings)
    num_classes: int = field(default=7, metadata=between(2, None))
    in_channels: int = field(default=6, metadata=between(1, None))
    batch_size: int = field(default=64, metadata=between(1, None))
    eval_batch_size: int | None = field(default=None, metadata=between(1, None))
    num_workers: int = field(default=0, metadata=non_negative())
    pin_memory: bool = False


SCHEMAS = {"HarWindowsDataModule": HarWindowsSettings}
