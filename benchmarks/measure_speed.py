"""Measuring faster (issue "A trial costs its training"): what the three changes to
`sweep.modeling.tflite` save, on the digits CNN (trained 3 epochs) and MobileNetV2
(alpha 0.35, 32x32x3, random weights, random data of the digits splits' sizes), each with
90% of every kernel zeroed, as a pruned trial's model is. Three files per model: float
(XNNPack), int8 stored dense (XNNPack) and int8 sparse-encoded (LiteRT's built-in kernels).

1. accuracy: one example per invoke (before) against batches of 16, 64 and 256 in a second
   interpreter (`Runner.accuracy`), on the validation and test splits; interleaved rounds,
   the outputs compared bit for bit; and what a second interpreter and a resize cost.
2. convert: `float_tflite` + `int8_tflite` as two `from_keras_model` conversions (before)
   against `tflite_files` (one SavedModel for both), interleaved rounds, the bytes compared;
   and where an int8 conversion's time goes.
3. latency: `Runner.latency_ms` under several `LatencyPlan`s, REPEATS times each (a fresh
   `Runner` each time, the plans in a new random order each repeat), against the median of
   200 runs after 10 warm-up runs.

    .venv/bin/python benchmarks/measure_speed.py > benchmarks/measure_speed.json   # ~12 min
    .venv/bin/python benchmarks/measure_speed.py --part latency                     # one part
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine

ZEROED = 0.9
ACCURACY_ROUNDS = 15
BATCHES = (16, 64, 256)
CONVERT_ROUNDS = {"digits CNN": 5, "MobileNetV2": 3}
REPEATS = 15
PLANS = {  # name: (warmup, (least, most) runs, budget seconds)
    "200 runs (reference)": (10, (200, 200), 1e9),
    "before: 20-200 runs, 0.5 s": (10, (20, 200), 0.5),
    "warm-up 3, 10 runs": (3, (10, 10), 1e9),
    "warm-up 10, 10 runs": (10, (10, 10), 1e9),
    "warm-up 3, 20 runs": (3, (20, 20), 1e9),
    "warm-up 10, 20 runs": (10, (20, 20), 1e9),
    "warm-up 3, 50 runs": (3, (50, 50), 1e9),
    "warm-up 10, 50 runs": (10, (50, 50), 1e9),
    "warm-up 10, 10-200 runs, 0.1 s": (10, (10, 200), 0.1),
    "warm-up 10, 20-200 runs, 0.1 s": (10, (20, 200), 0.1),
    "warm-up 10, 20-200 runs, 0.25 s": (10, (20, 200), 0.25),
    "warm-up 3, 20-200 runs, 0.1 s": (3, (20, 200), 0.1),
}


def zeroed(model: Any, sparsity: float) -> Any:
    """A copy of `model` with the smallest `sparsity` of each kernel zeroed, as magnitude pruning does."""
    from sweep._tf import keras

    copy = keras.models.clone_model(model)
    for layer, source in zip(copy.layers, model.layers, strict=True):
        weights = source.get_weights()
        if weights and weights[0].ndim > 1:
            kernel = weights[0]
            weights[0] = np.where(np.abs(kernel) < np.quantile(np.abs(kernel), sparsity), 0, kernel)
        layer.set_weights(weights)
    return copy


def digits() -> tuple[Any, Any]:
    from sweep.config import parse_study_config
    from sweep.data.datasets import load_dataset
    from sweep.modeling.training import train

    config = parse_study_config({"name": "t", "model": {"builder": "cnn"}, "train": {"epochs": 3, "batch_size": 64}})
    data = load_dataset(config.data)
    return train(data, config, 0).model, data


def mobilenet() -> tuple[Any, Any]:
    from sweep._tf import keras
    from sweep.data.splits import Dataset, Split

    rng = np.random.default_rng(0)

    def split(size: int) -> Split:
        return Split.arrays(rng.uniform(0, 1, (size, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, size))

    model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10)
    return model, Dataset("random", split(1150), split(287), split(360), 10, (32, 32, 3))


MODELS: dict[str, Callable[[], tuple[Any, Any]]] = {"digits CNN": digits, "MobileNetV2": mobilenet}


def files(model: Any, data: Any) -> dict[str, bytes]:
    from sweep.modeling.tflite import sparse_encoded, tflite_files

    flat, dense = tflite_files(model, data.train)
    assert flat is not None and dense is not None
    return {"float": flat, "int8 dense": dense, "int8 sparse": sparse_encoded(dense)}


def seconds(action: Callable[[], object]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def summary(values: list[float]) -> dict[str, float]:
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "min": min(values), "max": max(values),
            "n": len(values)}


# --- 1. accuracy -------------------------------------------------------------------------

def one_at_a_time(runner: Any, x: np.ndarray) -> np.ndarray:
    """Before: each example fed, invoked and read alone (the outputs, for the comparison)."""
    outputs = []
    for example in x:
        runner.predict(example)
        outputs.append(runner.interpreter.get_tensor(runner.output["index"])[0].copy())
    return np.stack(outputs)


def batched(runner: Any, x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([runner.raw_outputs(x[i:i + size]) for i in range(0, len(x), size)])


def accuracy_part(data: Any, content: bytes) -> dict[str, Any]:
    from sweep.modeling.tflite import Runner, _interpreter

    splits = (data.val.x, data.test.x)
    ways: dict[str, Callable[[Any, np.ndarray], np.ndarray]] = {"one at a time": one_at_a_time}
    ways.update({f"batches of {size}": functools.partial(batched, size=size) for size in BATCHES})
    reference = [one_at_a_time(Runner(content), x) for x in splits]
    times: dict[str, list[float]] = collections.defaultdict(list)
    equal = dict.fromkeys(ways, True)
    for round_ in range(ACCURACY_ROUNDS):
        for name in (list(ways) if round_ % 2 == 0 else list(reversed(ways))):
            runner = Runner(content)  # fresh: the second interpreter is made within the timing
            spent, outputs = seconds(lambda: [ways[name](runner, x) for x in splits])  # noqa: B023
            times[name].append(spent * 1e3)
            equal[name] &= all(np.array_equal(o, r) for o, r in zip(outputs, reference, strict=True))
    runner = Runner(content)
    xnnpack = runner.xnnpack
    costs = {
        "second interpreter, made (ms)": statistics.median(
            seconds(lambda: _interpreter(content, xnnpack))[0] * 1e3 for _ in range(ACCURACY_ROUNDS)),
        "resize 64 -> 31 and allocate (ms)": statistics.median(resize_cost(runner) for _ in range(ACCURACY_ROUNDS)),
    }
    return {"xnnpack": xnnpack, "examples": sum(len(x) for x in splits),
            "ms": {name: summary(values) for name, values in times.items()},
            "speed_up": {name: statistics.median(times["one at a time"]) / statistics.median(values)
                         for name, values in times.items()},
            "bit_identical_outputs": equal, **costs}


def resize_cost(runner: Any) -> float:
    """What a resize of an allocated batch interpreter costs (the last, partial batch)."""
    runner.raw_outputs(np.zeros((64, *runner.input["shape"][1:]), np.float32))
    spent, _ = seconds(lambda: runner._batch_interpreter(31))
    return spent * 1e3


# --- 2. convert --------------------------------------------------------------------------

def before_pair(model: Any, train: Any) -> tuple[bytes, bytes]:
    """Before: two `from_keras_model` conversions, as `float_tflite` and `int8_tflite` were."""
    import warnings

    from sweep._tf import quiet_native_stderr, tf
    from sweep.modeling.tflite import CALIBRATION_EXAMPLES, CALIBRATION_SEED

    calibration = train.sample_inputs(CALIBRATION_EXAMPLES, CALIBRATION_SEED)
    with quiet_native_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        flat = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([e[np.newaxis].astype(np.float32)] for e in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        return flat, converter.convert()


def convert_part(model: Any, data: Any, rounds: int) -> dict[str, Any]:
    from sweep.modeling.tflite import tflite_files

    ways = {"before: two from_keras_model": lambda: before_pair(model, data.train),
            "tflite_files (one SavedModel)": lambda: tflite_files(model, data.train, path="savedmodel")}
    times: dict[str, list[float]] = collections.defaultdict(list)
    outputs: dict[str, list[tuple[bytes, bytes]]] = collections.defaultdict(list)
    for round_ in range(rounds):
        for name in (list(ways) if round_ % 2 == 0 else list(reversed(ways))):
            spent, pair = seconds(ways[name])
            times[name].append(spent)
            outputs[name].append(pair)
    first = outputs["before: two from_keras_model"][0]
    return {"seconds": {name: summary(values) for name, values in times.items()},
            "saved": 1 - statistics.median(times["tflite_files (one SavedModel)"])
            / statistics.median(times["before: two from_keras_model"]),
            "bytes_identical": all(pair == first for pairs in outputs.values() for pair in pairs),
            "int8_phases_seconds": int8_phases(model, data.train, rounds)}


def int8_phases(model: Any, train: Any, rounds: int) -> dict[str, float]:
    """Where one `int8_tflite` conversion's time goes: the converter's steps, timed by
    wrapping them (medians over `rounds`)."""
    from tensorflow.lite.python import lite
    from tensorflow.python.saved_model import save

    from sweep.modeling.tflite import int8_tflite

    spent: collections.Counter[str] = collections.Counter()
    steps = [(save, "save", "Keras model saved as a SavedModel"),
             (lite.TFLiteConverterBaseV2, "_load_saved_model", "SavedModel graph loaded"),
             (lite, "_load", "SavedModel loaded as an object"),
             (lite, "_convert_graphdef", "MLIR conversion to a float file"),
             (lite._calibrator.Calibrator, "calibrate", "calibration (100 examples)"),
             (lite, "_mlir_quantize", "quantization")]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in steps]
    for owner, name, label in steps:
        setattr(owner, name, timed(getattr(owner, name), label, spent))
    try:
        laps: dict[str, list[float]] = collections.defaultdict(list)
        for _ in range(rounds):
            spent.clear()
            total, _ = seconds(lambda: int8_tflite(model, train))
            laps["total"].append(total)
            laps["rest"].append(total - sum(spent.values()))
            for _, _, label in steps:
                laps[label].append(spent[label])
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)
    return {label: statistics.median(values) for label, values in laps.items()}


def timed(function: Callable[..., Any], label: str, spent: collections.Counter[str]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - started
    return wrapper


# --- 3. latency --------------------------------------------------------------------------

def latency_part(contents: dict[str, bytes], example: np.ndarray) -> dict[str, Any]:
    from sweep.modeling.tflite import LatencyPlan, Runner

    plans = {name: LatencyPlan(warmup, runs, budget) for name, (warmup, runs, budget) in PLANS.items()}
    medians: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    p90s: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    costs: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    shuffle = random.Random(0)
    for _ in range(REPEATS):
        for kind, content in contents.items():
            order = list(plans)
            shuffle.shuffle(order)
            for name in order:
                runner = Runner(content)
                spent, (median, p90) = seconds(lambda: runner.latency_ms(example, plans[name]))  # noqa: B023
                medians[kind, name].append(median)
                p90s[kind, name].append(p90)
                costs[kind, name].append(spent * 1e3)
    reference = "200 runs (reference)"
    result: dict[str, Any] = {}
    for kind in contents:
        center = statistics.median(medians[kind, reference])
        p90_center = statistics.median(p90s[kind, reference])
        result[kind] = {name: {
            "median_ms": statistics.median(medians[kind, name]),
            "max_over_min": max(medians[kind, name]) / min(medians[kind, name]),
            "iqr_over_median": float(np.subtract(*np.percentile(medians[kind, name], [75, 25]))
                                     / statistics.median(medians[kind, name])),
            "worst_off_reference": max(abs(m / center - 1) for m in medians[kind, name]),
            "median_off_reference": statistics.median(medians[kind, name]) / center - 1,
            "p90_worst_off_reference": max(abs(p / p90_center - 1) for p in p90s[kind, name]),
            "cost_ms": statistics.median(costs[kind, name]),
            "medians_ms": medians[kind, name],
        } for name in plans}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("accuracy", "convert", "latency"), action="append",
                        help="run only this part (repeatable); all three by default")
    parts = parser.parse_args().part or ["accuracy", "convert", "latency"]
    report: dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "zeroed": ZEROED}
    for name, make in MODELS.items():
        print(f"{name} ...", file=sys.stderr, flush=True)
        model, data = make()
        model = zeroed(model, ZEROED)
        contents = files(model, data)
        entry: dict[str, Any] = {"bytes": {kind: len(content) for kind, content in contents.items()}}
        if "accuracy" in parts:
            entry["accuracy"] = {kind: accuracy_part(data, content) for kind, content in contents.items()}
        if "convert" in parts:
            entry["convert"] = convert_part(model, data, CONVERT_ROUNDS[name])
        if "latency" in parts:
            entry["latency"] = latency_part(contents, data.test.first_inputs(1)[0])
        report[name] = entry
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
