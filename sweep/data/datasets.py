"""Datasets: the bundled offline `digits`, the classic downloads, and user `.npz` files,
held in memory; your own loader and image folders are streamed (`sweep.data.user_loaders`).

Every source gives the same `Dataset`: train, validation and test `Split`s with integer
labels. The in-memory datasets here are float32 images in [0, 1] with a channel axis. The
validation split is carved from the training data with a fixed seed, so every trial and
every study on a dataset sees the same split. Objectives use validation accuracy only;
the test set is reported, never optimised.

Downloads (`mnist`, `fashion_mnist`, `cifar10`) go to `$KERAS_HOME/datasets`
(default `~/.keras/datasets`) and are read from there afterwards, so a machine without
internet works once the files are in place. Files with a published checksum are checked
against it on every load, whoever put them there: the CIFAR-10 archive holds pickles, and
unpickling a crafted file runs its code.

A file that cannot be read, or arrays that cannot be a dataset, are the user's to fix:
they raise a one-line `UsageError`, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import pickle
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config import DataConfig
from sweep.data.splits import (
    SPLIT_SEED,
    Dataset,
    Split,
    as_images,
    as_labels,
    check_consistent,
    check_labels,
    split_indices,
)
from sweep.errors import SweepError, UsageError, brief

KERAS_DATASETS = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The SHA-256 that Keras' own loaders check (tf_keras/src/datasets/mnist.py, cifar10.py).
# Keras publishes none for the fashion-mnist files, which are raw bytes, never unpickled.
PUBLISHED_SHA256: dict[str, str] = {
    "mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    "cifar-10-python.tar.gz": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_FIX = "save it with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"
CACHED_FIX = "delete it to download it again"


@functools.lru_cache(maxsize=4)
def load_dataset(config: DataConfig) -> Dataset:
    """Load and split the dataset a study file names; cached, so a worker loads it once.

    >>> data = load_dataset(DataConfig())  # digits: 8x8 grey images, 10 classes
    >>> data.input_shape, data.num_classes
    ((8, 8, 1), 10)
    """
    if config.dataset in ("loader", "directory"):
        from sweep.data.user_loaders import load_user_dataset

        return load_user_dataset(config)
    x_train, y_train, x_test, y_test = _LOADERS[config.dataset](config)
    x_train, x_test = as_images(x_train, "x_train"), as_images(x_test, "x_test")
    y_train, y_test = as_labels(y_train, "y_train"), as_labels(y_test, "y_test")
    check_consistent(x_train, y_train, x_test, y_test)
    held_out, kept = split_indices(len(x_train), config.validation_split, "training")
    num_classes = check_labels(config, {"y_train": y_train, "y_test": y_test}, train="y_train")
    return Dataset(
        name=config.dataset,
        train=Split.arrays(x_train[kept], y_train[kept]),
        val=Split.arrays(x_train[held_out], y_train[held_out]),
        test=Split.arrays(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
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
    path = Path(config.path)
    with _reading("data.path", path, NPZ_FIX, as_what="as .npz"):
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # np.load reads .npy files too
            raise UsageError(
                f"data.path: {path} is a single .npy array, not an .npz archive; {NPZ_FIX}"
            )
        with archive:
            missing = [k for k in NPZ_KEYS if k not in archive]
            if missing:
                raise UsageError(
                    f"data.path: {path} has no array {missing[0]!r}; an npz dataset needs "
                    f"x_train, y_train, x_test and y_test"
                )
            x_train, y_train, x_test, y_test = (archive[k] for k in NPZ_KEYS)  # reads them now
            return x_train, y_train, x_test, y_test


def _mnist(config: DataConfig) -> Arrays:
    path = _download("mnist.npz", "MNIST archive")
    with _reading("data.dataset", path, CACHED_FIX), np.load(path, allow_pickle=False) as archive:
        x_train, y_train, x_test, y_test = (archive[k] for k in NPZ_KEYS)
        return x_train, y_train, x_test, y_test


def _fashion_mnist(config: DataConfig) -> Arrays:
    def idx(name: str, header: int, *shape: int) -> np.ndarray:
        path = _download(name, f"Fashion-MNIST file {name}", subdir="fashion-mnist")
        with _reading("data.dataset", path, CACHED_FIX), gzip.open(path, "rb") as file:
            return np.frombuffer(file.read(), np.uint8, offset=header).reshape(-1, *shape)

    x_train = idx("train-images-idx3-ubyte.gz", 16, 28, 28)
    y_train = idx("train-labels-idx1-ubyte.gz", 8)
    x_test = idx("t10k-images-idx3-ubyte.gz", 16, 28, 28)
    y_test = idx("t10k-labels-idx1-ubyte.gz", 8)
    return x_train, y_train, x_test, y_test


def _cifar10(config: DataConfig) -> Arrays:
    path = _download("cifar-10-python.tar.gz", "CIFAR-10 archive", origin=CIFAR10_URL)
    with _reading("data.dataset", path, CACHED_FIX), tarfile.open(path, "r:gz") as tar:
        train = [_cifar10_batch(tar, f"data_batch_{i}") for i in range(1, 6)]
        x_train, y_train = _cifar10_stack(train)
        x_test, y_test = _cifar10_stack([_cifar10_batch(tar, "test_batch")])
    return x_train, y_train, x_test, y_test


def _cifar10_batch(tar: tarfile.TarFile, name: str) -> dict[bytes, Any]:
    file = tar.extractfile(f"cifar-10-batches-py/{name}")
    if file is None:
        raise ValueError(f"cifar-10-batches-py/{name} is not a file")
    batch = _NumpyOnlyUnpickler(file, encoding="bytes").load()
    if not isinstance(batch, dict):
        raise TypeError(f"{name} holds a {type(batch).__name__}, not a batch")
    return batch


def _cifar10_stack(batches: list[dict[bytes, Any]]) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.concatenate([b[b"labels"] for b in batches])
    return x, y


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Defence in depth behind the checksum: the CIFAR-10 batches are dicts of bytes, lists
    and one numpy array, so any other global in the pickle can only be an attack."""

    ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),  # how the published batches were pickled
        ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2, protocols below 5
        ("numpy._core.numeric", "_frombuffer"),  # numpy >= 2, protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    })

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(
                f"the batches may hold only numpy arrays, not {module}.{name}"
            )
        return super().find_class(module, name)


_LOADERS: dict[str, Callable[[DataConfig], Arrays]] = {
    "digits": _digits,
    "mnist": _mnist,
    "fashion_mnist": _fashion_mnist,
    "cifar10": _cifar10,
    "npz": _npz,
}


def _download(name: str, what: str, subdir: str = "", origin: str | None = None) -> Path:
    """A cached dataset file, downloaded on first use. A file with a published checksum is
    checked every time, also when you placed it in the cache yourself: `what` names it."""
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / subdir
    path = cache / name
    url = origin or f"{KERAS_DATASETS}{subdir + '/' if subdir else ''}{name}"
    if path.is_file():
        if not _is_published(path, name):
            raise UsageError(
                f"data.dataset: the file at {path} is not the published {what} (checksum "
                f"mismatch); {CACHED_FIX}, or replace it with the file from {url}"
            )
        return path
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
    if not _is_published(partial, name):
        partial.unlink()
        raise UsageError(
            f"data.dataset: the download from {url} is not the published {what} (checksum "
            f"mismatch); try again later, or place the published file at {path}"
        )
    partial.rename(path)  # atomic: an interrupted download never looks complete
    return path


def _is_published(path: Path, name: str) -> bool:
    expected = PUBLISHED_SHA256.get(name)
    if expected is None:
        return True
    with _reading("data.dataset", path, CACHED_FIX), open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest() == expected


@contextlib.contextmanager
def _reading(key: str, path: Path, fix: str, as_what: str = "") -> Iterator[None]:
    """Any failure to parse a data file means the file is wrong, not sweep: a file cut short
    raises BadZipFile, EOFError, zlib.error, ValueError..., so catch them all."""
    try:
        yield
    except SweepError:
        raise
    except Exception as error:
        what = f" {as_what}" if as_what else ""
        reason = brief(error, 160)  # it can quote much of the file
        raise UsageError(f"{key}: cannot read {path}{what} ({reason}); {fix}") from error


