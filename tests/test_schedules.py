"""The tfmot schedules do, step by step, what the pure `SchedulePlan` says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sweep._tf import keras, tf, tfmot
from sweep.modeling.schedules import StepSparsity, build_schedule, load_scope
from sweep.search.space import TrialParams
from sweep.search.trial_plan import plan_schedule

pytestmark = pytest.mark.integration  # TensorFlow in this process

PARAMS = {
    "polynomial": TrialParams("polynomial", 0.9, 0.1, 0.8, 7, 0.0, initial_sparsity=0.2, power=3.0),
    "constant": TrialParams("constant", 0.6, 0.0, 1.0, 11, 0.0),
    "step": TrialParams("step", 0.85, 0.2, 0.9, 5, 0.0, breakpoints=4,
                        step_levels=(0.1, 0.4, 0.7), step_positions=(0.3, 0.6)),
}


@pytest.mark.parametrize("family", sorted(PARAMS))
def test_tfmot_schedule_matches_the_plan_at_every_step(family: str) -> None:
    plan = plan_schedule(PARAMS[family], total_steps=120)
    schedule = build_schedule(plan)
    for step in range(130):
        should_prune, sparsity = schedule(tf.constant(step, tf.int64))
        assert bool(should_prune) == plan.should_prune(step), step
        assert float(sparsity) == pytest.approx(plan.sparsity_at(step), abs=1e-6), step


def test_step_sparsity_config_round_trips() -> None:
    schedule = StepSparsity([10, 40, 80], [0.2, 0.5, 0.9], begin_step=10, end_step=80, frequency=10)
    config = schedule.get_config()
    assert config["class_name"] == "StepSparsity"
    again = StepSparsity.from_config(config["config"])
    assert again.get_config() == config
    for step in (5, 10, 39, 40, 79, 80, 81):
        assert [float(v) for v in again(tf.constant(step))] == [float(v) for v in schedule(tf.constant(step))]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"boundaries": [0, 10], "levels": [0.5], "begin_step": 0, "end_step": 10}, "equal length"),
        ({"boundaries": [10, 0], "levels": [0.1, 0.5], "begin_step": 0, "end_step": 10}, "ascending"),
        ({"boundaries": [0, 10], "levels": [0.1, 1.0], "begin_step": 0, "end_step": 10}, "range"),
    ],
)
def test_step_sparsity_rejects_impossible_levels(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StepSparsity(**kwargs)


def test_saved_pruned_model_with_step_schedule_loads_again(tmp_path: Path) -> None:
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(8, name="dense")])
    schedule = StepSparsity([0, 2], [0.25, 0.5], begin_step=0, end_step=2, frequency=1)
    pruned = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    pruned.compile("adam", "mse")
    pruned.fit(np.ones((8, 4)), np.ones((8, 8)), epochs=1, batch_size=4, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    with load_scope():
        loaded = keras.models.load_model(path)
    restored = loaded.layers[0].pruning_schedule
    assert isinstance(restored, StepSparsity)
    assert restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(loaded.predict(np.ones((2, 4)), verbose=0), pruned.predict(np.ones((2, 4)), verbose=0))
