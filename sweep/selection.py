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
from optuna.trial import FrozenTrial

from sweep.config import OBJECTIVES
from sweep.errors import SweepError
from sweep.pareto import metric


class NoTrialMatches(SweepError):
    """Raised when no Pareto-optimal trial satisfies the selection."""


def select_trial(
    front: Sequence[FrozenTrial],
    objectives: Sequence[str],
    *,
    min_accuracy: float | None = None,
    max_size: int | None = None,
) -> FrozenTrial:
    """Pick one trial of `front` (the feasible Pareto-optimal trials) as described above."""
    if not front:
        raise NoTrialMatches("the study has no feasible completed trials yet; run more trials")
    if min_accuracy is not None and max_size is not None:
        raise NoTrialMatches("choose one of --min-accuracy and --max-size, not both")
    if min_accuracy is not None:
        candidates = [t for t in front if metric(t, "val_accuracy") >= min_accuracy]
        if not candidates:
            best = max(front, key=lambda t: metric(t, "val_accuracy"))
            raise NoTrialMatches(
                f"no Pareto-optimal trial reaches val_accuracy {min_accuracy}; the most accurate "
                f"is trial {best.number} with {metric(best, 'val_accuracy'):.4f}"
            )
        return min(candidates, key=lambda t: (metric(t, "compressed_bytes"), -metric(t, "val_accuracy"), t.number))
    if max_size is not None:
        candidates = [t for t in front if metric(t, "compressed_bytes") <= max_size]
        if not candidates:
            smallest = min(front, key=lambda t: metric(t, "compressed_bytes"))
            raise NoTrialMatches(
                f"no Pareto-optimal trial is at most {max_size} bytes; the smallest is trial "
                f"{smallest.number} with {metric(smallest, 'compressed_bytes'):.0f} bytes"
            )
        return max(candidates, key=lambda t: (metric(t, "val_accuracy"), -metric(t, "compressed_bytes"), -t.number))
    return knee(front, objectives)


def knee(front: Sequence[FrozenTrial], objectives: Sequence[str]) -> FrozenTrial:
    """The trial nearest the ideal point in min-max normalised objective space."""
    losses = np.array(
        [
            [metric(t, OBJECTIVES[o][0]) * (-1 if OBJECTIVES[o][1] == "maximize" else 1) for o in objectives]
            for t in front
        ]
    )
    low, high = losses.min(axis=0), losses.max(axis=0)
    spread = np.where(high > low, high - low, 1.0)
    distance = np.linalg.norm((losses - low) / spread, axis=1)
    return front[int(np.argmin(distance))]
