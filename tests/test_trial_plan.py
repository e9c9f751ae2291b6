from __future__ import annotations

import math

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweep.config import parse_study_config
from sweep.search.space import TrialParams, suggest_params
from sweep.search.trial_plan import plan_schedule


def constant(**kw: object) -> TrialParams:
    values = {"schedule": "constant", "final_sparsity": 0.8, "begin_step": 0.1, "end_step": 0.9,
              "frequency": 10, "weight_decay": 0.0}
    return TrialParams(**{**values, **kw})  # type: ignore[arg-type]


def test_end_step_moves_onto_the_pruning_grid() -> None:
    plan = plan_schedule(constant(begin_step=0.1, end_step=0.8, frequency=30), total_steps=100)
    assert (plan.begin_step, plan.end_step, plan.frequency) == (10, 70, 30)
    assert plan.pruning_steps() == [10, 40, 70]
    # the nearest grid point, unless it lies past the last batch
    assert plan_schedule(constant(begin_step=0.1, end_step=0.9, frequency=30), 100).end_step == 100
    assert plan_schedule(constant(begin_step=0.1, end_step=0.95, frequency=40), 100).end_step == 90


def test_frequency_longer_than_the_window_is_shortened() -> None:
    # tfmot's default frequency=100 on a 40-step run would never reach the target
    plan = plan_schedule(constant(begin_step=0.0, end_step=1.0, frequency=100), total_steps=40)
    assert plan.frequency == 40 and plan.pruning_steps() == [40]


def test_first_step_is_one_so_begin_zero_prunes_first_at_frequency() -> None:
    plan = plan_schedule(constant(begin_step=0.0, end_step=1.0, frequency=25), total_steps=100)
    assert plan.pruning_steps() == [25, 50, 75, 100]
    assert plan.mask_sparsity_after(24) == 0.0 and plan.mask_sparsity_after(25) == 0.8


def test_polynomial_rises_from_initial_to_final() -> None:
    params = TrialParams("polynomial", 0.9, 0.0, 1.0, 10, 0.0, initial_sparsity=0.1, power=3.0)
    plan = plan_schedule(params, total_steps=100)
    assert plan.sparsity_at(0) == pytest.approx(0.1)
    assert plan.sparsity_at(50) == pytest.approx(0.9 + (0.1 - 0.9) * 0.5**3)
    assert plan.sparsity_at(100) == pytest.approx(0.9) and plan.sparsity_at(500) == pytest.approx(0.9)


def test_step_schedule_levels_and_breakpoints_step_by_step() -> None:
    params = TrialParams("step", 0.8, 0.1, 0.9, 10, 0.0, breakpoints=3,
                         step_levels=(0.25, 0.5), step_positions=(0.5,))
    plan = plan_schedule(params, total_steps=100)
    assert plan.boundaries == (10, 50, 90)
    assert plan.levels == pytest.approx((0.2, 0.4, 0.8))
    expected = {9: 0.2, 10: 0.2, 49: 0.2, 50: 0.4, 89: 0.4, 90: 0.8, 100: 0.8}
    for step, sparsity in expected.items():
        assert plan.sparsity_at(step) == pytest.approx(sparsity), step
    assert [plan.should_prune(s) for s in (10, 15, 20, 90, 100)] == [True, False, True, True, False]


def test_step_boundaries_snap_to_pruning_events() -> None:
    params = TrialParams("step", 0.9, 0.0, 1.0, 7, 0.0, breakpoints=4,
                         step_levels=(0.1, 0.2, 0.3), step_positions=(0.33, 0.61))
    plan = plan_schedule(params, total_steps=100)
    assert all(plan.should_prune(b) or b == 0 for b in plan.boundaries)


SEARCH = parse_study_config({"name": "x"}).search


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10_000), total_steps=st.integers(1, 5_000))
def test_every_sampled_plan_applies_its_final_sparsity_inside_training(seed: int, total_steps: int) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    params = suggest_params(study.ask(), SEARCH)
    plan = plan_schedule(params, total_steps)
    events = plan.pruning_steps()
    assert events, plan
    assert 1 <= events[-1] == plan.end_step <= total_steps
    assert math.isclose(plan.sparsity_at(plan.end_step), params.final_sparsity, abs_tol=1e-9)
    assert plan.mask_sparsity_after(total_steps) == pytest.approx(params.final_sparsity)
    if plan.family == "step":
        assert list(plan.boundaries) == sorted(plan.boundaries)
        assert list(plan.levels) == sorted(plan.levels)
