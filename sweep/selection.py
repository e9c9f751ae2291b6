"""Choosing one Pareto-optimal trial (`sweep best`, `sweep rerun --best`); pure Python.

* `--min-accuracy A`: the smallest model (`compressed_bytes`) whose validation accuracy is
  at least A; ties go to the more accurate one.
* `--max-size BYTES`: the most accurate model of at most BYTES; ties go to the smaller.
* neither: the knee of the front, defined as the trial closest (Euclidean) to the ideal
  point once every objective is min-max normalised over the front: the best balance,
  with no objective's units dominating the others.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sweep.errors import SweepError
from sweep.pareto import losses


class NoTrialMatches(SweepError):
    """Raised when no Pareto-optimal trial satisfies the selection."""


def select_trial(
    front: pd.DataFrame,
    objectives: Sequence[str],
    *,
    min_accuracy: float | None = None,
    max_size: int | None = None,
) -> int:
    """The trial number picked from `front` (a table of the feasible Pareto-optimal trials,
    `sweep.pareto.pareto_front` or `trial_table(pareto_trials(study))`) as described above."""
    if front.empty:
        raise NoTrialMatches("the study has no feasible completed trials yet; run more trials")
    if min_accuracy is not None and max_size is not None:
        raise NoTrialMatches("choose one of --min-accuracy and --max-size, not both")
    if min_accuracy is not None:
        candidates = front[front["val_accuracy"] >= min_accuracy]
        if candidates.empty:
            best = front.loc[front["val_accuracy"].idxmax()]
            raise NoTrialMatches(
                f"no Pareto-optimal trial reaches val_accuracy {min_accuracy}; the most accurate "
                f"is trial {int(best['trial'])} with {best['val_accuracy']:.4f}"
            )
        ordered = candidates.sort_values(["compressed_bytes", "val_accuracy", "trial"], ascending=[True, False, True])
        return int(ordered.iloc[0]["trial"])
    if max_size is not None:
        candidates = front[front["compressed_bytes"] <= max_size]
        if candidates.empty:
            smallest = front.loc[front["compressed_bytes"].idxmin()]
            raise NoTrialMatches(
                f"no Pareto-optimal trial is at most {max_size} bytes; the smallest is trial "
                f"{int(smallest['trial'])} with {smallest['compressed_bytes']:.0f} bytes"
            )
        ordered = candidates.sort_values(["val_accuracy", "compressed_bytes", "trial"], ascending=[False, True, True])
        return int(ordered.iloc[0]["trial"])
    return knee(front, objectives)


def knee(front: pd.DataFrame, objectives: Sequence[str]) -> int:
    """The trial nearest the ideal point in min-max normalised objective space."""
    ordered = front.sort_values(["val_accuracy", "trial"], ascending=[False, True])
    points = losses(ordered, objectives)
    low, high = points.min(axis=0), points.max(axis=0)
    spread = np.where(high > low, high - low, 1.0)
    distance = np.linalg.norm((points - low) / spread, axis=1)
    return int(ordered.iloc[int(np.argmin(distance))]["trial"])
