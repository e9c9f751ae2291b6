"""What ships: the model as TensorFlow Lite files, float32 and full-integer int8, run with
LiteRT's interpreter (`ai_edge_litert`; `tf.lite.Interpreter` is deprecated since TF 2.20).

The int8 file is the one a microcontroller or phone build deploys: int8 weights and
activations, int8 input and output, calibrated on `CALIBRATION_EXAMPLES` training
examples drawn with a fixed seed, and stored dense unless the study asks for the converter's
sparse encoding (`shipped`): LiteRT's default XNNPack delegate refuses a sparse int8
fully-connected layer, so a default interpreter cannot load such a file. Its accuracy is
measured by running the file on every validation and test example. Latency is the median
(and 90th percentile) wall time of one `invoke` on one example, one thread, with LiteRT's
default XNNPack delegate where it takes the file (`Runner`), after a warm-up.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from sweep._tf import keras, mlir_sparsify, quiet_native_stderr, tf
from sweep.data.splits import Split

if TYPE_CHECKING:
    from sweep.config import Int8Storage

CALIBRATION_EXAMPLES = 100
CALIBRATION_SEED = 0
WARMUP_RUNS = 10
LATENCY_RUNS = (20, 200)  # at least, at most
LATENCY_BUDGET_SECONDS = 0.5  # stop after the minimum once this is spent (large models)


def float_tflite(model: keras.Model) -> bytes:
    """The model as a float32 TFLite flatbuffer (no quantization)."""
    with quiet_native_stderr():
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def int8_tflite(model: keras.Model, train: Split) -> bytes:
    """The model as a full-integer int8 TFLite flatbuffer, calibrated on training examples,
    every tensor stored dense."""
    calibration = train.sample_inputs(CALIBRATION_EXAMPLES, CALIBRATION_SEED)

    def representative() -> Iterator[list[np.ndarray]]:
        for example in calibration:
            yield [example[np.newaxis].astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), quiet_native_stderr():
        warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs were expected": int8 input is the point
        return converter.convert()


def sparse_encoded(content: bytes) -> bytes:
    """`content` with its pruned tensors stored sparse: the converter's EXPERIMENTAL_SPARSITY,
    which is this same pass over the finished file."""
    with quiet_native_stderr():
        return mlir_sparsify(content)


def shipped(dense: bytes, encoded: bytes, storage: Int8Storage) -> bytes:
    """The int8 file to ship, stored as `export.int8_storage` says: dense (every interpreter
    runs it), sparse (`encoded`), or the smaller of the two. A sparse file runs on LiteRT's
    built-in kernels only (slower: `int8_latency_ms` measures it so), and a default
    interpreter cannot load it (`sweep rerun` says how)."""
    if storage == "smallest":
        return encoded if len(encoded) < len(dense) else dense
    return encoded if storage == "sparse" else dense


class Runner:
    """One TFLite model in LiteRT's interpreter, one thread, fed one example at a time.

    With LiteRT's default XNNPack delegate where it takes the file; XNNPack refuses a
    sparse-encoded int8 fully-connected layer, and such a file runs on the built-in
    kernels, as it would on a device (`xnnpack` says which)."""

    def __init__(self, content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.xnnpack = True
        with quiet_native_stderr():
            try:
                self.interpreter = Interpreter(model_content=content, num_threads=1)
                self.interpreter.allocate_tensors()
            except RuntimeError as error:
                if "delegate" not in str(error).lower():
                    raise
                self.xnnpack = False
                self.interpreter = Interpreter(model_content=content, num_threads=1,
                                               experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def _feed(self, example: np.ndarray) -> None:
        if self.input["dtype"] == np.int8:  # quantize as the device would
            scale, zero_point = self.input["quantization"]
            example = np.clip(np.round(example / scale + zero_point), -128, 127)
        self.interpreter.set_tensor(self.input["index"], example[np.newaxis].astype(self.input["dtype"]))

    def predict(self, example: np.ndarray) -> int:
        """The class the model picks for one example (int8 outputs keep the float order)."""
        self._feed(example)
        self.interpreter.invoke()
        return int(np.argmax(self.interpreter.get_tensor(self.output["index"])[0]))

    def accuracy(self, split: Split) -> float:
        correct = 0
        for x, y in split.batches(256):
            correct += sum(self.predict(example) == label for example, label in zip(x, y, strict=True))
        return correct / split.size

    def latency_ms(self, example: np.ndarray) -> tuple[float, float]:
        """Median and 90th percentile of one invoke, in milliseconds."""
        self._feed(example)
        for _ in range(WARMUP_RUNS):
            self.interpreter.invoke()
        times: list[float] = []
        deadline = time.perf_counter() + LATENCY_BUDGET_SECONDS
        while len(times) < LATENCY_RUNS[1] and (len(times) < LATENCY_RUNS[0] or time.perf_counter() < deadline):
            started = time.perf_counter_ns()
            self.interpreter.invoke()
            times.append((time.perf_counter_ns() - started) / 1e6)
        return statistics.median(times), float(np.percentile(times, 90))
