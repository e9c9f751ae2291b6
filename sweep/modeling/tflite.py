"""What ships: the model as TensorFlow Lite files, float32 and full-integer int8, run with
LiteRT's interpreter (`ai_edge_litert`; `tf.lite.Interpreter` is deprecated since TF 2.20).

The int8 file is the one a microcontroller or phone build deploys: int8 weights and
activations, int8 input and output, calibrated on `CALIBRATION_EXAMPLES` training
examples drawn with a fixed seed, and stored dense unless the study asks for the converter's
sparse encoding (`shipped`): LiteRT's default XNNPack delegate refuses a sparse int8
fully-connected layer, so a default interpreter cannot load such a file.

Both files come from `TFLiteConverter.from_keras_model`, along `export.tflite_converter`:
`freeze` (the default) traces and freezes the model's call, the converter's own fallback, and
signs the file as the other path does; `savedmodel`, the only path before that key existed,
first saves the model as a SavedModel and loads it back, most of a conversion's time, which
`converting` does once for both files (the same bytes as two separate conversions).

A file's accuracy is measured by running it on every validation and test example, in
batches of `ACCURACY_BATCH` (fewer for large inputs; one invoke each, in a second
interpreter): the same outputs, bit for bit, as one example per invoke. Latency is the
median (and 90th percentile) wall time of one `invoke` on one example, one thread, with
LiteRT's default XNNPack delegate where it takes the file (`Runner`): 20 runs after 10
warm-up runs (`LATENCY`).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sweep._tf import (
    keras,
    mlir_sparsify,
    quiet_native_stderr,
    tf,
    tflite_flatbuffers,
    tflite_schema,
)
from sweep.data.splits import Split

if TYPE_CHECKING:
    from sweep.config import Int8Storage, TfliteConverter

CALIBRATION_EXAMPLES = 100
CALIBRATION_SEED = 0
ACCURACY_BATCH = 64  # examples per invoke when measuring accuracy (benchmarks/README.md, section 12)
ACCURACY_BATCH_BYTES = 2**20  # of input per invoke at most: activations, held for the whole batch, grow with it


@dataclass(frozen=True)
class LatencyPlan:
    """How `Runner.latency_ms` times a file: `warmup` invokes, then at least `runs[0]` and
    at most `runs[1]` timed ones, stopping after the minimum once `budget_seconds` is spent."""

    warmup: int
    runs: tuple[int, int]
    budget_seconds: float


# 20 runs after 10 warm-up runs: as steady a median as 200 runs on this VM (benchmarks/README.md,
# section 12); fewer warm-up runs bias it.
LATENCY = LatencyPlan(warmup=10, runs=(20, 20), budget_seconds=0.0)
_UNSET = object()


class Conversions:
    """One Keras model's TFLite files, converted as `TFLiteConverter.from_keras_model` does,
    along `path` (`export.tflite_converter`): `freeze` traces and freezes the model's call (the
    converter's own way when it cannot save a SavedModel), ten times faster on a MobileNetV2
    (benchmarks/README.md, section 13); `savedmodel` first saves the model as a SavedModel and
    loads it back, a step done once for all the files (`converting`). Both predict the same and
    carry the same serving signature (tests/test_tflite.py)."""

    def __init__(self, model: keras.Model, folder: str, path: TfliteConverter = "freeze") -> None:
        self.model = model
        self.path = path
        self._folder = folder
        self._saved: tuple[Any, dict[str, Any]] | None = None  # the step's result, and what it set on the converter

    def float_file(self) -> bytes:
        """The model as a float32 TFLite flatbuffer (no quantization)."""
        with quiet_native_stderr():
            return self._signed(self._converter().convert())

    def int8_file(self, train: Split) -> bytes:
        """The model as a full-integer int8 TFLite flatbuffer, calibrated on training
        examples, every tensor stored dense. Raises what the converter raises (ops it
        cannot quantize)."""
        calibration = train.sample_inputs(CALIBRATION_EXAMPLES, CALIBRATION_SEED)

        def representative() -> Iterator[list[np.ndarray]]:
            for example in calibration:
                yield [example[np.newaxis].astype(np.float32)]

        converter = self._converter()
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore", UserWarning)  # "Statistics for quantized inputs were expected": int8 input is the point
            return self._signed(converter.convert())

    def _signed(self, content: bytes) -> bytes:
        """The file with the serving signature the SavedModel path gives it (`savedmodel`'s
        files have it already)."""
        return content if self.path == "savedmodel" else with_serving_signature(content, self.model)

    def _converter(self) -> tf.lite.TFLiteConverter:
        """`from_keras_model`'s converter, whose private Keras-to-SavedModel step runs once
        into this object's folder (kept until both files are made) and is replayed after:
        its result, and the attributes it set on the converter."""
        converter = tf.lite.TFLiteConverter.from_keras_model(self.model)
        if self.path == "freeze":  # the SavedModel step "fails": the converter traces and freezes instead
            converter._convert_keras_to_saved_model = lambda output_dir: (None, None, None)
            return converter
        own: Callable[[str], Any] = converter._convert_keras_to_saved_model

        def saved_once(output_dir: str) -> Any:  # the converter's own temporary folder stays unused
            if self._saved is None:
                before = dict(vars(converter))
                result = own(self._folder)
                self._saved = result, {k: v for k, v in vars(converter).items() if before.get(k, _UNSET) is not v}
            result, attributes = self._saved
            vars(converter).update(attributes)
            return result

        converter._convert_keras_to_saved_model = saved_once
        return converter


def with_serving_signature(content: bytes, model: keras.Model) -> bytes:
    """`content`, a file of `model` converted without a signature, with the one the SavedModel
    path writes: `serving_default`, its inputs and outputs named after the model's, in order,
    so that `get_signature_runner()` runs it as it runs a SavedModel-path file."""
    flatbuffer = tflite_flatbuffers.read_model_from_bytearray(bytearray(content))
    graph = flatbuffer.subgraphs[0]
    signature = tflite_schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(name, index) for name, index in zip(model.input_names, graph.inputs, strict=True)]
    signature.outputs = [_tensor_map(name, index) for name, index in zip(model.output_names, graph.outputs, strict=True)]
    flatbuffer.signatureDefs = [signature]
    return bytes(tflite_flatbuffers.convert_object_to_bytearray(flatbuffer))


def _tensor_map(name: str, index: int) -> Any:
    mapping = tflite_schema.TensorMapT()
    mapping.name, mapping.tensorIndex = name, int(index)
    return mapping


@contextlib.contextmanager
def converting(model: keras.Model, path: TfliteConverter = "freeze") -> Iterator[Conversions]:
    """Convert `model` to TFLite files that share the work: within the block,
    `.float_file()` and `.int8_file(train)` give the bytes `float_tflite(model)` and
    `int8_tflite(model, train)` give, in any order, an int8 error raised to the caller.

        with converting(model) as convert:
            flatbuffer = convert.float_file()
            quantized = convert.int8_file(dataset.train)
    """
    with tempfile.TemporaryDirectory(prefix="sweep-savedmodel-") as folder:
        yield Conversions(model, folder, path)


def tflite_files(model: keras.Model, train: Split, float_file: bool = True, int8_file: bool = True,
                 path: TfliteConverter = "freeze") -> tuple[bytes | None, bytes | None]:
    """The float and int8 files asked for (None for the other), converted together
    (`converting`); an int8 conversion error raises, and the float file is lost with it."""
    with converting(model, path) as convert:
        flat = convert.float_file() if float_file else None
        return flat, convert.int8_file(train) if int8_file else None


def float_tflite(model: keras.Model, path: TfliteConverter = "freeze") -> bytes:
    """The model as a float32 TFLite flatbuffer (no quantization)."""
    with converting(model, path) as convert:
        return convert.float_file()


def int8_tflite(model: keras.Model, train: Split, path: TfliteConverter = "freeze") -> bytes:
    """The model as a full-integer int8 TFLite flatbuffer, calibrated on training examples,
    every tensor stored dense."""
    with converting(model, path) as convert:
        return convert.int8_file(train)


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


def _interpreter(content: bytes, xnnpack: bool) -> Any:
    """`content` in LiteRT's interpreter, one thread, tensors allocated; with the default
    XNNPack delegate or on the built-in kernels only."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    with quiet_native_stderr():
        interpreter = Interpreter(model_content=content, num_threads=1, **resolver)
        interpreter.allocate_tensors()
    return interpreter


class Runner:
    """One TFLite model in LiteRT's interpreter, one thread, timed and `predict`ing one example
    at a time; `accuracy` runs batches in a second interpreter, made on first use, so the
    first one keeps the shape a device runs.

    With LiteRT's default XNNPack delegate where it takes the file; XNNPack refuses a
    sparse-encoded int8 fully-connected layer, and such a file runs on the built-in
    kernels, as it would on a device (`xnnpack` says which)."""

    def __init__(self, content: bytes) -> None:
        self.content = content
        self.xnnpack = True
        try:
            self.interpreter = _interpreter(content, xnnpack=True)
        except RuntimeError as error:
            if "delegate" not in str(error).lower():
                raise
            self.xnnpack = False
            self.interpreter = _interpreter(content, xnnpack=False)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self._batched: Any = None  # the second interpreter, for `raw_outputs`
        self._batch_size = 0

    def _quantized(self, examples: np.ndarray) -> np.ndarray:
        """`examples` as the file's input type: int8 ones quantized as the device would."""
        if self.input["dtype"] == np.int8:
            scale, zero_point = self.input["quantization"]
            examples = np.clip(np.round(examples / scale + zero_point), -128, 127)
        return examples.astype(self.input["dtype"])

    def _feed(self, example: np.ndarray) -> None:
        self.interpreter.set_tensor(self.input["index"], self._quantized(example[np.newaxis]))

    def predict(self, example: np.ndarray) -> int:
        """The class the model picks for one example (int8 outputs keep the float order)."""
        self._feed(example)
        self.interpreter.invoke()
        return int(np.argmax(self.interpreter.get_tensor(self.output["index"])[0]))

    def raw_outputs(self, examples: np.ndarray) -> np.ndarray:
        """The file's raw outputs for a batch of examples, one invoke: bit for bit what one
        example per invoke gives. A file whose batch size is fixed runs them one by one."""
        if self.input["shape_signature"][0] != -1:
            return np.stack([self._one_output(example) for example in examples])
        interpreter = self._batch_interpreter(len(examples))
        interpreter.set_tensor(self.input["index"], self._quantized(examples))
        interpreter.invoke()
        return interpreter.get_tensor(self.output["index"])

    def predict_batch(self, examples: np.ndarray) -> np.ndarray:
        """`predict` for each of `examples`, in one invoke."""
        return np.argmax(self.raw_outputs(examples), axis=-1)

    def accuracy(self, split: Split) -> float:
        example_bytes = int(np.prod(self.input["shape"][1:])) * np.dtype(self.input["dtype"]).itemsize
        correct = 0
        for x, y in split.batches(max(1, min(ACCURACY_BATCH, ACCURACY_BATCH_BYTES // example_bytes))):
            correct += int(np.sum(self.predict_batch(x) == y))
        return correct / split.size

    def _one_output(self, example: np.ndarray) -> np.ndarray:
        self._feed(example)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0]

    def _batch_interpreter(self, size: int) -> Any:
        """The second interpreter, its input `size` examples long (resized only when the
        size changes: the last batch of a split)."""
        if self._batched is None:
            self._batched = _interpreter(self.content, self.xnnpack)
        if self._batch_size != size:
            self._batched.resize_tensor_input(self.input["index"], [size, *self.input["shape"][1:]])
            self._batched.allocate_tensors()
            self._batch_size = size
        return self._batched

    def latency_ms(self, example: np.ndarray, plan: LatencyPlan = LATENCY) -> tuple[float, float]:
        """Median and 90th percentile of one invoke, in milliseconds."""
        self._feed(example)
        for _ in range(plan.warmup):
            self.interpreter.invoke()
        times: list[float] = []
        least, most = plan.runs
        deadline = time.perf_counter() + plan.budget_seconds
        while len(times) < most and (len(times) < least or time.perf_counter() < deadline):
            started = time.perf_counter_ns()
            self.interpreter.invoke()
            times.append((time.perf_counter_ns() - started) / 1e6)
        return statistics.median(times), float(np.percentile(times, 90))
