"""Structure of the sparsity: M:N and block patterns, the XNNPack policy and per-layer
targets, checked on the weights of real trainings, of a rerun's export and of its TFLite
file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sweep.config import parse_study_config
from sweep.errors import ConfigError
from sweep.search.structure import Pattern, Structure, allocate, plan_layers
from sweep.search.trial_plan import SchedulePlan

from conftest import run_sweep, write_study

CNN = {"conv1": [(3, 3, 1, 16)], "conv2": [(3, 3, 16, 32)], "dense1": [(512, 64)], "logits": [(64, 10)]}

# A model with the stem tfmot's PruneForLatencyOnXNNPack looks for, on 3-channel digits.
XNNPACK_FILES = '''
import numpy as np
import tf_keras as keras
from sklearn.datasets import load_digits


def load():
    digits = load_digits()
    x = np.repeat((digits.images / 16.0)[..., None], 3, axis=-1).astype("float32")
    return {"train": (x[:1400], digits.target[:1400]), "test": (x[1400:], digits.target[1400:])}


def stem_net(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.ZeroPadding2D(((1, 1), (1, 1)), name="pad")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="valid", activation="relu", name="stem")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="expand")(x)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="mix")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))
'''


def at_most_m_of_n(kernel: np.ndarray, m: int, n: int) -> bool:
    """At most `m` non-zeros in every `n` consecutive weights along the input axis
    (second to last in Keras: (in, out) and (h, w, in, out))."""
    groups = np.moveaxis(kernel, -2, -1).reshape(-1, n)
    return bool((np.count_nonzero(groups, axis=1) <= m).all())


def zeros_in_whole_blocks(kernel: np.ndarray, rows: int, cols: int) -> bool:
    return all(
        not block.any() or block.all()
        for i in range(0, kernel.shape[0], rows)
        for j in range(0, kernel.shape[1], cols)
        for block in [kernel[i:i + rows, j:j + cols]]
    )


def assert_layers_follow(kernels: dict[str, np.ndarray], layers: dict[str, dict]) -> None:
    """Each kernel has its layer's recorded pattern, and its target sparsity within 0.01."""
    for name, how in layers.items():
        kernel, pattern = kernels[name], Pattern(how["pattern"])
        if pattern.m_of_n:
            assert at_most_m_of_n(kernel, *pattern.m_of_n), name
        if pattern.block:
            assert zeros_in_whole_blocks(kernel, *pattern.block), name
            assert (kernel == 0).any(), name
        assert 1 - np.count_nonzero(kernel) / kernel.size == pytest.approx(how["target"], abs=0.01), name


# --- the plan, without TensorFlow ---------------------------------------------------


def test_patterns_apply_where_they_fit_and_the_rest_follows_the_schedule() -> None:
    two_of_four = plan_layers(CNN, Structure("2:4"), 0.8)
    # a conv on 1 input channel cannot hold 2 of every 4: pruned unstructured
    assert {n: (p.pattern, p.target) for n, p in two_of_four.items()} == {
        "conv1": ("unstructured", 0.8), "conv2": ("2:4", 0.5), "dense1": ("2:4", 0.5), "logits": ("2:4", 0.5)}
    blocks = plan_layers(CNN, Structure("1x4"), 0.8)
    # blocks: Dense kernels only, and only where whole blocks tile them (10 outputs are not 4s)
    assert [p.pattern for p in blocks.values()] == ["unstructured", "unstructured", "1x4", "unstructured"]
    assert [p.pattern for p in plan_layers(CNN, Structure("2x1"), 0.8).values()][2:] == ["2x1", "2x1"]
    assert Pattern("1:4").tfmot_arguments() == {"sparsity_m_by_n": (3, 4)}  # tfmot counts zeros
    assert Pattern("4x1").tfmot_arguments() == {"block_size": (4, 1)}


def test_per_layer_targets_with_no_layer_left_to_the_schedule_or_nothing_to_prune() -> None:
    mlp = {"dense1": [(64, 128)], "dense2": [(128, 64)], "logits": [(64, 10)]}
    # 2:4 fits every layer: none follows the schedule, so there is nothing to allocate
    assert {p.target for p in plan_layers(mlp, Structure("2:4", allocation=1.0), 0.8).values()} == {0.5}
    assert set(allocate(CNN, 0.0, 1.0).values()) == {0.0}
    # only the layers the caller names (Dense, Conv2D) take a pattern
    only_dense = plan_layers(CNN, Structure("2:4"), 0.8, patternable=["dense1"])
    assert [p.pattern for p in only_dense.values()] == ["unstructured", "unstructured", "2:4", "unstructured"]


@given(sparsity=st.floats(0.05, 0.95), exponent=st.floats(0, 1))
def test_allocation_keeps_the_global_sparsity(sparsity: float, exponent: float) -> None:
    targets = allocate(CNN, sparsity, exponent)
    sizes = {name: math.prod(shapes[0]) for name, shapes in CNN.items()}
    kept = sum(sizes[n] * (1 - t) for n, t in targets.items())
    assert kept == pytest.approx((1 - sparsity) * sum(sizes.values()))
    assert all(0 <= t < 1 for t in targets.values())
    if exponent == 0:
        assert all(t == pytest.approx(sparsity) for t in targets.values())
    else:  # the biggest layer is pruned at least as hard as the smallest
        assert targets["dense1"] >= targets["conv1"] - 1e-9


def test_the_start_design_pairs_every_pattern_with_every_schedule() -> None:
    from sweep.config import SearchConfig
    from sweep.search.space import start_points

    search = SearchConfig.model_validate({"schedule": ["constant", "polynomial"], "pattern": ["unstructured", "2:4"]})
    pairs = {(p["schedule"], p["pattern"]) for p in start_points(search, 4, seed=0)}
    assert pairs == {("constant", "unstructured"), ("polynomial", "unstructured"), ("constant", "2:4"), ("polynomial", "2:4")}


def test_a_channel_trial_has_no_policy_parameter() -> None:
    import optuna

    from sweep.config import SearchConfig
    from sweep.search.space import suggest_params

    search = SearchConfig.model_validate({"pattern": ["unstructured", "channels"], "policy": ["all", "xnnpack"]})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    has_policy: dict[str, set[bool]] = {}
    for _ in range(12):
        trial = study.ask()
        pattern = suggest_params(trial, search).structure.pattern
        has_policy.setdefault(pattern, set()).add("policy" in trial.params)
        study.tell(trial, 0.0)
    assert has_policy == {"unstructured": {True}, "channels": {False}}


def test_a_channel_trial_replays_with_the_policy_it_did_not_sample() -> None:
    from sweep.config import SearchConfig
    from sweep.search.space import fixed_search

    search = SearchConfig.model_validate({"pattern": ["unstructured", "channels"], "policy": ["all", "xnnpack"]})
    params = {"schedule": "constant", "final_sparsity": 0.6, "begin_step": 0.1, "end_step": 0.7, "frequency": 10,
              "weight_decay": 1e-4, "pattern": "channels"}
    fixed = fixed_search(search, params)
    assert (fixed.pattern, fixed.policy) == (("channels",), ("all",))


def test_a_layer_ends_its_schedule_at_its_own_target() -> None:
    plan = SchedulePlan("step", 100, 10, 90, 10, 0.8, boundaries=(10, 50, 90), levels=(0.2, 0.4, 0.8))
    assert plan.ending_at(0.4).levels == (pytest.approx(0.1), pytest.approx(0.2), 0.4)
    assert plan.ending_at(0.8) is plan


@pytest.mark.parametrize(("text", "message"), [
    ("pattern: 2:4", 'got the number 124, which is how YAML reads an unquoted 2:4; quote it: "2:4"'),
    ("pattern: [unstructured, 1:4]", "unquoted 1:4"),
    ("pattern: '4:2'", "pattern 4:2: M non-zeros of N needs 0 < M < N"),
    ("pattern: 1x1", "1x1 is unstructured"),
    ("pattern: diagonal", "unknown sparsity pattern 'diagonal'"),
    ("policy: fast", "unknown pruning policy 'fast'; choose from all, xnnpack"),
])
def test_bad_structure_in_a_study_file_is_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="search.(pattern|policy)") as caught:
        parse_study_config(yaml.safe_load(f"name: x\nsearch:\n  {text}\n"), source="s.yaml")
    assert message in str(caught.value)


# --- real training ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("structure", [Structure("2:4"), Structure("1:4"), Structure("1x4"), Structure("4x1"),
                                       Structure(allocation=1.0), Structure("2:4", allocation=0.5)])
def test_trained_weights_have_the_pattern_and_each_layer_its_target(structure: Structure) -> None:
    from dataclasses import asdict

    from sweep.data.datasets import load_dataset
    from sweep.modeling.measure import prunable_weights
    from sweep.modeling.training import train

    config = parse_study_config({"name": "s", "model": {"builder": "cnn"}, "train": {"epochs": 2, "batch_size": 64}})
    data = load_dataset(config.data)
    steps = data.total_steps(config.train)
    plan = SchedulePlan("polynomial", steps, 0, steps - 4, 4, 0.8, initial_sparsity=0.2, power=3.0)
    trained = train(data, config, seed=2, plan=plan, structure=structure)
    layers = {name: asdict(how) for name, how in trained.layers.items()}
    assert set(layers) == set(CNN)
    assert {how["pattern"] for how in layers.values()} >= {structure.pattern}
    assert_layers_follow({n: w[0] for n, w in prunable_weights(trained.model).items()}, layers)
    # the size it plans is known after the first epoch, before the masks reach it (M:N: fixed at step 1)
    planned = trained.history["planned_sparsity"]
    assert planned[0] == planned[-1] == pytest.approx(trained.history["mask_sparsity"][-1], abs=0.005)
    if Pattern(structure.pattern).m_of_n is None:
        assert trained.history["mask_sparsity"][0] < planned[0] - 0.05  # 0.725 after half the steps


@pytest.mark.slow
def test_a_study_searches_patterns_and_per_layer_targets_and_its_rerun_exports_them(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    from sweep._tf import keras
    from sweep.stores.optuna_storage import load_study

    write_study(tmp_path, name="shaped", n_trials=3, model={"builder": "cnn"},
                search={"pattern": ["2:4", "1x4"], "per_layer": True, "schedule": "constant"})
    result = run_sweep("run", "shaped.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study("shaped", f"sqlite:///{tmp_path}/sweep.db")
    trials = study.trials
    assert {t.params["pattern"] for t in trials} <= {"2:4", "1x4"} and all("allocation" in t.params for t in trials)
    for trial in trials:  # the measured per-layer sparsity is each layer's own target
        for name, how in trial.user_attrs["layers"].items():
            assert trial.user_attrs["metrics"][f"sparsity/{name}"] == pytest.approx(how["target"], abs=0.01), name

    trial = next(t for t in trials if t.params["pattern"] == "2:4")
    rerun = run_sweep("rerun", "--study", "shaped", "--trial", str(trial.number), "--output", "out", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # every compared metric reproduced exactly
    exported = keras.models.load_model(tmp_path / "out" / "model.keras")
    kernels = {layer.name: layer.get_weights()[0] for layer in exported.layers if layer.get_weights()}
    assert_layers_follow(kernels, trial.user_attrs["layers"])
    # model.tflite stores Dense kernels as (out, in): the pattern runs along its last axis
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "model.tflite"))
    dense1 = next(interpreter.get_tensor(d["index"]) for d in interpreter.get_tensor_details()
                  if tuple(d["shape"]) == (64, 512))
    assert at_most_m_of_n(dense1.T, 2, 4) and np.count_nonzero(dense1) == dense1.size // 2
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["reproduced"]["sparsity"] == trial.user_attrs["metrics"]["sparsity"]

    from sweep.results.analysis import load_runs  # what the notebook reads back from MLflow

    runs = load_runs(f"sqlite:///{tmp_path}/mlflow.db", "shaped")
    row = runs.trials.set_index("trial").loc[trial.number]
    assert row["pattern"] == "2:4" and row["pattern/dense1"] == "2:4" and row["pattern/conv1"] == "unstructured"
    assert row["target_sparsity/dense1"] == 0.5
    assert runs.plan(trial.number).final_sparsity == trial.params["final_sparsity"]


@pytest.mark.slow
def test_the_xnnpack_policy_prunes_only_1x1_convolutions(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text(XNNPACK_FILES)
    write_study(tmp_path, name="xnn", n_trials=1, model={"builder": "net.py:stem_net"},
                data={"loader": "net.py:load"}, search={"policy": "xnnpack", "final_sparsity": 0.7})
    result = run_sweep("run", "xnn.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    from sweep.stores.optuna_storage import load_study

    (trial,) = load_study("xnn", f"sqlite:///{tmp_path}/sweep.db").trials
    assert trial.params["policy"] == "xnnpack" and trial.user_attrs["pruned_layers"] == ["expand", "mix"]
    metrics = trial.user_attrs["metrics"]
    assert metrics["sparsity/expand"] == pytest.approx(0.7, abs=0.01) == metrics["sparsity/mix"]
