"""A study read back from MLflow alone, for notebooks (`sweep.results.analysis.load_runs`):
its FINISHED trial runs, and its parent run's resolved study file and dense baseline.

Read through a read-only `Tracker`: the same client, trial-run filter and tags that
wrote them, and no process-wide tracking URI set.

    >>> study = read_study("sqlite:///mlflow.db", "digits-quickstart")
    >>> [(run.number, run.metrics["val_accuracy"]) for run in study.trials]
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from sweep.stores.tracking import FEASIBLE, TRIAL_NUMBER, NoExperiment, Tracker
from sweep.stores.urls import mask_password


@dataclass(frozen=True)
class TrialRun:
    """One FINISHED trial run: its params as MLflow stores them, as text."""

    run_id: str
    number: int
    feasible: bool  # False only when tagged sweep.feasible=false (a study with constraints)
    metrics: dict[str, float]
    params: dict[str, str]


@dataclass(frozen=True)
class TrackedStudy:
    name: str
    study_run_id: str
    config_yaml: str  # the parent run's study.yaml: the study file `sweep run` resolved
    baseline: dict[str, float]
    trials: list[TrialRun]


def read_study(tracking_uri: str, study_name: str) -> TrackedStudy:
    """The study `study_name` as the tracking store at `tracking_uri` holds it; a
    `LookupError` if the store has no such study."""
    missing = LookupError(f"no sweep study named {study_name!r} in {mask_password(tracking_uri)}")
    try:
        tracker = Tracker(tracking_uri, study_name, create=False, read_only=True)
    except NoExperiment:
        raise missing from None
    study_run_id = tracker.find_study_run()
    if study_run_id is None:
        raise missing
    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        config_yaml = tracker.download_artifact(study_run_id, "study.yaml", folder).read_text()
    trials = [
        TrialRun(run_id, int(run.data.tags[TRIAL_NUMBER]), run.data.tags.get(FEASIBLE) != "false",
                 dict(run.data.metrics), dict(run.data.params))
        for run_id, run in tracker.trial_runs(finished_only=True).items()
    ]
    return TrackedStudy(study_name, study_run_id, config_yaml, tracker.baseline(study_run_id), trials)
