import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.image.sources import DEBIAN_FASHION_MNIST, load_source, read_idx
from datamodules.image.datamodule import ImageClassificationDataModule, noisy_labels, stratified_split
from hylab.errors import UserError


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def write_mnist_layout(data_dir: Path, n_train: int = 64, n_test: int = 32) -> None:
    """Small files in torchvision's MNIST layout (the real format; the content is random)."""
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (n_train, 28, 28)))
    write_idx(raw / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (n_test, 28, 28)))
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def write_cifar_layout(data_dir: Path, per_batch: int = 20) -> None:
    """Small files in the CIFAR-10 python layout (the real pickle format; random content)."""
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(per_batch)]}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)


def test_stratified_split_is_deterministic_disjoint_and_balanced():
    labels = np.repeat(np.arange(5), 40)
    kept, held = stratified_split(labels, 0.25, seed=3)
    kept2, held2 = stratified_split(labels, 0.25, seed=3)
    assert np.array_equal(held, held2) and np.array_equal(kept, kept2)
    assert not set(kept) & set(held) and len(kept) + len(held) == 200
    assert np.bincount(labels[held]).tolist() == [10] * 5


def test_digits_module_splits_and_normalizes():
    dm = ImageClassificationDataModule(source="digits", test_fraction=0.2, val_fraction=0.1, split_seed=0)
    dm.setup()
    sizes = len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])
    assert sum(sizes) == 1797 and sizes[2] == pytest.approx(360, abs=5)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8) and y.dtype == torch.int64
    images, _ = dm.transform_batch(dm.datasets["train"].images, dm.datasets["train"].labels, train=False)
    assert images.mean().abs() < 1e-4 and (images.std() - 1).abs() < 1e-2
    other = ImageClassificationDataModule(source="digits", split_seed=0)
    other.setup()
    assert torch.equal(other.datasets["test"].images, dm.datasets["test"].images)


def test_noisy_labels_move_exactly_the_fraction_to_other_classes():
    labels = np.arange(1000) % 10
    noisy = noisy_labels(labels, 0.3, 10, seed=0)
    changed = noisy != labels
    assert changed.sum() == 300 and noisy.min() >= 0 and noisy.max() <= 9  # every chosen label moves
    assert len(np.unique(noisy[changed] - labels[changed] + 10 * (noisy[changed] < labels[changed]))) == 9  # all 9 shifts occur
    assert np.array_equal(noisy_labels(labels, 0.3, 10, seed=0), noisy) and noisy_labels(labels, 0.0, 10, 0) is labels


def test_label_noise_touches_the_training_split_only():
    clean = ImageClassificationDataModule(source="digits", split_seed=0)
    noisy = ImageClassificationDataModule(source="digits", split_seed=0, label_noise=0.25)
    clean.setup()
    noisy.setup()
    flipped = (clean.datasets["train"].labels != noisy.datasets["train"].labels).float().mean().item()
    assert flipped == pytest.approx(0.25, abs=1 / len(clean.datasets["train"]))
    for split in ("val", "test"):
        assert torch.equal(clean.datasets[split].labels, noisy.datasets[split].labels)
    assert torch.equal(clean.datasets["train"].images, noisy.datasets["train"].images)


def test_mnist5k_is_the_real_subset():
    arrays = load_source("mnist5k")
    assert arrays.train_images.shape == (5000, 28, 28, 1) and set(arrays.train_labels) == set(range(10))


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_full_set(tmp_path):
    arrays = load_source("fashion_mnist", tmp_path)
    assert arrays.train_images.shape == (60000, 28, 28, 1) and arrays.test_images.shape == (10000, 28, 28, 1)
    assert np.bincount(arrays.test_labels).tolist() == [1000] * 10


def test_idx_and_cifar_readers_on_standard_layouts(tmp_path):
    write_mnist_layout(tmp_path)
    write_cifar_layout(tmp_path)
    mnist = load_source("mnist", tmp_path)
    assert mnist.train_images.shape == (64, 28, 28, 1) and mnist.test_labels.shape == (32,)
    cifar = load_source("cifar10", tmp_path)
    assert cifar.train_images.shape == (100, 32, 32, 3) and cifar.test_images.shape == (20, 32, 32, 3)
    # channel order: the first 1024 bytes of a row are the red plane
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        row = pickle.load(handle, encoding="bytes")[b"data"][0]
    assert np.array_equal(cifar.test_images[0, :, :, 0].ravel(), row[:1024])


def test_missing_and_corrupt_files_name_the_problem(tmp_path):
    with pytest.raises(UserError, match=r"MNIST/raw.*data.download=true"):
        ImageClassificationDataModule(source="mnist", data_dir=str(tmp_path), image_size=28)
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        ImageClassificationDataModule(source="cifar10", data_dir=str(tmp_path), in_chans=3, image_size=32)
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(bytes([0, 0, 8, 3]) + (100).to_bytes(4, "big") * 3 + b"\x00" * 10)
    with pytest.raises(UserError, match="truncated"):
        read_idx(bad)
    with pytest.raises(UserError, match="data.source='svhn' is not allowed; expected one of 'digits'"):
        ImageClassificationDataModule(source="svhn")


def test_shape_mismatch_is_reported():
    dm = ImageClassificationDataModule(source="digits", image_size=28)
    with pytest.raises(UserError, match="image_size"):
        dm.setup()
