from __future__ import annotations

import math

import optuna
import pytest

from sweep.config import parse_study_config
from sweep.search.space import fixed_search, start_points, suggest_params


def search(**overrides: object):  # type: ignore[no-untyped-def]
    return parse_study_config({"name": "x", "search": overrides}).search


def test_param_names_are_the_search_keys() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    names: set[str] = set()
    for _ in range(40):
        trial = study.ask()
        suggest_params(trial, search())
        names |= set(trial.params)
    assert {"schedule", "final_sparsity", "initial_sparsity", "begin_step", "end_step", "power",
            "frequency", "breakpoints", "weight_decay"} <= names
    assert {n for n in names if n.startswith("step_")} >= {"step_level_1", "step_position_1"}


@pytest.mark.parametrize("schedule", ["polynomial", "constant", "step"])
def test_conditional_params_appear_only_for_their_family(schedule: str) -> None:
    trial = optuna.create_study().ask()
    params = suggest_params(trial, search(schedule=schedule))
    assert ("power" in trial.params) == (schedule == "polynomial")
    assert ("breakpoints" in trial.params) == (schedule == "step")
    if schedule == "step":
        assert len(params.step_levels) == params.breakpoints - 1
        assert len(params.step_positions) == params.breakpoints - 2


def test_fixed_values_are_recorded_and_ranges_respected() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        params = suggest_params(trial, search(schedule="constant", final_sparsity=0.75, weight_decay=0))
        assert trial.params["final_sparsity"] == 0.75 and params.weight_decay == 0
        assert 0.0 <= params.begin_step <= 0.3 and 0.5 <= params.end_step <= 1.0
        assert 5 <= params.frequency <= 50


def test_fixed_trial_replays_stored_params_exactly() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(10):
        trial = study.ask()
        original = suggest_params(trial, search())
        assert suggest_params(optuna.trial.FixedTrial(trial.params), search()) == original


@pytest.mark.parametrize("seed", range(6))
def test_fixed_search_replays_a_trial_through_the_study_file(seed: int) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask()
    original = suggest_params(trial, search())
    fixed = fixed_search(search(), trial.params)
    assert len(fixed.schedule) == 1
    replayed = optuna.create_study().ask()
    assert suggest_params(replayed, fixed) == original
    assert replayed.params == trial.params


def test_start_points_fill_every_stratum_of_every_shared_range() -> None:
    space = search(final_sparsity=[0.5, 0.95], frequency=[5, 50])
    points = start_points(space, 10, seed=0)
    assert len(points) == 10
    for name, log in [("final_sparsity", False), ("begin_step", False), ("end_step", False), ("weight_decay", True)]:
        span = getattr(space, name)
        low, high = (math.log(span.low), math.log(span.high)) if log else (span.low, span.high)
        strata = sorted(int(((math.log(p[name]) if log else p[name]) - low) / (high - low) * 10) for p in points)
        assert strata == list(range(10)), name  # one point per tenth of the range: a Latin hypercube
        assert all(span.low <= p[name] <= span.high for p in points)
    assert [p["schedule"] for p in points[:6]] == ["polynomial", "constant", "step"] * 2
    frequencies = [p["frequency"] for p in points]  # integers: the lowest and highest tenth are hit
    assert all(isinstance(f, int) and 5 <= f <= 50 for f in frequencies)
    assert min(frequencies) <= 9 and max(frequencies) >= 46


def test_start_points_are_seeded_and_leave_fixed_values_to_the_search() -> None:
    space = search(schedule="constant", begin_step=0.1)
    assert start_points(space, 4, seed=3) == start_points(space, 4, seed=3) != start_points(space, 4, seed=4)
    points = start_points(space, 4, seed=3)
    assert all("begin_step" not in p and p["schedule"] == "constant" for p in points)


def test_enqueued_start_points_are_what_the_trials_suggest() -> None:
    space = search()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    points = start_points(space, 3, seed=0)
    for point in points:
        study.enqueue_trial(point)
    for point in points:
        trial = study.ask()
        suggest_params(trial, space)
        assert {k: trial.params[k] for k in point} == point
