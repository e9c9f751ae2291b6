"""The files sweep ships run where users deploy them: `model.tflite` and `model_int8.tflite`
of a pruned trial load, allocate and invoke in a default LiteRT interpreter
(`ai_edge_litert`, XNNPack on) and in `tf.lite.Interpreter`, and give the accuracy the
trial logged. The models: the quickstart CNN, the MLP, the studies/pretrained example and
a MobileNetV2 (Keras Applications, alpha 0.35) at 32x32x3, under several sparsity patterns."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from sweep.config import StudyConfig, parse_study_config

from conftest import REPO, interpreter_accuracy

pytestmark = pytest.mark.slow  # a trial's training and measurement per model

MOBILENET = '''
import tf_keras as keras


def build(input_shape, num_classes):
    """Keras Applications' MobileNetV2 (alpha 0.35, untrained) on digits upscaled to 32x32x3."""
    inputs = keras.layers.Input(input_shape, name="input")
    x = keras.layers.Resizing(32, 32, name="upscale")(inputs)
    x = keras.layers.Concatenate(name="rgb")([x, x, x])
    base = keras.applications.MobileNetV2(input_tensor=x, alpha=0.35, weights=None, include_top=False,
                                          pooling="avg")
    for layer in base.layers:  # 0.999 leaves the moving statistics untrained on a small data set
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(base.output))
'''


def study(folder: Path, name: str) -> StudyConfig:
    """A one-epoch study of model `name` that prunes to 80% (a pattern where one applies)."""
    search: dict[str, Any] = {"schedule": "constant", "final_sparsity": 0.8, "begin_step": 0.0, "end_step": 0.5}
    model: dict[str, Any] = {}
    data: dict[str, Any] = {}
    if name in ("mlp", "cnn"):
        model["builder"] = name
        search["pattern"] = {"mlp": "4x1", "cnn": "2:4"}[name]  # blocks: Dense only; M:N: Dense and Conv2D
    elif name == "pretrained":
        for file in ("loader.py", "train_model.py"):
            shutil.copy(REPO / "studies" / "pretrained" / file, folder)
        import importlib.util

        spec = importlib.util.spec_from_file_location("train_model", folder / "train_model.py")
        assert spec and spec.loader
        train_model = importlib.util.module_from_spec(spec)
        import sys

        sys.path.insert(0, str(folder))  # train_model imports its loader
        try:
            spec.loader.exec_module(train_model)
        finally:
            sys.path.remove(str(folder))
        train_model.build().save(folder / "model.keras")
        model.update(pretrained="model.keras", prune={"exclude": "^logits$"})
        data["loader"] = "loader.py:load"
    else:
        (folder / "mobilenet.py").write_text(MOBILENET)
        model["builder"] = "mobilenet.py:build"
    return parse_study_config({"name": name, "model": model, "data": data, "search": search,
                               "train": {"epochs": 1, "batch_size": 64}}, base_dir=folder)


def trial_files(config: StudyConfig) -> tuple[dict[str, float], dict[str, bytes], Any]:
    """One trial of `config` through the code a trial runs: its metrics and exported files."""
    from sweep.data.datasets import load_dataset
    from sweep.modeling.metrics import ALL_GROUPS
    from sweep.modeling.train_and_measure import train_and_measure
    from sweep.search.trial_plan import trial_plan

    dataset = load_dataset(config.data)
    trial = optuna.create_study(directions=config.directions).ask()
    params, plan = trial_plan(trial, config.search, dataset.total_steps(config.train))
    files: dict[str, bytes] = {}
    evaluated = train_and_measure(dataset, config, 0, groups=ALL_GROUPS, params=params, plan=plan, files=files)
    return evaluated.metrics, files, dataset


def default_interpreters(content: bytes) -> dict[str, Any]:
    """The file in the two interpreters a deployment guide names, as they come."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreters = {"ai_edge_litert": Interpreter(model_content=content),
                        "tf.lite": tf.lite.Interpreter(model_content=content)}
    for interpreter in interpreters.values():
        interpreter.allocate_tensors()  # raised "failed to delegate FULLY_CONNECTED" on a sparse int8 file
    return interpreters


@pytest.mark.parametrize("name", ["cnn", "mlp", "pretrained", "mobilenet_v2"])
def test_both_files_of_a_pruned_trial_run_in_default_interpreters_with_the_accuracy_it_logged(
    name: str, tmp_path: Path
) -> None:
    from sweep.study.rerun import TFLITE_ACCURACY_TOLERANCE

    metrics, files, dataset = trial_files(study(tmp_path, name))
    assert metrics["sparsity"] > 0.45, metrics["sparsity"]  # pruned (2:4 gives 0.5)
    assert metrics["int8_xnnpack"] == 1.0 and metrics["int8_bytes"] == len(files["model_int8.tflite"])
    for file in ("model.tflite", "model_int8.tflite"):
        for runtime, interpreter in default_interpreters(files[file]).items():
            for split in ("val", "test"):
                x, y = (np.concatenate(arrays) for arrays in zip(*getattr(dataset, split).batches(256), strict=True))
                measured = interpreter_accuracy(interpreter, x, y)
                if file == "model_int8.tflite":  # measured by running this very file
                    assert measured == metrics[f"int8_{split}_accuracy"], (runtime, split)
                else:  # float kernels round unlike Keras: a near-tie may flip
                    assert abs(measured - metrics[f"{split}_accuracy"]) <= TFLITE_ACCURACY_TOLERANCE, \
                        (runtime, split, measured, metrics[f"{split}_accuracy"])
