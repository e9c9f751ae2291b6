"""Choosing one Pareto-optimal trial (`sweep best`, `sweep rerun --best`); pure Python.

Accuracy and size are the study's own: `int8_val_accuracy` when its objectives have
`int8_accuracy`, else `val_accuracy`; the size its size objective minimises (`int8_size`:
`int8_gzip_bytes`, `int8_file_size`: `int8_bytes`), else `compressed_bytes`; latency is
`latency_ms` with a `latency` objective, else `int8_latency_ms`.

* `--max-latency MS` first keeps only the trials at most that slow; then
* `--min-accuracy A`: the smallest model whose accuracy is at least A; ties go to the
  more accurate one;
* `--max-size BYTES`: the most accurate model of at most BYTES; ties go to the smaller;
* neither: with `--max-latency`, the most accurate of those; without, the knee of the
  front, the trial closest (Euclidean) to the ideal point once every objective is min-max
  normalised over the front: the best balance, no objective's units dominating.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import FrozenTrial

from sweep.config import OBJECTIVES
from sweep.errors import SweepError
from sweep.results.pareto import completed_trials, losses, pareto_trials, trial_table
from sweep.stores import records

if TYPE_CHECKING:
    from sweep.config import ConstraintsConfig


INT8_SIZE_OBJECTIVES = ("int8_size", "int8_file_size")


class NoTrialMatches(SweepError):
    """Raised when no Pareto-optimal trial satisfies the selection."""


def selection_metrics(objectives: Sequence[str]) -> tuple[str, str, str]:
    """The (accuracy, size, latency) metrics a selection reads for a study's objectives."""
    accuracy = "int8_val_accuracy" if "int8_accuracy" in objectives else "val_accuracy"
    size = next((OBJECTIVES[o][0] for o in INT8_SIZE_OBJECTIVES if o in objectives), "compressed_bytes")
    latency = "latency_ms" if "latency" in objectives else "int8_latency_ms"
    return accuracy, size, latency


def select_trial(
    front: pd.DataFrame,
    objectives: Sequence[str],
    *,
    min_accuracy: float | None = None,
    max_size: int | None = None,
    max_latency: float | None = None,
) -> int:
    """The trial number picked from `front` (a table of the feasible Pareto-optimal trials,
    `sweep.results.pareto.pareto_front` or `trial_table(pareto_trials(study))`) as described above."""
    if front.empty:
        raise NoTrialMatches("the study has no feasible completed trials yet; run more trials")
    if min_accuracy is not None and max_size is not None:
        raise NoTrialMatches("choose one of --min-accuracy and --max-size, not both")
    accuracy, size, latency = selection_metrics(objectives)
    for metric in {accuracy, size} | ({latency} if max_latency is not None else set()):
        if metric not in front or front[metric].isna().any():
            raise NoTrialMatches(f"the study's trials were not measured for {metric} (run before sweep measured it)")
    if max_latency is not None:
        front = _keep(front, latency, front[latency] <= max_latency, f"has {latency} at most {max_latency}",
                      "the fastest is trial {trial} with {value:.4f} ms", front[latency].idxmin())
    if min_accuracy is not None:
        candidates = _keep(front, accuracy, front[accuracy] >= min_accuracy, f"reaches {accuracy} {min_accuracy}",
                           "the most accurate is trial {trial} with {value:.4f}", front[accuracy].idxmax())
        ordered = candidates.sort_values([size, accuracy, "trial"], ascending=[True, False, True])
        return int(ordered.iloc[0]["trial"])
    if max_size is not None:
        candidates = _keep(front, size, front[size] <= max_size, f"has {size} at most {max_size}",
                           "the smallest is trial {trial} with {value:.0f} bytes", front[size].idxmin())
        ordered = candidates.sort_values([accuracy, size, "trial"], ascending=[False, True, True])
        return int(ordered.iloc[0]["trial"])
    if max_latency is not None:
        return int(front.sort_values([accuracy, latency, "trial"], ascending=[False, True, True]).iloc[0]["trial"])
    return knee(front, objectives)


def _keep(front: pd.DataFrame, metric: str, passing: pd.Series, condition: str, nearest: str,
          nearest_row: object) -> pd.DataFrame:
    """The rows of `front` that pass; none: `NoTrialMatches` naming the nearest miss."""
    if not passing.any():
        row = front.loc[nearest_row]
        detail = nearest.format(trial=int(row["trial"]), value=row[metric])
        raise NoTrialMatches(f"no Pareto-optimal trial {condition}; {detail}")
    return front[passing]


def knee(front: pd.DataFrame, objectives: Sequence[str]) -> int:
    """The trial nearest the ideal point in min-max normalised objective space."""
    ordered = front.sort_values(["val_accuracy", "trial"], ascending=[False, True])
    points = losses(ordered, objectives)
    low, high = points.min(axis=0), points.max(axis=0)
    spread = np.where(high > low, high - low, 1.0)
    distance = np.linalg.norm((points - low) / spread, axis=1)
    return int(ordered.iloc[int(np.argmin(distance))]["trial"])


def select_from_front(study: optuna.Study, objectives: Sequence[str], min_accuracy: float | None = None,
                      max_size: int | None = None, max_latency: float | None = None,
                      constraints: ConstraintsConfig | None = None) -> FrozenTrial:
    """The trial of the study's front `select_trial` picks (`sweep best`, `rerun --best`,
    `report`). With the study's `constraints`, a front left empty by them names the floor
    and the best accuracy reached: "run more trials" alone hides that the floor is too high."""
    front = pareto_trials(study)
    if not front and constraints is not None:
        _check_constraints_met(study, constraints)
    number = select_trial(trial_table(front), objectives, min_accuracy=min_accuracy, max_size=max_size,
                          max_latency=max_latency)
    return next(t for t in front if t.number == number)


def _check_constraints_met(study: optuna.Study, constraints: ConstraintsConfig) -> None:
    """`NoTrialMatches` if completed trials exist and the constraint floor excluded them all."""
    done = [t for t in completed_trials(study) if records.has_metrics(t)]
    baseline = records.baseline(study).get("val_accuracy") if records.has_baseline(study) else None
    floor = constraints.floor(baseline) if baseline is not None else constraints.min_accuracy
    if not done or floor is None:
        return
    best = max(done, key=lambda t: (records.trial_metrics(t)["val_accuracy"], -t.number))
    if constraints.min_accuracy is not None and constraints.min_accuracy >= floor:
        named = f"constraints.min_accuracy {constraints.min_accuracy:g}"
    else:
        drop = constraints.max_accuracy_drop
        named = (f"constraints.max_accuracy_drop {drop:g} (val_accuracy at least {floor:.4g}: the dense "
                 f"baseline's {baseline:.4g} less {drop:g})")
    raise NoTrialMatches(f"no trial meets {named}: the best val_accuracy reached is "
                         f"{records.trial_metrics(best)['val_accuracy']:.4f} (trial {best.number}); lower the floor "
                         f"or run more trials")


def trial_details(trial: FrozenTrial) -> dict[str, Any]:
    """What `sweep best --format json` prints of the chosen trial: its seed, run, sampled
    values, pruning steps and metrics."""
    return {
        "trial": trial.number,
        "seed": records.seed(trial),
        "mlflow_run_id": records.mlflow_run_id(trial),
        "params": trial.params,
        "steps": {k: records.stored_plan(trial)[k] for k in ("begin_step", "end_step", "frequency", "total_steps")},
        "metrics": records.trial_metrics(trial),
    }


def describe_choice(objectives: Sequence[str], min_accuracy: float | None = None, max_size: int | None = None,
                    max_latency: float | None = None) -> str:
    """How `select_trial` chose, in words: "smallest with val_accuracy >= 0.95"."""
    accuracy, size, latency = selection_metrics(objectives)
    how = (f"smallest with {accuracy} >= {min_accuracy}" if min_accuracy is not None
           else f"most accurate with {size} <= {max_size}" if max_size is not None
           else "most accurate" if max_latency is not None
           else "knee of the front")
    if max_latency is not None:
        how += f", {latency} <= {max_latency}"
    return how
