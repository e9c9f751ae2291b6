"""What ships, with real conversions and LiteRT interpreter runs: the int8 file's accuracy,
its size against sparsity, and latency."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.config import ExportConfig, parse_study_config
from sweep.data.datasets import load_dataset
from sweep.modeling.measure import gzip_size, measure
from sweep.modeling.metrics import ALL_GROUPS
from sweep.modeling.tflite import Runner, sparse_encoded
from sweep.modeling.training import train

from conftest import interpreter_accuracy

pytestmark = pytest.mark.integration  # TensorFlow in this process

CONFIG = parse_study_config({"name": "t", "model": {"builder": "cnn"}, "train": {"epochs": 3, "batch_size": 64}})
DATA = load_dataset(CONFIG.data)


@pytest.fixture(scope="module")
def trained():  # type: ignore[no-untyped-def]
    return train(DATA, CONFIG, 0).model


def file_accuracy(content: bytes, x: np.ndarray, y: np.ndarray) -> float:
    """The int8 file run as a deployment would (`conftest.interpreter_accuracy`)."""
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
    return interpreter_accuracy(interpreter, x, y)


def zeroed(model, sparsity: float):  # type: ignore[no-untyped-def]
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


def test_the_int8_file_is_measured_as_it_runs(trained) -> None:  # type: ignore[no-untyped-def]
    files: dict[str, bytes] = {}
    metrics = measure(trained, DATA, ALL_GROUPS, files=files)
    quantized = files["model_int8.tflite"]
    assert metrics["int8_bytes"] == len(quantized) < metrics["tflite_bytes"] / 2  # int8 weights
    assert metrics["int8_gzip_bytes"] == gzip_size(quantized)
    assert Runner(quantized).xnnpack and metrics["int8_xnnpack"] == 1.0  # stored dense: XNNPack takes it
    assert metrics["int8_sparse_bytes"] == len(sparse_encoded(quantized))
    assert metrics["int8_val_accuracy"] == file_accuracy(quantized, DATA.val.x, DATA.val.y)
    assert metrics["int8_test_accuracy"] == file_accuracy(quantized, DATA.test.x, DATA.test.y)
    assert abs(metrics["int8_val_accuracy"] - metrics["val_accuracy"]) < 0.05  # calibrated, not broken
    for name in ("latency", "int8_latency"):
        assert 0 < metrics[f"{name}_ms"] <= metrics[f"{name}_p90_ms"] < 50


def test_the_int8_file_shrinks_with_sparsity(trained) -> None:  # type: ignore[no-untyped-def]
    from sweep.modeling.tflite import int8_tflite

    files = [int8_tflite(zeroed(trained, sparsity), DATA.train) for sparsity in (0.0, 0.5, 0.9)]
    gzipped, encoded = [gzip_size(f) for f in files], [sparse_encoded(f) for f in files]
    assert gzipped[0] > gzipped[1] > gzipped[2], gzipped  # the zeros compress
    # The sparse encoding pays for its indices only at high sparsity, and XNNPack refuses it
    # for int8 Dense layers: such a file runs on LiteRT's built-in kernels only.
    assert len(encoded[1]) > len(files[1]) and len(encoded[2]) < len(files[2]) / 1.8
    assert not Runner(encoded[2]).xnnpack and Runner(files[2]).xnnpack


@pytest.mark.parametrize("storage", ["dense", "sparse", "smallest"])
def test_the_int8_file_is_stored_as_the_study_says_and_measured_as_stored(trained, storage: str) -> None:  # type: ignore[no-untyped-def]
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from sweep.modeling.tflite import int8_tflite

    model = zeroed(trained, 0.9)
    files: dict[str, bytes] = {}
    metrics = measure(model, DATA, ALL_GROUPS, files=files, export=ExportConfig(int8_storage=storage))  # type: ignore[arg-type]
    dense = int8_tflite(model, DATA.train)
    encoded = sparse_encoded(dense)
    assert len(encoded) < len(dense)  # at 90% zeros the sparse encoding is the smaller file
    shipped = files["model_int8.tflite"]
    assert shipped == (dense if storage == "dense" else encoded)
    assert (metrics["int8_bytes"], metrics["int8_gzip_bytes"], metrics["int8_sparse_bytes"]) == (
        len(shipped), gzip_size(shipped), len(encoded))
    assert metrics["int8_xnnpack"] == (1.0 if storage == "dense" else 0.0)
    if storage != "dense":  # what the rerun's note says: LiteRT's built-in kernels run it
        with pytest.raises(RuntimeError, match="delegate"):
            Interpreter(model_content=shipped).allocate_tensors()
        builtin = Interpreter(model_content=shipped,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        builtin.allocate_tensors()
    assert metrics["int8_val_accuracy"] == file_accuracy(shipped, DATA.val.x, DATA.val.y)


def plain_conversion(model, train=None) -> bytes:  # type: ignore[no-untyped-def]
    """`TFLiteConverter.from_keras_model` as documented, with sweep's int8 settings when
    given `train`: what `converting` must reproduce byte for byte."""
    from sweep._tf import tf
    from sweep.modeling.tflite import CALIBRATION_EXAMPLES, CALIBRATION_SEED

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if train is not None:
        calibration = train.sample_inputs(CALIBRATION_EXAMPLES, CALIBRATION_SEED)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([e[np.newaxis].astype(np.float32)] for e in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")
def test_the_savedmodel_path_gives_from_keras_models_bytes_and_the_freeze_path_its_predictions(trained) -> None:  # type: ignore[no-untyped-def]
    """`export.tflite_converter: savedmodel` gives `from_keras_model`'s files, so every study
    stored before the key existed reruns byte for byte; `freeze` (the default) gives files that
    predict what they predict, with the same serving signature."""
    from ai_edge_litert.interpreter import Interpreter

    from sweep.modeling.tflite import converting, float_tflite, int8_tflite, tflite_files

    expected = plain_conversion(trained), plain_conversion(trained, DATA.train)
    assert (float_tflite(trained, "savedmodel"), int8_tflite(trained, DATA.train, "savedmodel")) == expected
    assert tflite_files(trained, DATA.train, path="savedmodel") == expected
    assert tflite_files(trained, DATA.train, float_file=False, path="savedmodel") == (None, expected[1])
    with converting(trained, "savedmodel") as convert:  # int8 first: either order shares the saved model
        assert (convert.int8_file(DATA.train), convert.float_file()) == expected[::-1]

    frozen = tflite_files(trained, DATA.train)
    assert frozen == tflite_files(trained, DATA.train, path="freeze")
    x = np.concatenate([DATA.val.x, DATA.test.x])
    for theirs, ours in zip(expected, frozen, strict=True):
        assert ours is not None and ours != theirs
        assert np.array_equal(Runner(ours).predict_batch(x), Runner(theirs).predict_batch(x))
        signed = [Interpreter(model_content=content) for content in (theirs, ours, sparse_encoded(ours))]
        assert signed[0].get_signature_list() == {"serving_default": {"inputs": trained.input_names, "outputs": trained.output_names}}
        example = DATA.val.x[:1].astype(signed[0].get_input_details()[0]["dtype"])
        outputs = [interpreter.get_signature_runner()(**{trained.input_names[0]: example}) for interpreter in signed]
        assert all(o.keys() == outputs[0].keys() and np.array_equal(o[trained.output_names[0]], outputs[0][trained.output_names[0]])
                   for o in outputs[1:])


def test_batched_predictions_are_those_of_one_example_at_a_time(trained) -> None:  # type: ignore[no-untyped-def]
    from sweep.modeling.tflite import ACCURACY_BATCH, float_tflite, int8_tflite

    dense = int8_tflite(zeroed(trained, 0.9), DATA.train)
    files = {"float": float_tflite(trained), "int8": int8_tflite(trained, DATA.train), "int8 sparse": sparse_encoded(dense)}
    x = np.concatenate([DATA.val.x, DATA.test.x])
    assert len(x) % ACCURACY_BATCH  # a partial last batch
    for name, content in files.items():
        runner = Runner(content)
        assert runner.xnnpack == (name != "int8 sparse"), name
        one, singles = [], []
        for example in x:
            one.append(runner.predict(example))
            singles.append(runner.interpreter.get_tensor(runner.output["index"])[0].copy())
        outputs = np.concatenate([runner.raw_outputs(x[i:i + ACCURACY_BATCH]) for i in range(0, len(x), ACCURACY_BATCH)])
        assert np.array_equal(outputs, np.stack(singles)), name  # bit for bit
        assert np.concatenate([runner.predict_batch(x[i:i + 100]) for i in range(0, len(x), 100)]).tolist() == one, name
        assert runner.accuracy(DATA.val) == np.mean(np.array(one[:DATA.val.size]) == DATA.val.y), name
        assert runner.accuracy(DATA.test) == np.mean(np.array(one[DATA.val.size:]) == DATA.test.y), name
        assert runner.interpreter.get_input_details()[0]["shape"][0] == 1  # latency still times one example


@pytest.mark.slow
def test_a_three_objective_study_on_what_ships_and_every_objective_combination(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import itertools
    import json

    from sweep.config import OBJECTIVES
    from sweep.results.pareto import completed_trials, hypervolume, pareto_front, trial_table
    from sweep.results.selection import select_trial
    from sweep.stores.optuna_storage import load_study

    from conftest import run_notebook, run_sweep, write_study

    write_study(tmp_path, name="ships", n_trials=4, model={"builder": "cnn"},
                objectives=["accuracy", "int8_size", "int8_latency"])
    result = run_sweep("run", "ships.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 " in result.stderr  # the progress line shows what ships
    pareto = run_sweep("pareto", "ships.yaml", "--format", "json", "--plot", "front.png", cwd=tmp_path)
    assert pareto.returncode == 0, pareto.stderr
    report = json.loads(pareto.stdout)
    # 0 is possible: a pruned int8 file is no faster than the dense model's
    assert 0 <= report["hypervolume"] <= 1 and report["trials"]
    assert "int8_gzip_bytes" in report["reference_point"] and "int8_latency_ms" in report["reference_point"]
    fastest = min(t["int8_latency_ms"] for t in report["trials"])
    chosen = run_sweep("best", "ships.yaml", "--max-latency", str(fastest), "--format", "json", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["metrics"]["int8_latency_ms"] == fastest
    text, outputs = run_notebook(tmp_path, "ships", tmp_path / "executed.ipynb", max_latency=fastest)
    assert f"chosen trial: {json.loads(chosen.stdout)['trial']} (latency_ms <= {fastest})" in text
    front_html = next(o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {}))
    assert "int8_gzip_bytes" in "".join(front_html) and "int8_latency_ms" in "".join(front_html)
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


@pytest.mark.slow
def test_a_sparse_int8_file_is_exported_only_when_asked_and_with_a_note_on_loading_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from sweep.study.rerun import SPARSE_INT8_NOTE, SPARSE_INT8_NOTE_FILE

    from conftest import run_sweep, write_study

    write_study(tmp_path, name="flash", n_trials=1, train={"epochs": 1}, export={"int8_storage": "sparse"},
                search={"schedule": "constant", "final_sparsity": 0.9, "begin_step": 0.0, "end_step": 0.5},
                objectives=["accuracy", "int8_file_size"])
    assert (result := run_sweep("run", "flash.yaml", cwd=tmp_path)).returncode == 0, result.stderr[-3000:]
    rerun = run_sweep("rerun", "flash.yaml", "--best", "--output", "out", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert " ".join(SPARSE_INT8_NOTE.split()[:8]) in " ".join((rerun.stdout + rerun.stderr).split())
    assert (tmp_path / "out" / SPARSE_INT8_NOTE_FILE).read_text() == SPARSE_INT8_NOTE + "\n"
    shipped = (tmp_path / "out" / "model_int8.tflite").read_bytes()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())["reproduced"]
    assert metrics["int8_bytes"] == len(shipped) == metrics["int8_sparse_bytes"]
    with pytest.raises(RuntimeError, match="delegate"):
        Interpreter(model_content=shipped).allocate_tensors()
    Interpreter(model_content=shipped,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).allocate_tensors()
