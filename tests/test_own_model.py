"""Pruning the model you already have: a pretrained file (the studies/pretrained example),
custom layers, and builder models starting from the trained baseline's weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from optuna.trial import TrialState

from sweep.config import ModelConfig, SearchConfig, load_study_config, parse_study_config
from sweep.errors import SweepError, UsageError

from conftest import REPO, run_sweep


def run(study: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """`sweep run` in-process on a copy of the study file with `overrides`, stores beside it."""
    from sweep.study.runner import RunRequest, run_study

    raw = yaml.safe_load(study.read_text())
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    path = study.with_name(f"{raw['name']}.yaml")
    path.write_text(yaml.safe_dump(raw))
    config = load_study_config(path)
    folder = study.parent
    return config, run_study(RunRequest(config, f"sqlite:///{folder}/sweep.db", f"sqlite:///{folder}/mlflow.db"))


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of studies/pretrained with its model trained by its own script."""
    folder = tmp_path_factory.mktemp("pretrained")
    for name in ("loader.py", "train_model.py", "study.yaml"):
        shutil.copy(REPO / "studies" / "pretrained" / name, folder)
    result = subprocess.run([sys.executable, "train_model.py"], cwd=folder, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder / "nets.py").write_text("from train_model import build as _build\n\n\n"
                                    "def build(input_shape, num_classes):\n    return _build()\n")
    return folder


ONE_EPOCH_AT_HALF = {"train": {"epochs": 1}, "search": {"schedule": "constant", "final_sparsity": 0.5, "begin_step": 0.0}}


@pytest.mark.slow
def test_a_pretrained_model_is_the_baseline_as_it_is_and_every_trial_starts_from_it(
    example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep._tf import keras
    from sweep.stores.optuna_storage import load_study
    from sweep.stores.tracking import Tracker
    from sweep.study.rerun import TIMED, rerun_trial

    monkeypatch.syspath_prepend(str(example))  # nets.py imports train_model
    monkeypatch.chdir(example)  # MLflow's default artifact folder, ./mlruns
    config, study = run(example / "study.yaml", name="given", n_trials=1, **ONE_EPOCH_AT_HALF)
    given = keras.models.load_model(example / "model.keras", compile=False)
    sys.path.insert(0, str(example))
    from loader import load  # the example's own loader

    x_val, y_val = (np.stack(v) for v in zip(*load()["validation"].as_numpy_iterator(), strict=True))
    own_accuracy = float(np.mean(np.argmax(given.predict(x_val, verbose=0), -1) == y_val))
    assert study.user_attrs["baseline"]["val_accuracy"] == own_accuracy
    assert study.user_attrs["baseline"]["train_seconds"] == 0.0

    trial = study.trials[0]
    assert trial.user_attrs["pruned_layers"] == ["conv1", "conv2", "dense1"]  # not Rescaling, BN, logits
    _, scratch = run(example / "study.yaml", name="scratch", n_trials=1,
                     model={"pretrained": None, "builder": "nets.py:build", "start": "scratch"}, **ONE_EPOCH_AT_HALF)
    fine_tuned = trial.user_attrs["metrics"]["val_accuracy"]
    from_scratch = scratch.trials[0].user_attrs["metrics"]["val_accuracy"]
    assert fine_tuned > own_accuracy - 0.05 and fine_tuned > from_scratch + 0.1, (own_accuracy, fine_tuned, from_scratch)

    tracker = Tracker(f"sqlite:///{example}/mlflow.db", "given")
    result = rerun_trial(study, trial, config, tracker, example / "export")
    # exact but for wall-time latencies (compared within 50%), which a loaded machine can push further
    assert set(result.differences) <= set(TIMED), (result.original, result.reproduced)
    exported = keras.models.load_model(example / "export" / "model.keras")  # plain tf_keras, no tfmot
    kinds = [type(layer).__name__ for layer in exported.layers]
    assert kinds[:3] == ["Rescaling", "Conv2D", "BatchNormalization"], kinds

    # Every command on such a study: spawned workers load the loader file and the model themselves.
    for command in (("run", "given.yaml", "--jobs", "2", "--n-trials", "2"), ("doctor", "given.yaml"),
                    ("report", "given.yaml", "--output", "report"), ("best", "given.yaml")):
        result = run_sweep(*command, cwd=example)
        assert result.returncode == 0, (command, result.stderr[-3000:])
    assert len(load_study("given", f"sqlite:///{example}/sweep.db").get_trials(states=[TrialState.COMPLETE])) == 3

    shutil.copy(example / "model.keras", example / "model.keras.orig")
    shutil.copy(example / "export" / "model.keras", example / "model.keras")  # another model, same name
    try:
        with pytest.raises(UsageError, match="study 'given' was run on different model: model.pretrained .* now "
                                             "holds another model"):
            run(example / "study.yaml", name="given", n_trials=2, **ONE_EPOCH_AT_HALF)
    finally:
        shutil.move(example / "model.keras.orig", example / "model.keras")


@pytest.mark.slow
def test_builder_trials_start_from_the_stored_baseline_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sweep.modeling.training
    from sweep.data.datasets import load_dataset
    from sweep.modeling.models import starting_model
    from sweep.modeling.training import train
    from sweep.stores import records
    from sweep.stores.tracking import Tracker
    from sweep.study.baseline import WEIGHTS_ARTIFACT, start_weights
    from sweep.study.fingerprints import file_fingerprint

    from conftest import write_study

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact folder, ./mlruns
    started_from: list[str | None] = []  # what each training started from: None, or the weights' SHA-256

    def spy(config, input_shape, num_classes, weights=None):  # type: ignore[no-untyped-def]
        started_from.append(None if weights is None else file_fingerprint(weights))
        return starting_model(config, input_shape, num_classes, weights)

    monkeypatch.setattr(sweep.modeling.training, "starting_model", spy)
    config, study = run(write_study(tmp_path, name="warm", n_trials=2, search={"schedule": "constant"}))
    assert config.model.start == "baseline"  # the default
    assert started_from == [None] + [records.baseline_weights_sha256(study)] * 2  # the baseline, then its trials
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "warm")
    dataset = load_dataset(config.data)
    weights = start_weights(study, tracker, config, str(tmp_path / "download"))
    assert weights is not None
    started = starting_model(config.model, dataset.input_shape, dataset.num_classes, weights)
    baseline = train(dataset, config, config.seed).model  # deterministic: the baseline again
    for a, b in zip(started.get_weights(), baseline.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    stored = tracker.local_artifact_store()
    assert stored is not None
    artifact = stored / study.user_attrs["mlflow_study_run_id"] / "artifacts" / WEIGHTS_ARTIFACT
    assert artifact.is_relative_to(tmp_path)
    artifact.write_bytes(artifact.read_bytes()[:-10] + b"x" * 10)  # someone changed it
    with pytest.raises(SweepError, match="not the ones the study trained .SHA-256 mismatch"):
        start_weights(study, tracker, config, str(tmp_path / "again"))


CUSTOM_LAYER = """
import tensorflow as tf
import tf_keras as keras


@keras.saving.register_keras_serializable(package="{package}")
class Scale(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 0.5
"""


@pytest.mark.integration  # TensorFlow in this process
def test_custom_layers_load_with_custom_objects_and_stay_unwrapped(tmp_path: Path) -> None:
    import uuid

    from sweep._tf import keras
    from sweep.modeling.models import check_model, starting_model
    from sweep.modeling.pruning import layer_shapes

    package = f"demo{uuid.uuid4().hex[:8]}"
    (tmp_path / "custom.py").write_text(CUSTOM_LAYER.format(package=package))
    namespace: dict[str, object] = {}
    exec(CUSTOM_LAYER.format(package=package), namespace)  # noqa: S102  registers Scale while we save
    model = keras.Sequential([keras.Input((8, 8, 1)), namespace["Scale"](), keras.layers.Flatten(),
                              keras.layers.Dense(10, name="logits")])
    model.save(tmp_path / "model.keras")
    keras.saving.get_custom_objects().pop(f"{package}>Scale")  # as in a fresh process

    without = parse_study_config({"name": "c", "model": {"pretrained": "model.keras"}}, base_dir=tmp_path).model
    with pytest.raises(UsageError, match="cannot load it .* if it has custom layers, name the module "
                                         "that registers them .* in model.custom_objects"):
        check_model(without, SearchConfig(), (8, 8, 1), 10)
    given = ModelConfig.model_validate({"pretrained": "model.keras", "custom_objects": "custom.py"},
                                       context={"base_dir": tmp_path})
    check_model(given, SearchConfig(), (8, 8, 1), 10)
    loaded = starting_model(given, (8, 8, 1), 10)
    assert type(loaded.layers[0]).__name__ == "Scale"
    assert list(layer_shapes(loaded, given.prune)) == ["logits"]
    with pytest.raises(UsageError, match=r"takes inputs of shape \[\(None, 8, 8, 1\)\], but the data's examples "
                                         r"have shape \(28, 28, 1\)"):
        check_model(given, SearchConfig(), (28, 28, 1), 10)


@pytest.mark.slow
def test_a_study_without_op_determinism_is_rerun_within_a_tolerance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorflow.python.framework.config import is_op_determinism_enabled

    from sweep.stores.tracking import Tracker
    from sweep.study.rerun import NONDETERMINISTIC_TOLERANCE, TIMED, rerun_trial

    from conftest import write_study

    monkeypatch.chdir(tmp_path)
    config, study = run(write_study(tmp_path, name="loose", n_trials=1, model={"builder": "mlp", "start": "scratch"},
                                    train={"epochs": 1, "deterministic": False}, search={"schedule": "constant"}))
    assert not is_op_determinism_enabled()
    result = rerun_trial(study, study.trials[0], config, Tracker(f"sqlite:///{tmp_path}/mlflow.db", "loose"),
                         tmp_path / "export")
    # wall-time latencies (compared within 50%) can differ on a loaded machine; nothing else may
    assert result.tolerance == NONDETERMINISTIC_TOLERANCE and set(result.differences) <= set(TIMED)
    run(write_study(tmp_path, name="strict", n_trials=1, model={"builder": "mlp"}, train={"epochs": 1}))
    assert is_op_determinism_enabled()  # each study as its file says, in one process


SOFTMAX_HEADS = """
import tensorflow as tf
import tf_keras as keras


def _logits(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(32, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
    return inputs, hidden, keras.layers.Dense(num_classes, name="logits")


def softmax_layer(input_shape, num_classes):
    inputs, hidden, logits = _logits(input_shape, num_classes)
    return keras.Model(inputs, keras.layers.Softmax(name="probabilities")(logits(hidden)))


def activation_layer(input_shape, num_classes):
    inputs, hidden, logits = _logits(input_shape, num_classes)
    return keras.Model(inputs, keras.layers.Activation("softmax")(logits(hidden)))


def tf_softmax(input_shape, num_classes):
    inputs, hidden, logits = _logits(input_shape, num_classes)
    return keras.Model(inputs, tf.nn.softmax(logits(hidden)))


def dense_tf_softmax(input_shape, num_classes):
    inputs, hidden, _ = _logits(input_shape, num_classes)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation=tf.nn.softmax)(hidden))


def nested(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, softmax_layer(input_shape, num_classes)(inputs))


def logits_only(input_shape, num_classes):
    inputs, hidden, logits = _logits(input_shape, num_classes)
    return keras.Model(inputs, logits(hidden))
"""


@pytest.mark.integration  # TensorFlow in this process
@pytest.mark.parametrize(("builder", "probabilities"), [
    ("softmax_layer", True), ("activation_layer", True), ("tf_softmax", True), ("dense_tf_softmax", True),
    ("nested", True), ("logits_only", False), ("mlp", False),
])
def test_a_model_ending_in_any_softmax_outputs_probabilities(tmp_path: Path, builder: str, probabilities: bool) -> None:
    from sweep.modeling.models import build_model, outputs_probabilities

    (tmp_path / "heads.py").write_text(SOFTMAX_HEADS)
    name = builder if builder == "mlp" else f"{tmp_path}/heads.py:{builder}"
    assert outputs_probabilities(build_model(name, (8, 8, 1), 10)) is probabilities


@pytest.mark.integration  # TensorFlow in this process, two short trainings
def test_a_softmax_layer_head_trains_like_its_logits_without_a_warning(tmp_path: Path) -> None:
    """tf_keras warned on every trial: the loss took the Softmax layer's output for logits."""
    import warnings

    from sweep.data.datasets import load_dataset
    from sweep.modeling.training import train
    from sweep.search.trial_plan import SchedulePlan

    (tmp_path / "heads.py").write_text(SOFTMAX_HEADS)
    histories = {}
    for builder in ("softmax_layer", "logits_only"):
        config = parse_study_config({"name": builder, "model": {"builder": f"heads.py:{builder}"},
                                     "train": {"epochs": 1, "batch_size": 64}}, base_dir=tmp_path)
        dataset = load_dataset(config.data)
        steps = dataset.total_steps(config.train)
        plan = SchedulePlan(family="constant", total_steps=steps, begin_step=0, end_step=steps - 1, frequency=1,
                            final_sparsity=0.5)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            histories[builder] = train(dataset, config, 0, plan=plan).history  # pruned: the head wraps its Dense
        assert not [w for w in caught if "from_logits" in str(w.message)], [str(w.message) for w in caught]
    # the same weights and data: the loss on probabilities is the loss on the logits they come from
    assert histories["softmax_layer"]["loss"] == pytest.approx(histories["logits_only"]["loss"], rel=1e-5)
    assert histories["softmax_layer"]["val_accuracy"] == pytest.approx(histories["logits_only"]["val_accuracy"])


@pytest.mark.slow
def test_channel_trials_on_the_pretrained_example_ship_smaller_dense_files_and_rerun_exactly(
    example: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 28: `pattern: [unstructured, channels]` on the example; the channel trial's
    weights load again from its record, its rerun is exact, and its files are dense ones a
    default LiteRT interpreter runs with XNNPack."""
    from ai_edge_litert.interpreter import Interpreter

    from sweep._tf import keras
    from sweep.data.datasets import load_dataset
    from sweep.modeling.measure import accuracy
    from sweep.modeling.tflite import Runner
    from sweep.results.pareto import pareto_trials
    from sweep.stores import records
    from sweep.stores.tracking import Tracker
    from sweep.study.rerun import TIMED, rerun_trial
    from sweep.study.saved_weights import saved_model

    monkeypatch.chdir(example)  # MLflow's default artifact folder, ./mlruns
    config, study = run(example / "study.yaml", name="channels", n_trials=2, train={"epochs": 1},
                        search={"schedule": "constant", "final_sparsity": 0.5, "begin_step": 0.0,
                                "pattern": ["unstructured", "channels"]})
    assert ("sweep: channels: up to 221 of 224 channels in 3 groups can be removed (one of each group stays); kept "
            "whole: rescale (Rescaling): no channel rule for this layer; logits: not selected by model.prune"
            ) in capsys.readouterr().err
    unstructured, channels = study.trials  # the start design takes the patterns in turn
    assert (unstructured.params["pattern"], channels.params["pattern"]) == ("unstructured", "channels")
    kept = records.channels(channels)
    assert kept["conv1"] < 32 and kept["conv2"] < 64 and kept["dense1"] < 128 and kept["logits"] == 10
    assert records.channels(unstructured) == {}
    measured = {t.number: records.trial_metrics(t) for t in (unstructured, channels)}
    assert measured[1]["channels/conv2"] == kept["conv2"] and measured[0]["channels/conv2"] == 64
    assert measured[1]["macs"] < 0.6 * measured[0]["macs"]  # about half of the weights, half of the MACs
    assert measured[1]["sparsity"] == pytest.approx(0.5, abs=0.05)
    assert measured[1]["compressed_bytes"] < measured[0]["compressed_bytes"]

    tracker = Tracker(f"sqlite:///{example}/mlflow.db", "channels")
    dataset = load_dataset(config.data)
    again = saved_model(config, dataset, tracker, records.mlflow_run_id(channels), records.weights_sha256(channels),
                        kept)
    assert accuracy(again, dataset.val) == measured[1]["val_accuracy"]
    assert channels.number in {t.number for t in pareto_trials(study)}  # the smaller file: on the front, and
    assert "int8_bytes" in records.later_metrics(study)[channels.number]  # measured from its weights after the run

    result = rerun_trial(study, channels, config, tracker, example / "channels-export")
    assert set(result.differences) <= set(TIMED), (result.original, result.reproduced)
    exported = keras.models.load_model(example / "channels-export" / "model.keras")  # no custom objects
    assert exported.get_layer("bn1").get_weights()[0].shape == (kept["conv1"],)
    assert exported.count_params() < keras.models.load_model(example / "model.keras", compile=False).count_params()
    for name in ("model.tflite", "model_int8.tflite"):
        content = (example / "channels-export" / name).read_bytes()
        interpreter = Interpreter(model_content=content)  # LiteRT's defaults: XNNPack
        interpreter.allocate_tensors()
        interpreter.invoke()
        assert Runner(content).xnnpack, name
