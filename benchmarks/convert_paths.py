"""Where the int8 conversion of a MobileNetV2 spends its time: `TFLiteConverter.from_keras_model`
saves the Keras model as a SavedModel and loads it back before converting (`export.tflite_converter:
savedmodel`, what studies stored before that key keep), while its older path, tracing and
freezing the model's call (taken when the SavedModel step fails), skips that (`freeze`, the
default). Prints a line per conversion, alternating the two paths, then what signing the freeze
path's files costs (`sweep.modeling.tflite.with_serving_signature`):

    .venv/bin/python benchmarks/convert_paths.py

The freeze path is forced by replacing the converter's private SavedModel step with one that
fails, as TensorFlow's own fallback does (benchmarks/README.md, section 13).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from sweep._tf import keras, tf

MODEL = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10)
CALIBRATION = np.random.default_rng(0).random((100, 32, 32, 3)).astype(np.float32)


def representative() -> Iterator[list[np.ndarray]]:
    for example in CALIBRATION:
        yield [example[np.newaxis]]


def int8_file(freeze: bool) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(MODEL)
    if freeze:
        converter._convert_keras_to_saved_model = lambda output_dir: (None, None, None)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def main() -> None:
    from sweep.modeling.tflite import with_serving_signature

    for freeze in (False, True) * 3:
        started = time.perf_counter()
        content = int8_file(freeze)
        print(f"{'freeze' if freeze else 'savedmodel':<10} {time.perf_counter() - started:6.2f} s {len(content)} bytes",
              flush=True)
    for _ in range(3):
        started = time.perf_counter()
        signed = with_serving_signature(content, MODEL)
        print(f"{'signing':<10} {time.perf_counter() - started:6.3f} s {len(signed)} bytes", flush=True)


if __name__ == "__main__":
    main()
