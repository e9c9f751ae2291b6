"""Measurement on models whose zeros and predictions we set by hand."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from sweep._tf import keras
from sweep.data.splits import Dataset, Split
from sweep.modeling.measure import accuracy, gzip_size, keras_h5_bytes, measure, sparsity
from sweep.modeling.metrics import ALL_GROUPS
from sweep.modeling.tflite import float_tflite

pytestmark = pytest.mark.integration  # TensorFlow in this process


def model_with_zeros(zeros_dense1: int, zeros_logits: int) -> keras.Model:
    keras.backend.clear_session()  # layer names restart, as before every trial
    model = keras.Sequential([
        keras.layers.Input((4,)),
        keras.layers.Dense(10, name="dense1"),  # kernel 4x10 = 40 weights
        keras.layers.Dense(3, name="logits"),  # kernel 10x3 = 30 weights
    ], name="known_zeros")
    for layer, zeros in ((model.layers[0], zeros_dense1), (model.layers[1], zeros_logits)):
        kernel, bias = layer.get_weights()
        flat = np.random.default_rng(0).uniform(0.1, 1.0, kernel.size).astype(np.float32)
        flat[:zeros] = 0.0
        layer.set_weights([flat.reshape(kernel.shape), np.ones_like(bias)])  # biases never count
    return model


def test_sparsity_counts_zeros_of_prunable_kernels_only() -> None:
    metrics = sparsity(model_with_zeros(10, 15))
    assert metrics["sparsity/dense1"] == pytest.approx(10 / 40)
    assert metrics["sparsity/logits"] == pytest.approx(15 / 30)
    assert metrics["sparsity"] == pytest.approx(25 / 70)


def test_conv_kernels_count_and_pooling_layers_do_not() -> None:
    model = keras.Sequential([
        keras.layers.Input((6, 6, 1)),
        keras.layers.Conv2D(2, 3, name="conv", kernel_initializer="zeros"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(2, name="out", kernel_initializer="ones"),
    ])
    metrics = sparsity(model)
    assert set(metrics) == {"sparsity", "sparsity/conv", "sparsity/out"}
    assert metrics["sparsity/conv"] == 1.0 and metrics["sparsity/out"] == 0.0
    assert metrics["sparsity"] == pytest.approx(18 / (18 + 8 * 2))


def test_more_zeros_compress_smaller() -> None:
    sizes = [gzip_size(keras_h5_bytes(model_with_zeros(z, z))) for z in (0, 20, 30)]
    assert sizes[0] > sizes[1] > sizes[2]


def test_gzip_size_is_gzip_level_9_and_deterministic() -> None:
    data = keras_h5_bytes(model_with_zeros(5, 5))
    assert gzip_size(data) == len(gzip.compress(data, compresslevel=9, mtime=0))
    assert keras_h5_bytes(model_with_zeros(5, 5)) == data  # same weights, same file


def test_accuracy_on_known_predictions() -> None:
    model = keras.Sequential([keras.layers.Input((3,)), keras.layers.Lambda(lambda x: x)])
    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    assert accuracy(model, Split.arrays(x, np.array([0, 1, 2, 1])), batch_size=3) == 0.75


def test_measure_reports_every_metric_of_a_model() -> None:
    model = model_with_zeros(20, 0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(10, 4)).astype(np.float32), rng.integers(0, 3, 10)
    split = Split.arrays(x, y)
    data = Dataset("t", split, split, split, num_classes=3, input_shape=(4,))
    metrics = measure(model, data, ALL_GROUPS)
    assert metrics["params"] == 40 + 10 + 30 + 3
    assert metrics["nonzero_params"] == 83 - 20
    assert metrics["macs"] == 40 + 30  # the kernels' sizes: zeros are multiplied all the same
    assert (metrics["channels/dense1"], metrics["channels/logits"]) == (10, 3)
    assert metrics["tflite_bytes"] == len(float_tflite(model)) > 0
    assert 0 < metrics["tflite_gzip_bytes"] < metrics["tflite_bytes"]
    assert metrics["val_accuracy"] == metrics["test_accuracy"] == accuracy(model, split)


def test_a_pruned_model_rebuilt_from_its_saved_weights_measures_and_converts_the_same(tmp_path: Path) -> None:
    """What a front trial's deploy metrics, measured after it, rest on (`study.front_metrics`):
    the same files, byte for byte, and the same metrics (latency aside: a timing)."""
    import optuna

    from sweep.config import StudyConfig
    from sweep.data.datasets import load_dataset
    from sweep.modeling.models import rebuilt_model
    from sweep.modeling.training import train
    from sweep.search.trial_plan import trial_plan

    config = StudyConfig.model_validate({"name": "saved", "model": {"builder": "cnn"}, "train": {"epochs": 1}})
    dataset = load_dataset(config.data)
    params, plan = trial_plan(optuna.create_study(directions=["maximize", "minimize"]).ask(), config.search,
                              dataset.total_steps(config.train))
    trained = train(dataset, config, 3, plan=plan, structure=params.structure).model
    files: dict[str, bytes] = {}
    metrics = measure(trained, dataset, ALL_GROUPS, files=files)
    trained.save_weights(tmp_path / "weights.h5")

    rebuilt = rebuilt_model(config.model, dataset.input_shape, dataset.num_classes, tmp_path / "weights.h5")
    files_again: dict[str, bytes] = {}
    again = measure(rebuilt, dataset, ALL_GROUPS, files=files_again)
    assert 0 < metrics["sparsity"] and files_again == files
    assert {k: v for k, v in again.items() if "latency" not in k} == \
        {k: v for k, v in metrics.items() if "latency" not in k}
