"""What a trial spends measuring, against its training, on a real architecture: Keras
Applications' MobileNetV2 (alpha 0.35, 32x32x3, 423k parameters) as a `model.pretrained`,
fine-tuned for 1 epoch per trial on the digits (1,150 training images, upsampled to 32x32 RGB).
Writes JSON to stdout:

    .venv/bin/python benchmarks/trial_cost.py > benchmarks/trial_cost.json

The model is first trained dense (BatchNorm momentum 0.9: Keras' 0.999 leaves the moving
statistics at their start on so little data) and saved. Then, for each round and each
objective set (`[accuracy, compressed_size]`, `[int8_accuracy, int8_size]`), in turn, a
`sweep run` of `--trials` trials in a fresh folder. Per trial: training (`timings["train"]`)
and measurement (`evaluate`, `h5_size`, `tflite_size`, `latency`, `int8_convert`,
`int8_evaluate`), and keeping the weights (`keep_weights`); per front trial measured after
the run, the seconds `sweep run` printed for it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import yaml

HERE = Path(__file__).resolve().parent
MEASURING = ("evaluate", "h5_size", "tflite_size", "latency", "int8_convert", "int8_evaluate")
OBJECTIVES = {"accuracy": ["accuracy", "compressed_size"], "int8": ["int8_accuracy", "int8_size"]}
LOADER = '''
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load():
    digits = load_digits()
    images = np.repeat(digits.images[..., np.newaxis] / 16.0, 3, axis=-1).astype(np.float32)
    images = tf.image.resize(images, (32, 32)).numpy()
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.2, stratify=y_train, random_state=0)
    stream = lambda x, y: tf.data.Dataset.from_tensor_slices((x, y))
    return {"train": stream(x_train, y_train), "validation": stream(x_val, y_val), "test": stream(x_test, y_test)}
'''
TRAIN = '''
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tf_keras as keras
from loader import load

keras.utils.set_random_seed(0)
data = load()
x, y = (np.stack(a) for a in zip(*data["train"].as_numpy_iterator()))
model = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10)
for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = 0.9
model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x, y, batch_size=32, epochs=8, verbose=0)
model.save("model.keras")
print(len(x), model.count_params())
'''


def study(work: Path, name: str, objectives: list[str], trials: int, converter: str) -> Path:
    folder = work / name
    folder.mkdir()
    for file in ("loader.py", "model.keras"):
        os.symlink(work / file, folder / file)
    (folder / "study.yaml").write_text(yaml.safe_dump({
        "name": name, "seed": 0, "n_trials": trials,
        "data": {"loader": "loader.py:load"},
        "model": {"pretrained": "model.keras"},
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 0.0005},
        "search": {"schedule": ["polynomial", "constant"], "final_sparsity": [0.3, 0.8]},
        "objectives": objectives,
        "export": {"tflite_converter": converter},
    }, sort_keys=False))
    return folder


def run(folder: Path, name: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    result = subprocess.run([sys.executable, "-m", "sweep", "run", "study.yaml"], cwd=folder, env=env,
                            capture_output=True, text=True, check=True)
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'sweep.db'}").trials
    timings = [t.user_attrs["timings"] for t in trials if t.state.name == "COMPLETE"]
    later = [float(s) for s in re.findall(r"^  trial \d+: .* \((\d+\.\d+) s\)$", result.stderr, re.MULTILINE)]
    weights = [p.stat().st_size for p in folder.glob("mlruns/*/*/artifacts/trial/weights.h5")]
    return {
        "train": [t["train"] for t in timings],
        "measure": [sum(t.get(k, 0.0) for k in MEASURING) for t in timings],
        "phases": {k: [t.get(k, 0.0) for t in timings] for k in (*MEASURING, "keep_weights")},
        "later": later, "weights_bytes": weights,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--only", choices=list(OBJECTIVES), help="one objective set")
    parser.add_argument("--tflite-converter", choices=["freeze", "savedmodel"], default="freeze",
                        help="the studies' export.tflite_converter")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trial-cost-"))
    (work / "loader.py").write_text(LOADER)
    trained = subprocess.run([sys.executable, "-c", TRAIN], cwd=work, capture_output=True, text=True, check=True)
    examples, parameters = trained.stdout.split()
    runs: dict[str, list[dict]] = {key: [] for key in OBJECTIVES if args.only in (None, key)}
    for round_ in range(args.rounds):
        for key, done in runs.items():
            name = f"{key}-{round_}"
            done.append(run(study(work, name, OBJECTIVES[key], args.trials, args.tflite_converter), name))
    summary = {}
    for key, rounds in runs.items():
        train = [v for r in rounds for v in r["train"]]
        measure = [v for r in rounds for v in r["measure"]]
        shares = [m / t for m, t in zip(measure, train, strict=True)]
        summary[key] = {
            "objectives": OBJECTIVES[key], "trials": len(train),
            "train_median": statistics.median(train), "measure_median": statistics.median(measure),
            "measure_share_median": statistics.median(shares),
            "phase_medians": {k: statistics.median(v for r in rounds for v in r["phases"][k])
                              for k in rounds[0]["phases"]},
            "later_per_front_trial_median": statistics.median(later) if (later := [v for r in rounds for v in r["later"]])
            else None,
            "weights_bytes": max(v for r in rounds for v in r["weights_bytes"]),
        }
    json.dump({"training_examples": int(examples), "parameters": int(parameters), "summary": summary, "raw": runs},
              sys.stdout, indent=2)


if __name__ == "__main__":
    main()
