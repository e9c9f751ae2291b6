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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config.schema import DataConfig, TrainConfig
from sweep.errors import SweepError, UsageError, brief

SPLIT_SEED = 0  # fixed forever: studies stay comparable on the same validation data
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


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset: `x`, `y` arrays in memory, or `stream`, an unbatched
    `tf.data.Dataset` of (x, y) pairs that is read anew on every pass and never held whole."""

    size: int  # examples
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    stream: Any = None  # tf.data.Dataset
    example_bytes: int = 0  # streams: bytes of one x, to size the shuffle buffer

    @classmethod
    def arrays(cls, x: np.ndarray, y: np.ndarray) -> Split:
        return cls(len(x), x=x, y=y)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x, y) numpy batches in order; y as 1-D labels."""
        if self.stream is None:
            assert self.x is not None and self.y is not None
            for start in range(0, self.size, batch_size):
                yield self.x[start : start + batch_size], self.y[start : start + batch_size]
            return
        for x, y in self.stream.batch(batch_size).as_numpy_iterator():
            yield x, np.reshape(y, -1)

    def first_inputs(self, count: int) -> np.ndarray:
        return next(self.batches(count))[0]

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a split lives as long as its worker)
    def sample_inputs(self, count: int, seed: int) -> np.ndarray:
        """Up to `count` inputs drawn with `seed`: the same ones every time (a stream is read
        once per worker to take them, whatever TensorFlow's seeds are)."""
        chosen = np.sort(np.random.default_rng(seed).permutation(self.size)[:count])
        if self.stream is None:
            assert self.x is not None
            return self.x[chosen]
        wanted = set(chosen.tolist())
        picked = [x for i, (x, _) in enumerate(self.stream.as_numpy_iterator()) if i in wanted]
        return np.stack(picked)

    def fit_arguments(self, batch_size: int, shuffle_seed: int) -> dict[str, Any]:
        """The training data as `model.fit` keywords, shuffled anew each epoch. Arrays are
        shuffled by Keras from the global seed; a stream through a buffer of up to
        `SHUFFLE_BUFFER_BYTES` seeded with `shuffle_seed`, and prefetched."""
        if self.stream is None:
            return {"x": self.x, "y": self.y, "batch_size": batch_size, "shuffle": True}
        buffer = max(1, min(self.size, SHUFFLE_BUFFER_BYTES // max(self.example_bytes, 1)))
        stream = self.stream.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=True)
        return {"x": stream.batch(batch_size).prefetch(-1)}  # -1: tf.data.AUTOTUNE

    def validation_data(self, batch_size: int) -> Any:
        """This split as `model.fit(validation_data=...)`."""
        if self.stream is None:
            return self.x, self.y
        return self.stream.batch(batch_size).prefetch(-1)


SHUFFLE_BUFFER_BYTES = 256 * 2**20


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    streamed_digest: str | None = None  # streams: SHA-256 taken while they were first read

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-self.train.size // batch_size)

    def total_steps(self, train: TrainConfig) -> int:
        """The batches a trial trains on: what its pruning schedule is placed on."""
        return train.epochs * self.steps_per_epoch(train.batch_size)

    @functools.cached_property
    def fingerprint(self) -> str:
        """SHA-256 of every split as the trials see it (shapes, dtypes, values): a study
        resumes only on the data it started with, whatever the file is called."""
        if self.streamed_digest is not None:
            return self.streamed_digest
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            for array in (split.x, split.y):
                assert array is not None
                digest.update(f"{array.dtype.str}{array.shape}".encode())
                digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()


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
    x_train, x_test = _as_images(x_train, "x_train"), _as_images(x_test, "x_test")
    y_train, y_test = as_labels(y_train, "y_train"), as_labels(y_test, "y_test")
    _check_consistent(x_train, y_train, x_test, y_test)
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


def split_indices(
    size: int, fraction: float, what: str, seed: int = SPLIT_SEED, key: str = "data.validation_split"
) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random `fraction` of `range(size)` held out, and the rest: the same split in
    every trial and study."""
    order = np.random.default_rng(seed).permutation(size)
    count = round(size * fraction)
    if count < 1 or count >= size:
        raise UsageError(
            f"{key}: {fraction} of {size} {what} examples leaves nothing to hold out or nothing to "
            f"train on; {'choose a value between them' if key == 'data.validation_split' else 'add examples'}"
        )
    return order[:count], order[count:]


def check_labels(
    config: DataConfig, labels: Mapping[str, np.ndarray], train: str, names: Sequence[str] | None = None
) -> int:
    """The number of classes (`data.num_classes`, or the largest label + 1), after checking
    that every split's labels fit it, that the training split `train` has two classes or
    more (one class trains a model that is always right), and that no other split has a
    class training never has. `labels` maps each split to its labels (or its distinct ones);
    `names`, an image folder's class folders, name the labels in messages."""
    classes = {name: np.unique(np.asarray(values)) for name, values in labels.items()}
    if config.num_classes is not None:
        for name, seen in classes.items():
            if seen[-1] >= config.num_classes:
                raise UsageError(
                    f"data: {name} has label {seen[-1]}, out of range for num_classes: {config.num_classes} "
                    f"(labels are 0..{config.num_classes - 1}); fix the labels or data.num_classes"
                )
    trained = classes[train]
    if len(trained) < 2:
        raise UsageError(f"data: {train} has one class ({_labelled(trained, names)}); a classifier needs two or more: "
                         f"add examples of another class")
    for name, seen in classes.items():
        unseen = np.setdiff1d(seen, trained)
        if len(unseen):
            them = "them" if len(unseen) > 1 else "it"
            raise UsageError(f"data: {name} has {_labelled(unseen, names)} that {train} never has; add training "
                             f"examples of {them}, or remove {them} from {name}")
    return config.num_classes if config.num_classes is not None else int(max(s[-1] for s in classes.values())) + 1


def _labelled(labels: np.ndarray, names: Sequence[str] | None) -> str:
    """`label 3`, `labels [3, 4]`, with class folder names when there are any."""
    values = [int(label) for label in labels]
    text = f"label {values[0]}" if len(values) == 1 else f"labels {brief(values)}"
    if names is not None:
        folders = [names[v] for v in values if v < len(names)]
        text += f" (class folder{'s' if len(folders) > 1 else ''} {', '.join(folders[:4])})"
    return text


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


def _check_consistent(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> None:
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise UsageError(
            f"data: x and y differ in length (train {len(x_train)} vs {len(y_train)}, "
            f"test {len(x_test)} vs {len(y_test)})"
        )
    if x_test.shape[1:] != x_train.shape[1:]:  # the model is built for the training shape
        raise UsageError(
            f"data: x_test images have shape {x_test.shape[1:]} but x_train images "
            f"{x_train.shape[1:]}; save test images of the training shape"
        )


def _as_images(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":  # text that looks like numbers is still a mistake
        raise UsageError(
            f"data: {name} must hold numbers (pixel values), got dtype {x.dtype}; "
            f"convert it with {name}.astype('float32')"
        )
    if x.ndim < 2:
        raise UsageError(
            f"data: {name} must have one row per example (at least 2-D), got shape {x.shape}"
        )
    if len(x) == 0:
        raise UsageError(f"data: {name} is empty (shape {x.shape}); it needs at least one example")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    return x[..., np.newaxis] if x.ndim == 3 else x  # greyscale images get a channel axis


def as_labels(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:  # CIFAR-style column of labels
        y = y[:, 0]
    if looks_one_hot(y):  # what Keras' categorical_crossentropy examples feed
        raise UsageError(f"data: {name} labels look one-hot (shape {y.shape}); pass integer labels: y.argmax(axis=1)")
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise UsageError(
            f"data: {name} must be a 1-D array of non-negative integer class labels, "
            f"got shape {y.shape} and dtype {y.dtype}"
        )
    return y.astype(np.int64)


def looks_one_hot(y: np.ndarray) -> bool:
    """Rows of 0s and 1s with exactly one 1: one-hot labels, not one integer label per example."""
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.isin(y, (0, 1)).all()) and bool((y.sum(axis=1) == 1).all())
