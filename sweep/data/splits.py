"""What every data source gives: a `Dataset` of train, validation and test `Split`s with
integer labels, and the checks that arrays or labels can be one. A failed check is the
user's to fix: a one-line `UsageError`."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sweep.config import DataConfig, TrainConfig
from sweep.errors import UsageError, brief

SPLIT_SEED = 0  # fixed forever: studies stay comparable on the same validation data


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


def check_consistent(
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


def as_images(x: np.ndarray, name: str) -> np.ndarray:
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
