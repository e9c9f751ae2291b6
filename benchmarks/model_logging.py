"""What `sweep rerun` spends logging its Keras model as an MLflow model: MLflow's requirement
inference (a subprocess that imports TensorFlow and loads the model again) against the pinned
list `sweep.stores.tracking.keras_model_requirements` gives. Interleaved rounds on the
quickstart's MLP and a MobileNetV2 (alpha 0.35, 32x32); prints JSON with the medians and the
requirements each way, so they can be compared:

    .venv/bin/python benchmarks/model_logging.py > benchmarks/model_logging.json
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import mlflow
import mlflow.tensorflow

from sweep._tf import keras
from sweep.modeling.models import mlp
from sweep.stores.tracking import keras_model_requirements

ROUNDS = 5


def logged(model: keras.Model, example: np.ndarray, requirements: list[str] | None) -> tuple[float, list[str]]:
    """Seconds `log_model` took, and the requirements.txt it wrote."""
    with mlflow.start_run(), contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        info = mlflow.tensorflow.log_model(model, name="model", input_example=example, pip_requirements=requirements)
        seconds = time.perf_counter() - start
    folder = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    return seconds, sorted((folder / "requirements.txt").read_text().split())


def main() -> None:
    models = {
        "quickstart_mlp": (mlp((8, 8, 1), 10), np.zeros((1, 8, 8, 1), np.float32)),
        "mobilenet_v2": (keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10),
                         np.zeros((1, 32, 32, 3), np.float32)),
    }
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # MLflow's artifacts: ./mlruns
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        for name, (model, example) in models.items():
            times: dict[str, list[float]] = {"inferred": [], "pinned": []}
            requirements: dict[str, list[str]] = {}
            for _ in range(ROUNDS):
                for way, way_times in times.items():
                    pinned = keras_model_requirements(model) if way == "pinned" else None
                    seconds, requirements[way] = logged(model, example, pinned)
                    way_times.append(round(seconds, 3))
            report[name] = {"seconds": times, "median_seconds": {w: statistics.median(t) for w, t in times.items()},
                            "requirements": requirements}
            print(name, report[name]["median_seconds"], file=sys.stderr)
    json.dump({"rounds": ROUNDS, "models": report}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
