"""What a trained model is worth: accuracy, achieved sparsity, compressed size, and what
ships: the TFLite files' sizes, the int8 file's accuracy, and latency (`sweep.modeling.tflite`),
each deploy group only where asked (`sweep.modeling.metrics`).

Sizes follow tfmot's convention: strip pruning, save without the optimizer, compress.
`compressed_bytes` is gzip (level 9) of the Keras H5 file; `tflite_gzip_bytes` is gzip
of the float TFLite flatbuffer; `int8_bytes` the int8 file as deployed (`int8_gzip_bytes`
its gzip, `int8_sparse_bytes` the size it has stored sparse). Sparsity is
counted on the stripped model's weights, never taken from the schedule's target.
"""

from __future__ import annotations

import gzip
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sweep._tf import keras
from sweep.config import ExportConfig
from sweep.data.splits import Dataset, Split
from sweep.errors import SweepError, brief
from sweep.modeling.channel_graph import describe
from sweep.modeling.metrics import DEPLOY_GROUPS, with_prerequisites
from sweep.modeling.pruning import all_layers, prunable_variables
from sweep.modeling.tflite import Conversions, Runner, converting, shipped, sparse_encoded
from sweep.search.channel_groups import layer_widths, macs

if TYPE_CHECKING:
    from sweep.config import Int8Storage


def accuracy(model: keras.Model, split: Split, batch_size: int = 2048) -> float:
    """Top-1 accuracy of `model` (logits or probabilities) on `split`."""
    correct = 0
    for x, y in split.batches(batch_size):
        correct += int(np.sum(np.argmax(model(x, training=False), axis=-1) == y))
    return correct / split.size


def prunable_weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    """The weights `prune_low_magnitude` can prune, by layer name (kernels, not biases),
    nested models' layers included."""
    weights: dict[str, list[np.ndarray]] = {}
    for layer in all_layers(model):
        if variables := prunable_variables(layer):
            weights[layer.name] = [np.asarray(v) for v in variables]
    return weights


def sparsity(model: keras.Model, dense_sizes: Mapping[str, int] | None = None) -> dict[str, float]:
    """`sparsity` (zeros / size over all prunable weights) and `sparsity/<layer>` for each;
    with `dense_sizes` (a model whose channels were removed: each layer's prunable weights
    before), the removed weights count as zeros."""
    metrics: dict[str, float] = {}
    zeros = total = 0
    for name, arrays in prunable_weights(model).items():
        layer_total = (dense_sizes or {}).get(name, sum(a.size for a in arrays))
        layer_zeros = layer_total - sum(int(np.count_nonzero(a)) for a in arrays)
        metrics[f"sparsity/{name}"] = layer_zeros / layer_total
        zeros += layer_zeros
        total += layer_total
    metrics["sparsity"] = zeros / total if total else 0.0
    return metrics


def gzip_size(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def keras_h5_bytes(model: keras.Model) -> bytes:
    """The model saved as Keras H5 without optimizer: the file tfmot's tutorial zips."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.h5"
        with warnings.catch_warnings():  # "HDF5 is legacy": it is tfmot's size convention
            warnings.simplefilter("ignore", UserWarning)
            keras.models.save_model(model, path, include_optimizer=False, save_format="h5")
        return path.read_bytes()


DEFAULT_EXPORT = ExportConfig()


def measure(
    model: keras.Model,
    dataset: Dataset,
    groups: frozenset[str],
    timings: dict[str, float] | None = None,
    files: dict[str, bytes] | None = None,
    export: ExportConfig = DEFAULT_EXPORT,
    dense_sizes: Mapping[str, int] | None = None,
) -> dict[str, float]:
    """The cheap metrics of a stripped (or dense) model and its deploy metric `groups`
    (`sweep.modeling.metrics`); see the README for their meaning. Seconds spent on each
    measurement go into `timings`, the TFLite files measured into `files`; `dense_sizes`
    as `sparsity` takes them."""
    return {**core_metrics(model, dataset, timings, dense_sizes),
            **deploy_metrics(model, dataset, groups, timings, files, export)}


def core_metrics(model: keras.Model, dataset: Dataset, timings: dict[str, float] | None = None,
                 dense_sizes: Mapping[str, int] | None = None) -> dict[str, float]:
    """What every trial measures (`metrics.CORE`, `sparsity/<layer>` and `channels/<layer>`)."""
    clock = time.perf_counter()
    weights = [np.asarray(w) for w in model.weights]
    graph = describe(model, unique_names=False)
    metrics: dict[str, float] = {
        "val_accuracy": accuracy(model, dataset.val),
        "test_accuracy": accuracy(model, dataset.test),
        **sparsity(model, dense_sizes),
        "params": sum(w.size for w in weights),
        "nonzero_params": sum(int(np.count_nonzero(w)) for w in weights),
        "macs": macs(graph),
        **{f"channels/{layer}": width for layer, width in layer_widths(graph).items()},
    }
    evaluated = time.perf_counter()
    metrics["compressed_bytes"] = gzip_size(keras_h5_bytes(model))
    if timings is not None:
        timings.update(evaluate=evaluated - clock, h5_size=time.perf_counter() - evaluated)
    return metrics


def deploy_metrics(
    model: keras.Model,
    dataset: Dataset,
    groups: frozenset[str],
    timings: dict[str, float] | None = None,
    files: dict[str, bytes] | None = None,
    export: ExportConfig = DEFAULT_EXPORT,
) -> dict[str, float]:
    """The metrics of the deploy `groups` (`metrics.DEPLOY_GROUPS`), the files converted and
    the int8 file stored as `export` says. Into `files`: the TFLite files measured (`model.tflite`,
    `model_int8.tflite`), for an export of exactly those bytes."""
    if not groups:  # most trials: no file to convert, no folder for the conversion to make
        return {}
    clock = time.perf_counter()
    laps: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        laps[name] = now - clock
        clock = now

    groups = with_prerequisites(groups)
    metrics: dict[str, float] = {}
    example = dataset.test.first_inputs(1)[0]
    with converting(model, export.tflite_converter) as convert:  # float and int8 share what they can
        if "tflite" in groups:
            flatbuffer = convert.float_file()
            metrics["tflite_bytes"] = len(flatbuffer)
            metrics["tflite_gzip_bytes"] = gzip_size(flatbuffer)
            lap("tflite_size")
            if "latency" in groups:
                metrics["latency_ms"], metrics["latency_p90_ms"] = Runner(flatbuffer).latency_ms(example)
                lap("latency")
            if files is not None:
                files["model.tflite"] = flatbuffer
        if "int8" in groups:
            metrics.update(_int8_metrics(convert, dataset, groups, example, files, export.int8_storage, lap))
    if timings is not None:
        timings.update(laps)
    return metrics


def deploy_metrics_again(
    model: keras.Model, dataset: Dataset, groups: frozenset[str], val_accuracy: float,
    export: ExportConfig = DEFAULT_EXPORT, timings: dict[str, float] | None = None,
) -> dict[str, float]:
    """`deploy_metrics` of a trained model rebuilt from its saved weights, once it gives the
    `val_accuracy` it gave when trained (the files measured are then the trial's); raises
    `SweepError` if it does not."""
    clock = time.perf_counter()
    if (again := accuracy(model, dataset.val)) != val_accuracy:
        raise SweepError(f"its saved weights give val_accuracy {again:.4f}, the trial measured {val_accuracy:.4f}")
    if timings is not None:
        timings["check_again"] = time.perf_counter() - clock
    return deploy_metrics(model, dataset, groups, timings, export=export)


def _int8_metrics(
    convert: Conversions, dataset: Dataset, groups: frozenset[str], example: np.ndarray,
    files: dict[str, bytes] | None, int8_storage: Int8Storage, lap: Callable[[str], None],
) -> dict[str, float]:
    try:
        dense = convert.int8_file(dataset.train)
    except Exception as error:  # ops the full-integer converter cannot quantize
        # NaN: a study with an int8 objective fails the trial (Optuna refuses NaN values),
        # any other study goes on without the int8 file.
        warnings.warn(f"no int8 TFLite file: {brief(error, 200)}", stacklevel=1)
        lap("int8_convert")
        return dict.fromkeys(_names(groups & {"int8", "int8_latency"}), math.nan)
    encoded = sparse_encoded(dense)
    quantized = shipped(dense, encoded, int8_storage)
    lap("int8_convert")
    runner = Runner(quantized)
    metrics = {"int8_bytes": len(quantized), "int8_gzip_bytes": gzip_size(quantized),
               "int8_sparse_bytes": len(encoded),
               "int8_xnnpack": float(runner.xnnpack)}  # 0: sparse-encoded, on the built-in kernels
    metrics["int8_val_accuracy"] = runner.accuracy(dataset.val)
    metrics["int8_test_accuracy"] = runner.accuracy(dataset.test)
    if "int8_latency" in groups:
        metrics["int8_latency_ms"], metrics["int8_latency_p90_ms"] = runner.latency_ms(example)
    lap("int8_evaluate")
    if files is not None:
        files["model_int8.tflite"] = quantized
    return metrics


def _names(groups: frozenset[str]) -> set[str]:
    return {name for group in groups for name in DEPLOY_GROUPS[group]}
