"""Train a model and measure it: the one code path of a trial, its rerun and the dense
baseline, so that a rerun reproduces a trial exactly because it runs the very same code.

    >>> params, plan = trial_plan.trial_plan(FixedTrial(trial.params), config.search, total_steps)
    >>> evaluated = train_and_measure(dataset, config, seed, groups=trial_groups(config), params=params,
    ...                               plan=plan, baseline=baseline)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.search.space import TrialParams
from sweep.search.trial_plan import SchedulePlan

if TYPE_CHECKING:  # TensorFlow loads when a model is trained, not when this is imported
    from sweep.modeling.training import TrainedModel


@dataclass
class Evaluated:
    trained: TrainedModel
    metrics: dict[str, float]  # measure()'s, `train_seconds` and, against a baseline, derived_metrics()


def train_and_measure(
    dataset: Dataset,
    config: StudyConfig,
    seed: int,
    *,
    groups: frozenset[str],
    params: TrialParams | None = None,
    plan: SchedulePlan | None = None,
    baseline: Mapping[str, float] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    start_weights: Path | None = None,
    timings: dict[str, float] | None = None,
    files: dict[str, bytes] | None = None,
) -> Evaluated:
    """Train `config.model` (pruned as `params` and `plan` say, or dense without them) and
    measure it: the cheap metrics and the deploy `groups` (`sweep.modeling.metrics`).
    Seconds spent go into `timings`, the measured TFLite files into `files`."""
    from sweep.modeling.measure import measure
    from sweep.modeling.training import train
    from sweep.search.structure import Structure

    trained = train(
        dataset, config, seed, plan=plan,
        structure=params.structure if params else Structure(),
        weight_decay=params.weight_decay if params else 0.0,
        on_epoch=on_epoch, start_weights=start_weights,
    )
    if timings is not None:
        timings.update(trained.timings)
    metrics = measure(trained.model, dataset, groups, timings, files, config.export, trained.dense_sizes)
    metrics["train_seconds"] = trained.train_seconds
    if baseline is not None:
        metrics.update(derived_metrics(metrics, baseline))
    return Evaluated(trained, metrics)


def derived_metrics(metrics: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, float]:
    """`compression_ratio` and `accuracy_drop` against the dense baseline."""
    return {
        "compression_ratio": baseline["compressed_bytes"] / metrics["compressed_bytes"],
        "accuracy_drop": baseline["val_accuracy"] - metrics["val_accuracy"],
    }
