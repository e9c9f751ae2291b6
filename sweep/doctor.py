"""`sweep doctor`: Optuna and MLflow must agree one to one, whatever happened.

Every COMPLETE trial has exactly one FINISHED MLflow trial run (the one in its
`user_attrs["mlflow_run_id"]`), and every FINISHED trial run belongs to a COMPLETE
trial. A worker killed at the wrong moment, a lost connection or a crash can break
that; `diagnose` finds each break and `repair` mends it from what Optuna recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.tracking import Tracker


@dataclass
class Problem:
    trial: int | None
    run_id: str | None
    detail: str
    fix: str
    repair: Callable[[], None] | None  # None: cannot be repaired automatically


def diagnose(study: optuna.Study, tracker: Tracker) -> list[Problem]:
    """Every disagreement between the study's trials and its MLflow trial runs."""
    runs = tracker.trial_runs()
    trials = study.get_trials(deepcopy=False)
    owner = {t.user_attrs["mlflow_run_id"]: t for t in trials if "mlflow_run_id" in t.user_attrs}
    problems: list[Problem] = []

    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        run_id = trial.user_attrs.get("mlflow_run_id")
        run = runs.get(run_id) if run_id else None
        if run is None:
            deleted = run_id is not None and tracker.is_deleted(run_id)
            problems.append(Problem(
                trial.number, run_id,
                "complete trial's MLflow run is deleted" if deleted else "complete trial has no MLflow run",
                "restore the run" if deleted else "none possible: the tracking store lost it",
                (lambda r=run_id: tracker.client.restore_run(r)) if deleted else None,
            ))
        elif run.info.status != "FINISHED":
            problems.append(Problem(
                trial.number, run_id, f"complete trial's MLflow run is {run.info.status}",
                "log the stored metrics and end the run FINISHED",
                lambda t=trial, r=run_id: _finish_run(tracker, t, r),
            ))

    for run_id, run in runs.items():
        trial = owner.get(run_id)
        status = run.info.status
        if trial is None:
            if status in ("FINISHED", "RUNNING", "SCHEDULED"):
                problems.append(Problem(
                    _number(run), run_id, f"{status} MLflow run that no Optuna trial records",
                    "end the run FAILED (orphan)",
                    lambda r=run_id: tracker.fail_trial(r, "orphan: no Optuna trial records this run"),
                ))
        elif trial.state in (TrialState.FAIL, TrialState.PRUNED) and status in ("FINISHED", "RUNNING", "SCHEDULED"):
            reason = trial.user_attrs.get("error", f"optuna trial {trial.number} is {trial.state.name}")
            problems.append(Problem(
                trial.number, run_id, f"{status} MLflow run of a {trial.state.name} trial",
                "end the run FAILED with the trial's error",
                lambda r=run_id, why=reason: tracker.fail_trial(r, why),
            ))
    return problems


def _number(run: object) -> int | None:
    value = run.data.tags.get("sweep.trial_number")  # type: ignore[attr-defined]
    return int(value) if value is not None and value.isdigit() else None


def _finish_run(tracker: Tracker, trial: FrozenTrial, run_id: str) -> None:
    tracker.log_results(run_id, trial.user_attrs.get("metrics", {}))
    tracker.end_run(run_id, "FINISHED")
