"""Your own data: `data.loader` (a function returning arrays or tf.data datasets) and
`dataset: directory` (an image folder read with `image_dataset_from_directory`).

What a loader returns is given to the model as it is: sweep does not rescale it, so a
model with its own preprocessing (a `Rescaling` layer) sees the values it was trained on.
A `tf.data.Dataset` stays a stream. It is read once when the dataset is loaded (once per
worker): that pass counts its examples (a generator has no length, and the pruning
schedule needs the real number of steps), checks every example's shape and label, and
takes the fingerprint. (A training stream that sweep splits is read twice, to check it
comes in the same order.) Training then reads it batch by batch; it is never one array.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import multiprocessing
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sweep.config import DataConfig
from sweep.data.splits import (
    Dataset,
    Split,
    as_labels,
    check_labels,
    looks_one_hot,
    split_indices,
)
from sweep.errors import SweepError, UsageError, brief
from sweep.user_code import resolve_function

LOADER_KEYS = ("train", "validation", "test")
READ_BATCH = 256  # examples per batch while a stream is first read
TEST_FRACTION = 0.2  # held out for testing from an image folder without train/ and test/
TEST_SPLIT_SEED = 1  # differs from the validation split's seed


def load_user_dataset(config: DataConfig) -> Dataset:
    if config.dataset == "loader":
        key, sources = "data.loader", _call_loader(config)
    else:
        key, sources = "data.path", _read_directory(config)
    digest = hashlib.sha256()
    splits: dict[str, Split] = {}
    labels: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    contents: dict[str, bytes] = {}
    for name, source in sources.items():
        splits[name], labels[name], shapes[name], contents[name] = _read(name, source, key)
        digest.update(name.encode() + contents[name])
    num_classes = check_labels(config, labels, train="train", names=getattr(sources["train"], "class_names", None))
    if len(set(shapes.values())) > 1:
        raise UsageError(f"{key}: the splits' examples differ in shape ({_describe(shapes)}); give them one shape")
    if ("test" not in splits or "validation" not in splits) and splits["train"].stream is not None:
        _check_same_order(splits["train"], contents["train"], key)
    if "test" not in splits:  # an image folder of class folders only
        splits["train"], splits["test"] = _carve(splits["train"], TEST_FRACTION, "data.path", TEST_SPLIT_SEED)
    if "validation" not in splits:
        splits["train"], splits["validation"] = _carve(splits["train"], config.validation_split, "data.validation_split")
    return Dataset(
        name=config.dataset,
        train=splits["train"],
        val=splits["validation"],
        test=splits["test"],
        num_classes=num_classes,
        input_shape=shapes["train"],
        streamed_digest=digest.hexdigest(),
    )


# --- sources ---------------------------------------------------------------------------


def _call_loader(config: DataConfig) -> dict[str, Any]:
    assert config.loader is not None  # guaranteed by DataConfig
    function = resolve_function(config.loader, "data.loader")
    try:
        returned = function()
    except Exception as error:  # the user's code
        raise UsageError(f"data.loader: {config.loader} raised {brief(error, 160)}; fix the loader") from error
    expected = "a dict with 'train' and 'test' (and optionally 'validation')"
    if not isinstance(returned, Mapping):
        raise UsageError(f"data.loader: {config.loader} returned {type(returned).__name__}; return {expected}")
    keys = [str(k) for k in returned]
    if set(keys) - set(LOADER_KEYS) or not {"train", "test"} <= set(keys):
        raise UsageError(f"data.loader: {config.loader} returned keys {brief(keys)}; return {expected}")
    return {name: returned[name] for name in LOADER_KEYS if name in returned}


def _read_directory(config: DataConfig) -> dict[str, Any]:
    """`path/train`, `path/test` (and `path/validation`) if there is a `train` folder, else
    `path` itself: each holds one folder of images per class."""
    from sweep._tf import keras

    assert config.path is not None and config.image_size is not None  # guaranteed by DataConfig
    root = Path(config.path)
    folders = {"train": root}
    if (root / "train").is_dir():
        folders = {name: root / name for name in LOADER_KEYS if (root / name).is_dir()}
        if "test" not in folders:
            raise UsageError(f"data.path: {root} has a train/ folder but no test/ folder; add one")
    streams: dict[str, Any] = {}
    classes: dict[str, list[str]] = {}
    for name, folder in folders.items():
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Keras prints "Found N files..."
                stream = keras.utils.image_dataset_from_directory(
                    folder, labels="inferred", label_mode="int", color_mode=config.color_mode or "rgb",
                    image_size=config.image_size, batch_size=None, shuffle=False,
                )
        except Exception as error:
            raise UsageError(
                f"data.path: cannot read images from {folder} ({brief(error, 160)}); it needs one "
                f"folder of images per class"
            ) from error
        _check_class_folders(folder, stream)
        streams[name], classes[name] = stream, stream.class_names
    if any(names != classes["train"] for names in classes.values()):
        raise UsageError(f"data.path: the class folders differ between {', '.join(folders)} "
                         f"({_describe(classes)}); give each the same class folders")
    return streams


def _check_class_folders(folder: Path, stream: Any) -> None:
    """Two class folders or more; an empty one is a class nothing is trained or tested on:
    said once, by the process that starts the study (not again by each --jobs worker)."""
    names = stream.class_names
    if len(names) < 2:
        raise UsageError(f"data.path: {folder} has one class folder ({', '.join(names)}); a classifier needs two or "
                         f"more: add a folder of images per class")
    filled = {Path(path).relative_to(folder).parts[0] for path in stream.file_paths}
    empty = [str(folder / name) for name in names if name not in filled]
    if empty and multiprocessing.parent_process() is None:
        folders = f"folder {empty[0]} holds" if len(empty) == 1 else f"folders {', '.join(empty)} hold"
        print(f"warning: data.path: class {folders} no images, so nothing is trained or tested on "
              f"{'that class' if len(empty) == 1 else 'those classes'}; add images or remove the folder",
              file=sys.stderr)


# --- reading and checking ----------------------------------------------------------------


def _read(name: str, source: Any, key: str) -> tuple[Split, np.ndarray, tuple[int, ...], bytes]:
    """`source` as a checked `Split`, with its distinct labels, the shape of one example and
    the SHA-256 of its contents."""
    from sweep._tf import tf

    if isinstance(source, tf.data.Dataset):
        return _read_stream(name, source, key)
    if not (isinstance(source, tuple | list) and len(source) == 2):
        raise UsageError(
            f"{key}: {name} is {type(source).__name__}; give (x, y) numpy arrays or an unbatched "
            f"tf.data.Dataset of (x, y) pairs"
        )
    try:
        x, y = np.asarray(source[0]), np.asarray(source[1])
    except ValueError as error:  # ragged: examples of different shapes
        raise UsageError(f"{key}: {name} is not a pair of arrays ({brief(error, 120)}); give every example "
                         f"one shape") from None
    if x.dtype.kind not in "biuf" or x.ndim < 2:
        raise UsageError(f"{key}: {name} x must be numbers with one row per example, got shape "
                         f"{x.shape} and dtype {x.dtype}")
    y = as_labels(y, f"{name} y")
    if len(x) != len(y) or not len(x):
        raise UsageError(f"{key}: {name} x and y differ in length ({len(x)} vs {len(y)}) or are empty; "
                         f"give one label per example")
    return Split.arrays(x, y), np.unique(y), tuple(x.shape[1:]), _contents([(x, y)])


def _read_stream(name: str, stream: Any, key: str) -> tuple[Split, np.ndarray, tuple[int, ...], bytes]:
    from sweep._tf import tf

    spec = stream.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2 and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise UsageError(f"{key}: {name} yields {brief(spec, 120)}, not (x, y) pairs; map it to (x, y)")
    _check_spec_shapes(name, spec[0].shape, spec[1].shape, key)
    if not spec[1].dtype.is_integer:
        raise UsageError(f"{key}: {name} labels are {spec[1].dtype.name}; give integer class labels")
    if not (spec[0].dtype.is_floating or spec[0].dtype.is_integer):
        raise UsageError(f"{key}: {name} x must be numbers, got dtype {spec[0].dtype.name}")
    if stream.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise UsageError(f"{key}: {name} repeats forever; remove .repeat(): sweep runs the epochs itself")
    size, shape, example_bytes = 0, None, 0
    labels = np.zeros(0, np.int64)
    digest = hashlib.sha256()
    try:
        for x, y in stream.batch(READ_BATCH).as_numpy_iterator():
            if shape is None:
                shape, example_bytes = x.shape[1:], x[0].nbytes
            if x.shape[1:] != shape:
                raise UsageError(f"{key}: {name} has examples of shape {x.shape[1:]} and {shape}; give them one shape")
            if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
                raise UsageError(_label_shape_problem(name, x.shape[1:], y, key))
            if y.min() < 0:
                raise UsageError(f"{key}: {name} has a negative label ({y.min()}); labels are 0..classes-1")
            size += len(x)
            labels = np.union1d(labels, y)
            _update(digest, x, y)
    except SweepError:
        raise
    except Exception as error:  # the user's pipeline: a generator raising, an undecodable image, examples of different shapes
        raise UsageError(_read_failure(name, stream, size, error, key)) from error
    if shape is None:
        raise UsageError(f"{key}: {name} is empty; it needs at least one example")
    return Split(size, stream=stream, example_bytes=example_bytes), labels, tuple(shape), digest.digest()


BATCHED_FIX = "give unbatched (x, y) pairs: call .unbatch() on it (sweep batches by train.batch_size)"


def _check_spec_shapes(name: str, x: Any, y: Any, key: str) -> None:
    """A batched dataset (`.batch()` leaves an unknown leading dimension on both x and y)
    or one-hot labels (one vector per example), seen from the dataset's shapes alone.
    Anything less certain is left to the labels themselves (`_label_shape_problem`)."""
    if x.rank is None or y.rank is None or x.rank == 0 or y.rank == 0:
        return
    if x[0] is None and y[0] is None:
        raise UsageError(f"{key}: {name} is batched (examples of shape {_shape(x)}, labels {_shape(y)}); {BATCHED_FIX}")
    if y.rank == 1 and y[0] is not None and y[0] > 1 and y[0] != x[0]:
        raise UsageError(f"{key}: {name} labels look one-hot (shape {_shape(y)} per example); pass integer labels: "
                         f"{name}.map(lambda x, y: (x, tf.argmax(y)))")


def _label_shape_problem(name: str, x_shape: tuple[int, ...], y: np.ndarray, key: str) -> str:
    """Why a batch of labels `y` is not one integer per example: one-hot rows, or a batched dataset."""
    if y.ndim == 2 and looks_one_hot(y):
        return (f"{key}: {name} labels look one-hot (shape {y.shape[1:]} per example); pass integer labels: "
                f"{name}.map(lambda x, y: (x, tf.argmax(y)))")
    return (f"{key}: {name} is batched (examples of shape {x_shape}, labels {y.shape[1:]}); {BATCHED_FIX}")


def _read_failure(name: str, stream: Any, read: int, error: Exception, key: str) -> str:
    """One line for a stream that failed after `read` examples: TensorFlow's own reason,
    the image file that cannot be decoded (an image folder), and the likely fix."""
    reason = _tf_reason(error)
    undecodable = _undecodable_image(stream, read)
    if undecodable is not None:
        path, why = undecodable
        return f"{key}: cannot decode {path} ({why}); fix or remove the file"
    if "Cannot batch tensors with different shapes" in reason and _first_looks_batched(stream):
        return f"{key}: reading {name} failed ({reason}); it looks batched: call .unbatch() on it"
    if "Cannot batch tensors with different shapes" in reason:
        return f"{key}: reading {name} failed ({reason}); give every example one shape"
    return f"{key}: reading {name} failed ({reason}); fix the dataset"


# TensorFlow's graph-op decorations around the reason: {{function_node ...}}, [[{{node ...}}]],
# [Op:IteratorGetNext], "name: ", and tf.data's "Error in user-defined function passed to
# ParallelMapDatasetV2:7 transformation with iterator: Iterator::Root::...::ParallelMapV2: ".
_TF_NOISE = re.compile(
    r"\{\{[^}]*\}\}|\[\[.*?\]\]|\[Op:[^\]]*\]|\bname: \S*\s*$"
    r"|Error in user-defined function passed to \S+ transformation with iterator: |Iterator::\S+: "
)


def _tf_reason(error: BaseException, limit: int = 200) -> str:
    """The first meaningful line of an exception, TensorFlow's without its graph-op noise:
    an `OpError`'s repr is empty (`InvalidArgumentError()`), its text is in `.message`."""
    from sweep._tf import tf

    if not isinstance(error, tf.errors.OpError):
        return brief(error, 160)
    lines = (_TF_NOISE.sub("", line).strip() for line in error.message.splitlines())
    first = next((line for line in lines if line), type(error).__name__)
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _undecodable_image(stream: Any, read: int) -> tuple[str, str] | None:
    """The file of an image folder's stream (`file_paths`, in stream order) that TensorFlow
    cannot decode, and why: looked for from example `read` on, where the stream failed, a few
    batches deep (reading ahead), not through a whole large folder."""
    from sweep._tf import tf

    paths = list(getattr(stream, "file_paths", None) or [])
    for path in paths[read : read + 4 * READ_BATCH]:
        try:
            tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
        except tf.errors.OpError as error:
            return path, _tf_reason(error)
    return None


def _first_looks_batched(stream: Any) -> bool:
    """Whether the first (x, y) of `stream` is a batch: as many labels as examples, more than one."""
    try:
        x, y = next(stream.take(1).as_numpy_iterator())
    except Exception:  # the stream fails at its start too: nothing to tell
        return False
    return np.ndim(x) >= 1 and np.ndim(y) == 1 and len(y) > 1 and len(x) == len(y)


def _shape(shape: Any) -> tuple[int | None, ...]:
    return tuple(shape.as_list())


def _update(digest: Any, x: np.ndarray, y: np.ndarray) -> None:
    digest.update(f"{x.dtype.str}{x.shape}{y.dtype.str}{y.shape}".encode())
    digest.update(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)


def _contents(batches: Any) -> bytes:
    """SHA-256 of (x, y) batches, as `_read_stream` takes it."""
    digest = hashlib.sha256()
    for x, y in batches:
        _update(digest, x, y)
    return digest.digest()


def _check_same_order(split: Split, contents: bytes, key: str) -> None:
    """A stream is split by position (`_carve`), so it must give its examples in the same
    order on every pass: read it a second time."""
    if _contents(split.stream.batch(READ_BATCH).as_numpy_iterator()) != contents:
        raise UsageError(
            f"{key}: the training data comes in a different order on each pass (shuffled in the loader?), so "
            f"no fixed part of it can be held out; remove the shuffle (sweep shuffles the training data "
            f"itself) or give a validation split"
        )


def _carve(split: Split, fraction: float, key: str, seed: int = 0) -> tuple[Split, Split]:
    """`split` without a fixed random `fraction` of its examples, and that fraction."""
    held_out, kept = split_indices(split.size, fraction, "training", seed=seed, key=key)
    if split.stream is None:
        assert split.x is not None and split.y is not None
        return Split.arrays(split.x[kept], split.y[kept]), Split.arrays(split.x[held_out], split.y[held_out])
    mask = np.zeros(split.size, dtype=bool)
    mask[held_out] = True
    return _filtered(split, ~mask), _filtered(split, mask)


def _filtered(split: Split, keep: np.ndarray) -> Split:
    """The examples of a stream whose position is marked in `keep`, in order."""
    from sweep._tf import tf

    marks = tf.constant(keep)
    stream = split.stream.enumerate().filter(lambda i, pair: tf.gather(marks, i)).map(lambda i, pair: pair)
    return Split(int(keep.sum()), stream=stream, example_bytes=split.example_bytes)


def _describe(values: Mapping[str, object]) -> str:
    return ", ".join(f"{name} {brief(value)}" for name, value in values.items())
