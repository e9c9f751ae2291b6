"""Datasets: the bundled offline `digits`, the classic downloads, and user `.npz` files.

Every loader returns the same `Dataset`: float32 images in [0, 1] with a channel axis,
integer labels, and a validation split carved from the training data with a fixed
seed, so every trial and every study on a dataset sees the same split. Objectives use
validation accuracy only; the test set is reported, never optimised.

Downloads (`mnist`, `fashion_mnist`, `cifar10`) go to `$KERAS_HOME/datasets`
(default `~/.keras/datasets`) and are read from there afterwards, so a machine without
internet works once the files are in place.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sweep.config import DataConfig
from sweep.errors import UsageError

SPLIT_SEED = 0  # fixed forever: studies stay comparable on the same validation data
KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.x_train) // batch_size)


@functools.lru_cache(maxsize=4)
def load_dataset(config: DataConfig) -> Dataset:
    """Load and split the dataset a study file names; cached, so a worker loads it once.

    >>> data = load_dataset(DataConfig())  # digits: 8x8 grey images, 10 classes
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    """
    x_train, y_train, x_test, y_test = _LOADERS[config.dataset](config)
    x_train, x_test = _as_images(x_train), _as_images(x_test)
    y_train, y_test = _as_labels(y_train, "y_train"), _as_labels(y_test, "y_test")
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise UsageError(
            f"data: x and y differ in length (train {len(x_train)} vs {len(y_train)}, "
            f"test {len(x_test)} vs {len(y_test)})"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x_train))
    n_val = round(len(x_train) * config.validation_split)
    if n_val < 1 or n_val >= len(x_train):
        raise UsageError(
            f"data.validation_split: {config.validation_split} of {len(x_train)} training "
            f"examples leaves no validation or no training data; choose a value between them"
        )
    val, train = order[:n_val], order[n_val:]
    return Dataset(
        name=config.dataset,
        x_train=x_train[train],
        y_train=y_train[train],
        x_val=x_train[val],
        y_val=y_train[val],
        x_test=x_test,
        y_test=y_test,
        num_classes=int(max(y_train.max(), y_test.max())) + 1,
    )


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _digits(config: DataConfig) -> Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images / 16.0  # pixel values are 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=SPLIT_SEED
    )
    return x_train, y_train, x_test, y_test


def _npz(config: DataConfig) -> Arrays:
    assert config.path is not None  # guaranteed by DataConfig
    try:
        with np.load(config.path, allow_pickle=False) as archive:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in archive]
            if missing:
                raise UsageError(
                    f"data.path: {config.path} has no array {missing[0]!r}; an npz dataset needs "
                    f"x_train, y_train, x_test and y_test"
                )
            return archive["x_train"], archive["y_train"], archive["x_test"], archive["y_test"]
    except (OSError, ValueError) as error:
        raise UsageError(f"data.path: cannot read {config.path} as .npz: {error}") from None


def _mnist(config: DataConfig) -> Arrays:
    with np.load(_download("mnist.npz"), allow_pickle=False) as archive:
        return archive["x_train"], archive["y_train"], archive["x_test"], archive["y_test"]


def _fashion_mnist(config: DataConfig) -> Arrays:
    def idx(name: str, header: int) -> np.ndarray:
        with gzip.open(_download(name, subdir="fashion-mnist"), "rb") as file:
            return np.frombuffer(file.read(), np.uint8, offset=header)

    y_train = idx("train-labels-idx1-ubyte.gz", 8)
    x_train = idx("train-images-idx3-ubyte.gz", 16).reshape(len(y_train), 28, 28)
    y_test = idx("t10k-labels-idx1-ubyte.gz", 8)
    x_test = idx("t10k-images-idx3-ubyte.gz", 16).reshape(len(y_test), 28, 28)
    return x_train, y_train, x_test, y_test


def _cifar10(config: DataConfig) -> Arrays:
    archive = _download(
        "cifar-10-python.tar.gz", origin="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )

    def batches(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        with tarfile.open(archive, "r:gz") as tar:
            parts = [
                pickle.load(tar.extractfile(f"cifar-10-batches-py/{n}"), encoding="bytes")  # type: ignore[arg-type]
                for n in names
            ]
        x = np.concatenate([p[b"data"] for p in parts]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.concatenate([p[b"labels"] for p in parts])
        return x, y

    x_train, y_train = batches([f"data_batch_{i}" for i in range(1, 6)])
    x_test, y_test = batches(["test_batch"])
    return x_train, y_train, x_test, y_test


_LOADERS: dict[str, Callable[[DataConfig], Arrays]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "npz": _npz,
}


def _download(name: str, subdir: str = "", origin: str | None = None) -> Path:
    """A cached dataset file, downloaded on first use (no hash check: a file you place
    in the cache yourself is used as is)."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / subdir
    path = cache / name
    if path.is_file():
        return path
    url = origin or f"{KERAS_DATASETS}{subdir + '/' if subdir else ''}{name}"
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".part")
    try:
        import urllib.request

        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                out.write(chunk)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise UsageError(
            f"data.dataset: cannot download {url} ({error}); connect to the internet, place the "
            f"file at {path}, or use dataset: digits (bundled) or npz"
        ) from None
    partial.rename(path)  # atomic: an interrupted download never looks complete
    return path


def _as_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    return x[..., np.newaxis] if x.ndim == 3 else x  # greyscale images get a channel axis


def _as_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # CIFAR-style column of labels
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UsageError(
            f"data: {name} must be a 1-D array of non-negative integer class labels, "
            f"got shape {y.shape} and dtype {y.dtype}"
        )
    return y.astype(np.int64)
