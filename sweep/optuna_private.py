"""Optuna's private API that sweep relies on, in one place: an Optuna upgrade that moves or
changes any of it is a change to this file alone. `tests/test_optuna_private.py` pins the
behaviour each name gives, so such an upgrade fails there first.

- the Pareto test and non-dominated sorting that `Study.best_trials` and NSGA-II use, so a
  table of runs, the rungs of early stopping and a study agree on what dominates;
- the exact hypervolume (WFG) Optuna computes, which has no public alias;
- the ids a storage knows trials and studies by;
- the heartbeat hook that decides which RUNNING trials Optuna fails as stale, and the heartbeat
  thread `study.optimize` keeps for a running trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume
from optuna.storages._heartbeat import get_heartbeat_thread
from optuna.study._multi_objective import _fast_non_domination_rank, _is_pareto_front
from optuna.trial import FrozenTrial


def is_pareto_front(losses: np.ndarray) -> np.ndarray:
    """Which rows of `losses` (all minimised) no other row dominates; equal rows are all kept."""
    return np.asarray(_is_pareto_front(np.asarray(losses, dtype=float), assume_unique_lexsorted=False))


def domination_ranks(losses: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting: 0 for the points no other point dominates, 1 for those only
    rank-0 points dominate, and so on (all losses minimised)."""
    return [int(rank) for rank in _fast_non_domination_rank(np.asarray(losses, dtype=float))]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """The volume `points` (all minimised, each below `reference`) dominate up to `reference`."""
    return float(compute_hypervolume(points, reference))


def trial_id(trial: FrozenTrial) -> int:
    """The storage's id of a trial (its `number` counts within the study only)."""
    return int(trial._trial_id)


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> AbstractContextManager[object]:
    """The heartbeat `study.optimize` keeps for a trial while its objective runs (nothing when
    the storage has none): for a trial told after the block that asked it has moved on."""
    return get_heartbeat_thread(trial._trial_id, study._storage)  # type: ignore[return-value]


class StaleTrialHookStorage(optuna.storages.RDBStorage):
    """`RDBStorage` whose stale trials, the RUNNING ones Optuna's heartbeat fails, are those
    `stale_trials_to_fail` returns; `optuna_stale_trial_ids` gives Optuna's own choice."""

    def optuna_stale_trial_ids(self, study_id: int) -> list[int]:
        """RUNNING trials whose last heartbeat is older than the grace period."""
        return list(super()._get_stale_trial_ids(study_id))

    def stale_trials_to_fail(self, study_id: int) -> list[int]:
        return self.optuna_stale_trial_ids(study_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # Optuna's `fail_stale_trials` calls this, and fails exactly the trials it returns
        return self.stale_trials_to_fail(study_id)
