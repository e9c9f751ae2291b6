"""Pareto analysis of a study; pure Python, no TensorFlow.

The front is Optuna's own (`Study.best_trials` for a study, its `_is_pareto_front` on a
table of runs): completed trials that no other feasible completed trial dominates,
infeasible ones (below `constraints.min_accuracy`) left out.

Hypervolume uses Optuna's exact hypervolume on normalised objectives, so it reads
as a fraction of a unit box: maximised objectives (accuracies, sparsity) as they are,
minimised ones (sizes, latencies) as a fraction of the dense baseline's value. The
reference point is 0 for the maximised ones and the dense baseline for the minimised
ones: a trial counts only where it beats the dense model on size or speed (1.0 would be
a perfect model of zero bytes or zero latency).

Tables: `trial_table` turns trials into one row per trial (params, metrics, run id),
the same shape `sweep.results.analysis` builds from MLflow runs, so selection and plots work on
either.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from sweep.config import OBJECTIVES
from sweep.optuna_private import hypervolume as volume_dominated
from sweep.optuna_private import is_pareto_front
from sweep.results.columns import TRIAL_TABLE_COLUMNS, TRIAL_TABLE_METRICS
from sweep.stores import records


def completed_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials, with the metrics measured after them (`records.with_later_metrics`)."""
    return records.with_later_metrics(study, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(value <= 0.0 for value in trial.constraints.values())


def feasible_mask(table: pd.DataFrame) -> pd.Series:
    """Which rows of a trial table are feasible (all of them in a table without the column)."""
    return table["feasible"].astype(bool) if "feasible" in table else pd.Series(True, index=table.index)


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto-optimal trials, most accurate first, with the metrics measured
    after them."""
    front = records.with_later_metrics(study, study.best_trials)
    return sorted(front, key=lambda t: (-records.trial_metrics(t)["val_accuracy"], t.number))


def trial_table(trials: Sequence[FrozenTrial]) -> pd.DataFrame:
    """One row per trial: `TRIAL_TABLE_COLUMNS`, `feasible`, every other metric, then every param."""
    rows = []
    for trial in trials:
        metrics = records.trial_metrics(trial) if records.has_metrics(trial) else {}
        row = {
            "trial": trial.number,
            "schedule": trial.params.get("schedule"),
            "final_sparsity": trial.params.get("final_sparsity"),
            **{k: metrics.get(k) for k in TRIAL_TABLE_METRICS},
            "mlflow_run_id": records.mlflow_run_id(trial),
            "feasible": is_feasible(trial),
        }
        row.update({k: v for k, v in metrics.items() if k not in row})
        row.update({k: v for k, v in trial.params.items() if k not in row})
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else [*TRIAL_TABLE_COLUMNS, "feasible"])


def losses(table: pd.DataFrame, objectives: Sequence[str]) -> np.ndarray:
    """The objectives as minimisation losses (maximised ones negated)."""
    columns = [
        table[OBJECTIVES[o][0]].to_numpy(float) * (-1 if OBJECTIVES[o][1] == "maximize" else 1)
        for o in objectives
    ]
    return np.stack(columns, axis=1) if len(table) else np.empty((0, len(objectives)))


def pareto_front(table: pd.DataFrame, objectives: Sequence[str]) -> pd.DataFrame:
    """The feasible non-dominated rows of a trial table, most accurate first (the same
    set as `pareto_trials` for the study the table came from)."""
    feasible = table[feasible_mask(table)]
    if feasible.empty:
        return feasible
    mask = is_pareto_front(losses(feasible, objectives))
    return feasible[mask].sort_values(["val_accuracy", "trial"], ascending=[False, True])


def normalised_losses(
    table: pd.DataFrame, objectives: Sequence[str], baseline: Mapping[str, float]
) -> np.ndarray:
    """Objective values as minimisation losses in units of the hypervolume's unit box."""
    scaled = losses(table, objectives)
    for column, objective in enumerate(objectives):
        metric, direction = OBJECTIVES[objective]
        if direction == "minimize":
            scaled[:, column] /= float(baseline[metric])
    return scaled


def reference_point(objectives: Sequence[str]) -> np.ndarray:
    """0 for maximised objectives, the dense baseline (1.0) for minimised ones."""
    return np.array([1.0 if OBJECTIVES[o][1] == "minimize" else 0.0 for o in objectives])


def reference_description(objectives: Sequence[str], baseline: Mapping[str, float]) -> str:
    """`reference_point` in words: 0 for what is maximised, the dense baseline's value else."""
    parts = []
    for objective in objectives:
        metric, direction = OBJECTIVES[objective]
        value = f"{baseline[metric]:.0f}" if metric.endswith("bytes") else f"{baseline[metric]:.4g}"
        parts.append(f"{metric} 0" if direction == "maximize" else f"{metric} {value} (dense baseline)")
    return ", ".join(parts)


def hypervolume(table: pd.DataFrame, objectives: Sequence[str], baseline: Mapping[str, float]) -> float:
    """Hypervolume of the feasible rows' front against `reference_point` (of trials:
    `hypervolume(trial_table(trials), ...)`)."""
    if table.empty:
        return 0.0
    points = normalised_losses(table[feasible_mask(table)], objectives, baseline)
    reference = reference_point(objectives)
    inside = points[np.all(points < reference, axis=1)]  # points beyond it add nothing
    return volume_dominated(inside, reference) if len(inside) else 0.0


def hypervolume_history(
    table: pd.DataFrame, objectives: Sequence[str], baseline: Mapping[str, float]
) -> list[tuple[int, float]]:
    """(trial, hypervolume of the rows up to it), rows taken in trial-number order."""
    ordered = table.sort_values("trial")
    return [
        (int(number), hypervolume(ordered.iloc[: i + 1], objectives, baseline))
        for i, number in enumerate(ordered["trial"])
    ]
