"""Real training on digits: achieved sparsity, reproducibility, failures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from sweep.config import parse_study_config
from sweep.data.datasets import load_dataset
from sweep.errors import UsageError
from sweep.modeling.measure import sparsity
from sweep.modeling.training import TrainingDiverged, train
from sweep.search.space import suggest_params
from sweep.search.trial_plan import plan_schedule

pytestmark = pytest.mark.integration  # TensorFlow in this process

CONFIG = parse_study_config(
    {"name": "t", "model": {"builder": "mlp"}, "train": {"epochs": 2, "batch_size": 64}}
)
DATA = load_dataset(CONFIG.data)
TOTAL_STEPS = DATA.total_steps(CONFIG.train)


def sampled(family: str, seed: int):  # type: ignore[no-untyped-def]
    search = parse_study_config({"name": "t", "search": {"schedule": family}}).search
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
    return suggest_params(trial, search)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("family", ["polynomial", "constant", "step"])
def test_achieved_sparsity_is_within_a_hundredth_of_the_target(family: str, seed: int) -> None:
    params = sampled(family, seed)
    plan = plan_schedule(params, TOTAL_STEPS)
    trained = train(DATA, CONFIG, seed, plan=plan, weight_decay=params.weight_decay)
    achieved = sparsity(trained.model)
    assert achieved["sparsity"] == pytest.approx(params.final_sparsity, abs=0.01), plan
    assert trained.history["mask_sparsity"][-1] == pytest.approx(params.final_sparsity, abs=0.01)
    assert not any(hasattr(layer, "pruning_vars") for layer in trained.model.layers)  # stripped


def test_same_seed_reproduces_the_same_weights() -> None:
    params = sampled("polynomial", 3)
    plan = plan_schedule(params, TOTAL_STEPS)
    first, second = (train(DATA, CONFIG, 7, plan=plan, weight_decay=1e-4) for _ in range(2))
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.history == second.history
    third = train(DATA, CONFIG, 8, plan=plan, weight_decay=1e-4)
    assert not np.array_equal(first.model.get_weights()[0], third.model.get_weights()[0])


def test_dense_training_learns_digits() -> None:
    trained = train(DATA, CONFIG, 0)
    assert trained.history["val_accuracy"][-1] > 0.8
    assert sparsity(trained.model)["sparsity"] < 0.01


def test_nan_loss_fails_the_trial_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "nan.py").write_text(
        "import tf_keras as keras\n"
        "def build(input_shape, num_classes):\n"
        "    inputs = keras.Input(input_shape)\n"
        "    x = keras.layers.Flatten()(inputs)\n"
        "    x = keras.layers.Dense(num_classes)(x)\n"
        "    return keras.Model(inputs, keras.layers.Lambda(lambda t: t * float('nan'))(x))\n"
    )
    config = parse_study_config(
        {"name": "t", "model": {"builder": "nan.py:build"}, "train": {"epochs": 2}}, base_dir=tmp_path
    )
    with pytest.raises(TrainingDiverged, match="loss became NaN"):
        train(DATA, config, 0)


def test_builder_returning_a_keras3_or_other_object_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text("def build(input_shape, num_classes):\n    return 'not a model'\n")
    config = parse_study_config({"name": "t", "model": {"builder": "bad.py:build"}}, base_dir=tmp_path)
    with pytest.raises(UsageError, match="returned str; it must return an uncompiled tf_keras.Model"):
        train(DATA, config, 0)


def test_a_channel_trial_removes_whole_channels_along_its_schedule_and_reproduces() -> None:
    from sweep.modeling.measure import accuracy
    from sweep.search.structure import Structure

    config = parse_study_config({"name": "t", "model": {"builder": "cnn"}, "train": {"epochs": 2, "batch_size": 64}})
    params = sampled("polynomial", 3)
    plan = plan_schedule(params, TOTAL_STEPS)
    first, second = (train(DATA, config, 7, plan=plan, structure=Structure("channels")) for _ in range(2))
    assert first.channels == second.channels
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    widths = {layer.name: layer.get_weights()[0].shape[-1] for layer in first.model.layers if layer.get_weights()}
    assert widths == first.channels
    assert widths["conv1"] < 16 and widths["conv2"] < 32 and widths["dense1"] < 64 and widths["logits"] == 10
    planned = first.history["planned_sparsity"][-1]
    assert first.history["mask_sparsity"][-1] == pytest.approx(planned)
    assert planned == pytest.approx(params.final_sparsity, abs=0.05)
    assert sparsity(first.model, first.dense_sizes)["sparsity"] == pytest.approx(planned, abs=1e-6)
    assert {how.pattern for how in first.layers.values()} == {"channels"}
    # the rebuilt model predicts what the masked model validated after the last epoch
    assert accuracy(first.model, DATA.val) == pytest.approx(first.history["val_accuracy"][-1], abs=1 / DATA.val.size)
