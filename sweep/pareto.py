"""Pareto analysis of a finished (or running) study; pure Python, no TensorFlow.

The front is Optuna's own (`Study.best_trials`): completed trials that no other
feasible completed trial dominates, infeasible ones (below `constraints.min_accuracy`)
left out. Each row carries what a user needs to choose: the schedule, its key
parameters, the measured metrics and the MLflow run.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

# Columns of a trial table, in the order a person reads them.
COLUMNS = [
    "trial",
    "schedule",
    "final_sparsity",
    "val_accuracy",
    "test_accuracy",
    "sparsity",
    "compressed_bytes",
    "compression_ratio",
    "mlflow_run_id",
]


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto-optimal trials, most accurate first."""
    front = study.best_trials
    return sorted(front, key=lambda t: (-t.user_attrs["metrics"]["val_accuracy"], t.number))


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def trial_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial with the `COLUMNS` and every other sampled parameter after them."""
    rows = []
    for trial in trials:
        metrics = trial.user_attrs.get("metrics", {})
        row = {
            "trial": trial.number,
            "schedule": trial.params.get("schedule"),
            "final_sparsity": trial.params.get("final_sparsity"),
            **{k: metrics.get(k) for k in COLUMNS[3:-1]},
            "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        }
        row.update({k: v for k, v in trial.params.items() if k not in row})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else COLUMNS)
