"""What sweep takes from Optuna's private API (`sweep/optuna_private.py`), pinned: an Optuna
upgrade that changes any of it fails here, and the fix is one file."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import optuna
import pytest
from hypothesis import given
from hypothesis import strategies as st
from optuna.trial import TrialState

from sweep.optuna_private import (
    StaleTrialHookStorage,
    domination_ranks,
    heartbeat,
    hypervolume,
    is_pareto_front,
    study_id,
    trial_id,
)


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=12))
def test_domination_ranks_match_a_brute_force_peel(points: list[tuple[int, int]]) -> None:
    ranks = domination_ranks(points)
    for i, j in itertools.product(range(len(points)), repeat=2):
        a, b = points[i], points[j]
        if a[0] <= b[0] and a[1] <= b[1] and a != b:  # i dominates j
            assert ranks[i] < ranks[j]
    for i, rank in enumerate(ranks):  # each point of rank r > 0 is dominated by one of rank r - 1
        assert rank == 0 or any(ranks[j] == rank - 1 and points[j][0] <= points[i][0] and points[j][1] <= points[i][1]
                                for j in range(len(points)))


@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=12))
def test_the_pareto_front_is_rank_zero_and_keeps_equal_points(points: list[tuple[int, int, int]]) -> None:
    front = is_pareto_front(np.array(points))
    assert front.tolist() == [rank == 0 for rank in domination_ranks(points)]


def test_hypervolume_is_the_exact_dominated_volume() -> None:
    reference = np.array([1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5]]), reference) == 0.25
    # two boxes of 0.5 x 0.75 overlapping in 0.5 x 0.5: 0.375 + 0.375 - 0.25
    assert np.isclose(hypervolume(np.array([[0.5, 0.25], [0.25, 0.5]]), reference), 0.5)
    assert np.isclose(hypervolume(np.array([[0.2, 0.3, 0.4]]), np.ones(3)), 0.8 * 0.7 * 0.6)


def test_ids_are_the_storages(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'ids.db'}")
    optuna.create_study(storage=storage, study_name="first").optimize(lambda t: 0.0, n_trials=2)
    study = optuna.create_study(storage=storage, study_name="second")
    study.optimize(lambda t: 0.0, n_trials=1)
    assert study_id(study) == storage.get_study_id_from_name("second")
    trial = study.trials[0]
    assert trial.number == 0 and trial_id(trial) == 3  # ids count across studies, numbers within one
    assert storage.get_trial(trial_id(trial)).number == 0


class FailsOnlyChosen(StaleTrialHookStorage):
    chosen: ClassVar[list[int]] = []

    def stale_trials_to_fail(self, study_id: int) -> list[int]:
        return self.chosen


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")
def test_optuna_fails_exactly_the_trials_the_hook_returns(tmp_path: Path) -> None:
    storage = FailsOnlyChosen(f"sqlite:///{tmp_path / 'stale.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage)
    for _ in range(3):
        study.ask()
    beat_once, never_beat, chosen = (trial_id(t) for t in study.trials)
    storage.record_heartbeat(beat_once)
    time.sleep(2.5)  # heartbeats are stored to the second
    assert storage.optuna_stale_trial_ids(study_id(study)) == [beat_once]  # Optuna skips one that never beat
    FailsOnlyChosen.chosen = [chosen]
    optuna.storages.fail_stale_trials(study)
    assert [t.state for t in study.trials] == [TrialState.RUNNING, TrialState.RUNNING, TrialState.FAIL]
    assert never_beat not in storage.optuna_stale_trial_ids(study_id(study))


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")
def test_a_heartbeat_keeps_an_asked_trial_fresh_until_its_block_ends(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'beat.db'}", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage)
    kept, left = study.ask(), study.ask()
    with heartbeat(study, kept):
        with heartbeat(study, left):
            time.sleep(0.5)
        time.sleep(3.5)  # `left` beat last 3.5 s ago or more, `kept` within the last second
        assert storage._get_stale_trial_ids(study_id(study)) == [left._trial_id]
    time.sleep(3.5)
    assert sorted(storage._get_stale_trial_ids(study_id(study))) == [kept._trial_id, left._trial_id]
