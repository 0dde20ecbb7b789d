"""Wearable windows: windowing, participant splits without leakage, normalization, augmentation."""

import numpy as np
import pytest
import torch

from datamodules.har import augment as har_augment
from datamodules.har.datamodule import HarWindowsDataModule
from datamodules.har.data import (
    FINETUNE_MODES, Recordings, base_participants, channel_stats, cut_windows, load_watch, make_splits, time_blocks,
    window_starts, window_step,
)
from hylab.errors import UserError

SPLIT = {"finetune": 0.5, "val": 0.2, "test": 0.3}


@pytest.fixture(scope="module")
def watch() -> Recordings:
    return load_watch()


def test_watch_data_is_read_from_the_seglearn_wheel(watch):
    assert len(watch.signals) == 140 and watch.num_participants == 10
    assert all(s.shape[1] == 6 and s.dtype == np.float32 for s in watch.signals)
    assert watch.class_names == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    # every participant did every exercise, with each arm
    for p in range(10):
        assert sorted(watch.labels[watch.participants == p].tolist()) == sorted(list(range(7)) * 2)


def test_windows_fit_inside_their_range():
    assert window_step(100, 0.5) == 50 and window_step(100, 0.0) == 100 and window_step(10, 0.95) == 1
    assert window_starts(0, 250, 100, 50).tolist() == [0, 50, 100, 150]
    assert window_starts(30, 129, 100, 50).tolist() == []
    assert time_blocks(1000, SPLIT) == {"finetune": (0, 500), "val": (500, 700), "test": (700, 1000)}
    with pytest.raises(UserError, match=r"data.overlap=1.0"):
        window_step(100, 1.0)


def test_a_window_is_the_signal_it_was_cut_from(watch):
    windows = cut_windows(watch, [(3, 200, 500)], 100, 50)
    assert windows.start.tolist() == [200, 250, 300, 350, 400]
    np.testing.assert_array_equal(windows.x[2], watch.signals[3][300:400].T)
    assert (windows.y == watch.labels[3]).all() and (windows.recording == 3).all()


def covered_samples(windows, size) -> set[tuple[int, int]]:
    return {(int(r), int(s) + k) for r, s in zip(windows.recording, windows.start) for k in range(size)}


@pytest.mark.parametrize("mode", [None, *FINETUNE_MODES])
def test_splits_share_no_participant_and_no_target_sample(watch, mode):
    target, size = 4, 100
    splits = make_splits(watch, target, mode, size, 50, SPLIT, 2, 0)
    participants = {name: set(watch.participants[getattr(splits, name).recording].tolist()) for name in ("train", "val", "test")}
    assert participants["test"] == {target}
    train_ids, val_ids = splits.participants["base_train"], splits.participants["base_val"]
    assert len(val_ids) == 2 and not set(train_ids) & set(val_ids) and target not in train_ids + val_ids
    if mode is None:
        assert participants["train"] == set(train_ids) and participants["val"] == set(val_ids)
    else:
        trains_on = FINETUNE_MODES[mode].train_on
        expected = (set(train_ids) if "base" in trains_on else set()) | ({target} if "target" in trains_on else set())
        assert participants["train"] == expected and participants["val"] == {target}
    # Target windows of different splits never share a sample: no window straddles two blocks.
    seen = {name: covered_samples(getattr(splits, name), size) for name in ("train", "val", "test")}
    target_recordings = set(np.flatnonzero(watch.participants == target).tolist())
    seen = {name: {rs for rs in samples if rs[0] in target_recordings} for name, samples in seen.items()}
    assert not seen["train"] & seen["test"] and not seen["val"] & seen["test"] and not seen["train"] & seen["val"]
    blocks_of = {"test": "test"} | ({"val": "val", "train": "finetune"} if mode else {})
    for name, block in blocks_of.items():  # each target window lies inside its split's block
        windows = getattr(splits, name)
        for r, start in zip(windows.recording, windows.start):
            if r in target_recordings:
                begin, end = time_blocks(len(watch.signals[r]), SPLIT)[block]
                assert begin <= start and start + size <= end
    assert set(splits.test.y.tolist()) == set(range(7))  # every exercise is tested


def test_bad_fold_settings_are_user_errors(watch):
    with pytest.raises(UserError, match=r"data.target_subject=10 is not a participant; choose 0..9"):
        base_participants(10, 10, 1, 0)
    with pytest.raises(UserError, match=r"data.base_val_participants=9"):
        base_participants(10, 0, 9, 0)
    with pytest.raises(UserError, match=r"finetune.mode='fine_tune_all' is not allowed; choose one of: full_fine_tuning"):
        make_splits(watch, 0, "fine_tune_all", 100, 50, SPLIT, 1, 0)
    with pytest.raises(UserError, match=r"must sum to 1"):
        make_splits(watch, 0, None, 100, 50, {"finetune": 0.5, "val": 0.5, "test": 0.5}, 1, 0)
    with pytest.raises(UserError, match=r"the val split of participant 0 holds no window"):
        make_splits(watch, 0, "target_only", 400, 50, {"finetune": 0.8, "val": 0.05, "test": 0.15}, 1, 0)


@pytest.mark.parametrize("normalize_with", ["base", "train"])
def test_normalization_is_fit_on_training_participants_only(watch, normalize_with):
    data = HarWindowsDataModule(target_subject=2, finetune_mode="target_only", normalize_with=normalize_with)
    data.setup("fit")
    reference = data.splits.base_train if normalize_with == "base" else data.splits.train
    mean, std = channel_stats(reference)
    torch.testing.assert_close(data.mean, torch.from_numpy(mean))
    if normalize_with == "train":  # target_only trains on the target's fine-tune block alone
        assert set(watch.participants[data.splits.train.recording].tolist()) == {2}
    train_x = data.datasets["train"].images
    reference_x = (reference.x - mean[None, :, None]) / std[None, :, None]
    if normalize_with == "train":
        torch.testing.assert_close(train_x, torch.from_numpy(reference_x))
    else:  # held-out data is scaled with the training statistics, not its own
        assert not torch.allclose(data.datasets["test"].images.mean(dim=(0, 2)), torch.zeros(6), atol=1e-3)
    assert data.state_dict()["std"].shape == (6,)


def test_augmentations_follow_their_definitions():
    torch.manual_seed(0)
    x = torch.randn(8, 6, 100)
    assert har_augment.augment(x) is x  # all off
    noise = har_augment.jitter(x, 0.1) - x
    assert 0.08 < noise.std() < 0.12 and noise.mean().abs() < 0.02
    scaled = har_augment.scaling(x, 0.2)
    ratio = scaled / x
    assert torch.allclose(ratio, ratio[:, :, :1].expand_as(ratio), atol=1e-4)  # one factor per window and channel
    positions = har_augment.warped_positions(8, 100, 0.3, 4)
    assert (positions[:, 0] == 0).all() and torch.allclose(positions[:, -1], torch.full((8,), 99.0))
    assert (positions.diff(dim=1) > 0).all()
    ramp = torch.arange(100.0).expand(8, 6, 100)
    warped = har_augment.time_warp(ramp, 0.3)
    assert torch.allclose(warped[:, :, 0], ramp[:, :, 0]) and torch.allclose(warped[:, :, -1], ramp[:, :, -1], atol=1e-4)
    assert torch.allclose(warped[:, 0], warped[:, 5])  # the same time axis for every channel
    assert not torch.allclose(warped, ramp)


def test_unknown_augmentation_and_normalization_are_user_errors():
    with pytest.raises(UserError, match=r"data.augment.flip is not a setting of data.augment; allowed: jitter, scaling, time_warp"):
        HarWindowsDataModule(augment={"flip": 0.5})
    with pytest.raises(UserError, match=r"data.normalize_with='target'"):
        HarWindowsDataModule(normalize_with="target")
