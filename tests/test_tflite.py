"""What ships, with real conversions and LiteRT interpreter runs: the int8 file's accuracy,
its size against sparsity, and latency."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.config import parse_study_config
from sweep.data import load_dataset
from sweep.measure import measure
from sweep.tflite import Runner
from sweep.training import train

pytestmark = pytest.mark.integration  # TensorFlow in this process

CONFIG = parse_study_config({"name": "t", "model": {"builder": "cnn"}, "train": {"epochs": 3, "batch_size": 64}})
DATA = load_dataset(CONFIG.data)


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    return train(DATA, CONFIG, 0).model


def interpreter_accuracy(content: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """The int8 file run as a deployment would, written out here independently of sweep."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
    except RuntimeError:  # XNNPack refuses sparse int8 Dense layers: LiteRT's own kernels
        interpreter = Interpreter(model_content=content,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert source["dtype"] == target["dtype"] == np.int8  # int8 in, int8 out
    scale, zero_point = source["quantization"]
    predictions = []
    for example in x:
        interpreter.set_tensor(source["index"], np.clip(np.round(example / scale + zero_point), -128, 127)
                               .astype(np.int8)[None])
        interpreter.invoke()
        predictions.append(np.argmax(interpreter.get_tensor(target["index"])[0]))
    return float(np.mean(np.array(predictions) == y))


def test_the_int8_file_is_measured_as_it_runs(trained) -> None:  # type: ignore[no-untyped-def]
    files: dict[str, bytes] = {}
    metrics = measure(trained, DATA, files=files)
    quantized = files["model_int8.tflite"]
    assert metrics["int8_bytes"] == len(quantized) < metrics["tflite_bytes"] / 2  # int8 weights
    assert Runner(quantized).xnnpack == bool(metrics["int8_xnnpack"])
    assert metrics["int8_val_accuracy"] == interpreter_accuracy(quantized, DATA.val.x, DATA.val.y)
    assert metrics["int8_test_accuracy"] == interpreter_accuracy(quantized, DATA.test.x, DATA.test.y)
    assert abs(metrics["int8_val_accuracy"] - metrics["val_accuracy"]) < 0.05  # calibrated, not broken
    for name in ("latency", "int8_latency"):
        assert 0 < metrics[f"{name}_ms"] <= metrics[f"{name}_p90_ms"] < 50


def test_the_int8_file_shrinks_with_sparsity(trained) -> None:  # type: ignore[no-untyped-def]
    from sweep._tf import keras
    from sweep.measure import gzip_size
    from sweep.tflite import int8_tflite, sparse_encoded

    files = []
    for sparsity in (0.0, 0.5, 0.9):
        model = keras.models.clone_model(trained)
        for layer, source in zip(model.layers, trained.layers, strict=True):
            weights = source.get_weights()
            if weights and weights[0].ndim > 1:  # kernels: zero the smallest, as magnitude pruning does
                kernel = weights[0]
                weights[0] = np.where(np.abs(kernel) < np.quantile(np.abs(kernel), sparsity), 0, kernel)
            layer.set_weights(weights)
        files.append(int8_tflite(model, DATA.train))
    gzipped, encoded = [gzip_size(f) for f in files], [sparse_encoded(f) for f in files]
    assert gzipped[0] > gzipped[1] > gzipped[2], gzipped  # the zeros compress
    # The sparse encoding pays for its indices only at high sparsity, and XNNPack refuses it
    # for int8 Dense layers: such a file runs on LiteRT's built-in kernels only.
    assert len(encoded[1]) > len(files[1]) and len(encoded[2]) < len(files[2]) / 1.8
    assert not Runner(encoded[2]).xnnpack and Runner(files[2]).xnnpack


@pytest.mark.slow
def test_a_three_objective_study_on_what_ships_and_every_objective_combination(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import itertools
    import json

    from sweep.config import OBJECTIVES
    from sweep.pareto import completed_trials, hypervolume, pareto_front, trial_table
    from sweep.selection import select_trial
    from sweep.stores import load_study

    from conftest import run_notebook, run_sweep, write_study

    write_study(tmp_path, name="ships", n_trials=4, model={"builder": "cnn"},
                objectives=["accuracy", "int8_size", "int8_latency"])
    result = run_sweep("run", "ships.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 " in result.stderr  # the progress line shows what ships
    pareto = run_sweep("pareto", "ships.yaml", "--format", "json", "--plot", "front.png", cwd=tmp_path)
    assert pareto.returncode == 0, pareto.stderr
    report = json.loads(pareto.stdout)
    # 0 is possible: a file smaller than the dense one is sparse-encoded, and so slower
    assert 0 <= report["hypervolume"] <= 1 and report["trials"]
    assert "int8_bytes" in report["reference_point"] and "int8_latency_ms" in report["reference_point"]
    fastest = min(t["int8_latency_ms"] for t in report["trials"])
    chosen = run_sweep("best", "ships.yaml", "--max-latency", str(fastest), "--format", "json", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["metrics"]["int8_latency_ms"] == fastest
    text, outputs = run_notebook(tmp_path, "ships", tmp_path / "executed.ipynb", max_latency=fastest)
    assert f"chosen trial: {json.loads(chosen.stdout)['trial']} (latency_ms <= {fastest})" in text
    front_html = next(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert "int8_bytes" in "".join(front_html) and "int8_latency_ms" in "".join(front_html)
    report_run = run_sweep("report", "ships.yaml", "--output", "report", cwd=tmp_path)
    assert report_run.returncode == 0, report_run.stderr[-3000:]
    assert "int8_latency_ms" in (tmp_path / "report" / "report.html").read_text()
    from PIL import Image

    for figure in (tmp_path / "front.png", tmp_path / "report" / "pareto_front.png"):
        width, height = Image.open(figure).size
        assert width > 2.5 * height, (figure, width, height)  # three panels side by side

    # Every combination of two or three objectives: front, hypervolume and a choice.
    study = load_study("ships", f"sqlite:///{tmp_path}/sweep.db")
    table, baseline = trial_table(completed_trials(study)), study.user_attrs["baseline"]
    for size in (2, 3):
        for objectives in itertools.combinations(OBJECTIVES, size):
            front = pareto_front(table, objectives)
            assert not front.empty, objectives
            assert 0 <= hypervolume(table, objectives, baseline) <= 1, objectives
            assert select_trial(front, objectives) in set(front["trial"]), objectives
