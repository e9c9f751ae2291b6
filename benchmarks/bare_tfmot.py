"""The hand-written baseline: what a user would write with tfmot alone, no sweep.

Trains the given pruning configurations one after another in one process, exactly as
the tfmot pruning tutorial does (prune_low_magnitude, UpdatePruningStep, strip_pruning,
save H5 without optimizer and gzip it), on the same digits split with the same model,
epochs and seeds, and prints one JSON line per trial with its wall time and metrics:
what the quickstart's objectives (accuracy, compressed size) need, as a sweep trial
measures it (a TFLite conversion only for the front, after the study).

    python benchmarks/bare_tfmot.py configs.json [--epochs N] > results.jsonl

`configs.json` is a list of {"schedule", "final_sparsity", "initial_sparsity", "power",
"begin_step", "end_step", "frequency", "weight_decay", "seed"} with absolute steps
(benchmarks/run.py takes them from a `sweep run`).
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

EPOCHS, BATCH, LEARNING_RATE = 8, 32, 0.001


def digits() -> tuple[np.ndarray, ...]:
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.images / 16.0, data.target, test_size=0.2, stratify=data.target, random_state=0
    )
    x_train, x_test = x_train[..., None].astype("float32"), x_test[..., None].astype("float32")
    order = np.random.default_rng(0).permutation(len(x_train))
    n_val = round(len(x_train) * 0.2)
    val, train = order[:n_val], order[n_val:]
    return x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test


def cnn() -> keras.Model:
    return keras.Sequential([
        keras.layers.Input((8, 8, 1), name="input"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="dense1"),
        keras.layers.Dense(10, name="logits"),
    ], name="cnn")


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(model(x, training=False), -1) == y))


def one_trial(config: dict, data: tuple[np.ndarray, ...]) -> dict:
    x_train, y_train, x_val, y_val, x_test, y_test = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(config["seed"])
    if config["schedule"] == "polynomial":
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            config["initial_sparsity"], config["final_sparsity"], config["begin_step"],
            config["end_step"], power=config["power"], frequency=config["frequency"])
    else:
        schedule = tfmot.sparsity.keras.ConstantSparsity(
            config["final_sparsity"], config["begin_step"], config["end_step"], config["frequency"])
    model = tfmot.sparsity.keras.prune_low_magnitude(cnn(), pruning_schedule=schedule)
    model.compile(keras.optimizers.Adam(LEARNING_RATE, weight_decay=config["weight_decay"]),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=BATCH, epochs=EPOCHS, validation_data=(x_val, y_val),
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], verbose=0)
    stripped = tfmot.sparsity.keras.strip_pruning(model)
    kernels = [layer.kernel.numpy() for layer in stripped.layers if hasattr(layer, "kernel")]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.h5")
        keras.models.save_model(stripped, path, include_optimizer=False)
        h5 = Path(path).read_bytes()
    return {
        "val_accuracy": accuracy(stripped, x_val, y_val),
        "test_accuracy": accuracy(stripped, x_test, y_test),
        "sparsity": float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels)),
        "compressed_bytes": len(gzip.compress(h5, 9, mtime=0)),
    }


def resident_megabytes() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    global EPOCHS
    if "--epochs" in sys.argv:
        EPOCHS = int(sys.argv[sys.argv.index("--epochs") + 1])
    tf.config.experimental.enable_op_determinism()
    configs = json.loads(Path(sys.argv[1]).read_text())
    data = digits()
    for config in configs:
        started = time.perf_counter()
        metrics = one_trial(config, data)
        print(json.dumps({"seconds": time.perf_counter() - started, **metrics, "rss_mb": resident_megabytes()}),
              flush=True)


if __name__ == "__main__":
    main()
