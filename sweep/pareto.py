"""Pareto analysis of a study; pure Python, no TensorFlow.

The front is Optuna's own (`Study.best_trials`): completed trials that no other
feasible completed trial dominates, infeasible ones (below `constraints.min_accuracy`)
left out.

Hypervolume uses Optuna's `compute_hypervolume` on normalised objectives, so it reads
as a fraction of a unit box: accuracy as is, `compressed_size` as a fraction of the
dense baseline's `compressed_bytes`, sparsity as is. The reference point is accuracy 0,
the dense baseline's size and sparsity 0: a trial counts only where it beats the
dense model on size (1.0 would be a perfect model of zero bytes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna._hypervolume import compute_hypervolume  # Optuna's exact WFG; no public alias yet
from optuna.trial import FrozenTrial, TrialState

from sweep.config import OBJECTIVES

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
# Key parameters of each schedule family, shown next to the metrics.
KEY_PARAMS = {
    "polynomial": ("initial_sparsity", "power"),
    "constant": (),
    "step": ("breakpoints",),
}
COMMON_PARAMS = ("begin_step", "end_step", "frequency", "weight_decay")


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0.0 for value in trial.constraints.values())


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto-optimal trials, most accurate first."""
    return sorted(study.best_trials, key=lambda t: (-metric(t, "val_accuracy"), t.number))


def metric(trial: FrozenTrial, name: str) -> float:
    return float(trial.user_attrs["metrics"][name])


def normalised_losses(
    trials: Sequence[FrozenTrial], objectives: Sequence[str], baseline: Mapping[str, float]
) -> np.ndarray:
    """Objective values as minimisation losses in units of the hypervolume's unit box."""
    columns = []
    for objective in objectives:
        name, _ = OBJECTIVES[objective]
        values = np.array([metric(t, name) for t in trials], dtype=float)
        if objective == "compressed_size":
            columns.append(values / float(baseline["compressed_bytes"]))
        else:
            columns.append(-values)
    return np.stack(columns, axis=1) if trials else np.empty((0, len(objectives)))


def reference_point(objectives: Sequence[str]) -> np.ndarray:
    """Accuracy 0, the dense baseline's size, sparsity 0 (in normalised units)."""
    return np.array([1.0 if o == "compressed_size" else 0.0 for o in objectives])


def hypervolume(
    trials: Sequence[FrozenTrial], objectives: Sequence[str], baseline: Mapping[str, float]
) -> float:
    """Hypervolume of the feasible trials' front against `reference_point`."""
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and is_feasible(t)]
    losses = normalised_losses(feasible, objectives, baseline)
    reference = reference_point(objectives)
    inside = losses[np.all(losses < reference, axis=1)]  # points beyond it add nothing
    return float(compute_hypervolume(inside, reference)) if len(inside) else 0.0


def hypervolume_history(
    study: optuna.Study, objectives: Sequence[str], baseline: Mapping[str, float]
) -> list[tuple[int, float]]:
    """(trial number, hypervolume of all trials completed up to it), in completion order."""
    done = sorted(completed_trials(study), key=lambda t: (t.datetime_complete or 0, t.number))
    return [(t.number, hypervolume(done[: i + 1], objectives, baseline)) for i, t in enumerate(done)]


def trial_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: `COLUMNS`, then the family's key parameters and the others."""
    rows = []
    for trial in trials:
        metrics = trial.user_attrs.get("metrics", {})
        schedule = trial.params.get("schedule")
        row = {
            "trial": trial.number,
            "schedule": schedule,
            "final_sparsity": trial.params.get("final_sparsity"),
            **{k: metrics.get(k) for k in COLUMNS[3:-1]},
            "mlflow_run_id": trial.user_attrs.get("mlflow_run_id"),
        }
        for name in (*KEY_PARAMS.get(schedule, ()), *COMMON_PARAMS):
            row[name] = trial.params.get(name)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else COLUMNS)
