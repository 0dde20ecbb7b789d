"""Wearable recordings as fixed-size windows, split by participant (numpy only, no torch).

The data: seglearn's "watch" set (Burns et al., "Shoulder physiotherapy exercise recognition:
machine learning the inertial signals from a smartwatch", Physiol. Meas. 2018), shipped in the
seglearn wheel: 140 recordings of 10 participants doing 7 shoulder exercises with the left and
the right arm, 6-channel IMU (accelerometer + gyroscope) at 50 Hz. One recording is one exercise,
so a window's label is its recording's.

Splits (leave-one-participant-out): one *target* participant is held out; the others are *base*
participants, a few of which validate the base model. The target's recordings are each cut in
time into three contiguous blocks, fine-tune | val | test, and windows are cut inside a block:
no window (and no sample) belongs to two splits, while every split holds every exercise and arm.
"""

import importlib.util
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from datamodules.har.settings import FINETUNE_MODES, FineTuneMode, TargetSplitSettings
from hylab.errors import UserError
from hylab.settings import parse_settings

TARGET_BLOCKS = ("finetune", "val", "test")


def check_finetune_mode(mode: str) -> FineTuneMode:
    if mode not in FINETUNE_MODES:
        raise UserError(f"finetune.mode={mode!r} is not allowed; choose one of: {', '.join(FINETUNE_MODES)}")
    return FINETUNE_MODES[mode]


@dataclass
class Recordings:
    signals: list[np.ndarray]  # one (T_r, C) float32 array per recording
    labels: np.ndarray  # (R,) int64 class per recording
    participants: np.ndarray  # (R,) int64, numbered 0..P-1
    class_names: list[str]
    channel_names: list[str]

    @property
    def num_participants(self) -> int:
        return int(self.participants.max()) + 1


@dataclass
class Windows:
    x: np.ndarray  # (N, C, size) float32
    y: np.ndarray  # (N,) int64
    recording: np.ndarray  # (N,) index of the recording each window was cut from
    start: np.ndarray  # (N,) its first sample in that recording

    def __len__(self) -> int:
        return len(self.y)


def watch_path() -> Path:
    spec = importlib.util.find_spec("seglearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data=har_watch reads watch_dataset.npy from the seglearn wheel, which is not installed: run `uv sync`")
    path = Path(spec.submodule_search_locations[0]) / "data" / "watch_dataset.npy"
    if not path.is_file():
        raise UserError(f"data=har_watch: {path} is missing from the seglearn install; run `uv sync --reinstall-package seglearn`")
    return path


def load_watch() -> Recordings:
    """The watch recordings; the file's participant ids (1..10) become 0..9 in sorted order."""
    raw = np.load(watch_path(), allow_pickle=True).item()
    ids = np.asarray(raw["subject"]).astype(np.int64)
    participants = np.searchsorted(np.unique(ids), ids)
    return Recordings(
        signals=[np.asarray(x, dtype=np.float32) for x in raw["X"]],
        labels=np.asarray(raw["y"], dtype=np.int64),
        participants=participants.astype(np.int64),
        class_names=list(raw["y_labels"]),
        channel_names=list(raw["X_labels"]),
    )


def window_step(size: int, overlap: float) -> int:
    """Samples between window starts: size * (1 - overlap), at least 1."""
    if size < 2:
        raise UserError(f"data.window_size={size} is too small; use at least 2 samples")
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"data.overlap={overlap} must be in [0, 1): the fraction of a window shared with the next")
    return max(1, int(round(size * (1.0 - overlap))))


def window_starts(begin: int, end: int, size: int, step: int) -> np.ndarray:
    """First samples of the windows [s, s + size) that fit inside [begin, end)."""
    return np.arange(begin, end - size + 1, step, dtype=np.int64)


def time_blocks(length: int, fractions: Mapping[str, float]) -> dict[str, tuple[int, int]]:
    """Contiguous [begin, end) sample ranges of a recording, in the order of TARGET_BLOCKS."""
    bounds = np.round(np.cumsum([0.0] + [fractions[name] for name in TARGET_BLOCKS]) * length).astype(int)
    return {name: (int(bounds[k]), int(bounds[k + 1])) for k, name in enumerate(TARGET_BLOCKS)}


def check_target_split(fractions: Mapping[str, float]) -> dict[str, float]:
    return asdict(parse_settings(TargetSplitSettings, fractions, "data.target_split"))


def cut_windows(recordings: Recordings, pieces: list[tuple[int, int, int]], size: int, step: int) -> Windows:
    """Windows from (recording, begin, end) pieces; a window never leaves its piece."""
    xs, ys, recs, starts = [], [], [], []
    for index, begin, end in pieces:
        signal = recordings.signals[index]
        for start in window_starts(begin, min(end, len(signal)), size, step):
            xs.append(signal[start : start + size].T)
            ys.append(recordings.labels[index])
            recs.append(index)
            starts.append(start)
    channels = recordings.signals[0].shape[1]
    return Windows(
        x=np.stack(xs).astype(np.float32) if xs else np.zeros((0, channels, size), np.float32),
        y=np.asarray(ys, dtype=np.int64),
        recording=np.asarray(recs, dtype=np.int64),
        start=np.asarray(starts, dtype=np.int64),
    )


def concat(parts: list[Windows]) -> Windows:
    return Windows(*(np.concatenate([getattr(p, name) for p in parts]) for name in ("x", "y", "recording", "start")))


def base_participants(num_participants: int, target: int, val_count: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) participants among the non-target ones; the val ones are drawn by `seed`."""
    if not 0 <= target < num_participants:
        raise UserError(f"data.target_subject={target} is not a participant; choose 0..{num_participants - 1}")
    others = [p for p in range(num_participants) if p != target]
    if not 1 <= val_count < len(others):
        raise UserError(f"data.base_val_participants={val_count}: choose 1..{len(others) - 1}")
    val = sorted(np.random.default_rng(seed).permutation(others)[:val_count].tolist())
    return [p for p in others if p not in val], val


@dataclass
class Splits:
    train: Windows
    val: Windows
    test: Windows
    base_train: Windows  # the base model's training windows (the reference for normalization)
    participants: dict[str, list[int]]


def make_splits(
    recordings: Recordings,
    target: int,
    finetune_mode: str | None,
    size: int,
    step: int,
    target_split: Mapping[str, float],
    base_val_count: int,
    seed: int,
) -> Splits:
    """Train/val/test windows of one run.

    finetune_mode None (a base run): train on the base participants, validate on the held-out
    base participants. A fine-tune mode: train on what the mode names (see FINETUNE_MODES) and
    validate on the target's val block. The test split is always the target's test block.
    """
    fractions = check_target_split(target_split)
    base_train_ids, base_val_ids = base_participants(recordings.num_participants, target, base_val_count, seed)

    def whole(participants: list[int]) -> Windows:
        pieces = [(r, 0, len(recordings.signals[r])) for r in np.flatnonzero(np.isin(recordings.participants, participants))]
        return cut_windows(recordings, pieces, size, step)

    def target_block(name: str) -> Windows:
        pieces = []
        for r in np.flatnonzero(recordings.participants == target):
            begin, end = time_blocks(len(recordings.signals[r]), fractions)[name]
            pieces.append((int(r), begin, end))
        return cut_windows(recordings, pieces, size, step)

    base_train = whole(base_train_ids)
    if finetune_mode is None:
        train, val = base_train, whole(base_val_ids)
    else:
        mode = check_finetune_mode(finetune_mode)
        parts = ([base_train] if "base" in mode.train_on else []) + ([target_block("finetune")] if "target" in mode.train_on else [])
        train, val = concat(parts), target_block("val")
    splits = Splits(train, val, target_block("test"), base_train,
                    {"base_train": base_train_ids, "base_val": base_val_ids, "target": [target]})
    for name in ("train", "val", "test"):
        if len(getattr(splits, name)) == 0:
            raise UserError(
                f"the {name} split of participant {target} holds no window of data.window_size={size}: "
                "use smaller windows or a larger data.target_split fraction"
            )
    return splits


def channel_stats(windows: Windows) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over every sample of the windows (std floored at 1e-6)."""
    mean = windows.x.mean(axis=(0, 2), dtype=np.float64)
    std = windows.x.std(axis=(0, 2), dtype=np.float64)
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)
