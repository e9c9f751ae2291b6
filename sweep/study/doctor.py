"""`sweep doctor`: Optuna and MLflow must agree one to one, whatever happened.

Every COMPLETE trial has exactly one FINISHED MLflow trial run (the one in its
`records.mlflow_run_id`, or for a trial whose MLflow write failed before the run id
was known, the run tagged with its number) holding every metric Optuna has of it, also
those measured after it (`study.front_metrics`); every FINISHED trial run belongs to a
COMPLETE trial, and no trial is RUNNING without a live worker. A worker killed at the
wrong moment, a tracking store that was down, or a crash can break that; `diagnose` finds
each break (reading only) and `Problem.repair` mends it from what Optuna recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.optuna_private import study_id, trial_id
from sweep.search.trial_plan import SchedulePlan
from sweep.stores import records
from sweep.stores.heartbeats import HeartbeatStorage
from sweep.stores.tracking import (
    TRIAL_NUMBER,
    Tracker,
    result_params,
    result_tags,
    trial_run_params,
)
from sweep.stores.urls import error_summary
from sweep.study.trial_loop import fail_stale_trials


@dataclass
class Problem:
    trial: int | None
    run_id: str | None
    detail: str
    fix: str
    repair: Callable[[], object] | None  # None: cannot be repaired automatically


def open_for_check(name: str, storage_url: str, tracking_uri: str, repair: bool = False
                   ) -> tuple[optuna.Study, Tracker, HeartbeatStorage]:
    """The study, a tracker that cannot write unless asked to repair (so a check works on a
    read-only store, and a repair on one fails before its first write, in one line), and
    the storage with heartbeats on as `sweep run` has them: stale trials are found, and a
    repair fails them and queues their retries."""
    from sweep.stores.checks import require_storage, require_writable
    from sweep.stores.optuna_storage import load_study, open_storage
    from sweep.study.objective import StaleTrials

    require_storage(storage_url)
    if repair:
        fix = "`sweep doctor --repair` writes to it: make it writable (chmod u+w, chattr -i) or run without --repair"
        require_writable(storage_url, "Optuna storage", fix)
        require_writable(tracking_uri, "MLflow tracking store", fix)
    tracker = Tracker(tracking_uri, name, create=False, read_only=not repair)
    if repair:
        tracker.follow_copied_project()
    storage = open_storage(storage_url, stale_trial_callback=StaleTrials(tracker), heartbeat=True)
    return load_study(name, storage_url, storage), tracker, storage


def diagnose(study: optuna.Study, tracker: Tracker, storage: HeartbeatStorage) -> list[Problem]:
    """Every disagreement between the study's trials and its MLflow trial runs. `storage`
    is the one `study` was opened with, heartbeats on, so stale trials can be found."""
    runs = tracker.trial_runs()
    later = records.later_metrics(study)
    trials = records.with_later_metrics(study, study.get_trials(deepcopy=False))
    run_of = _runs_by_trial(trials, runs)
    owner = {run_id: trial for trial in trials if (run_id := run_of.get(trial.number))}
    problems: list[Problem] = []

    stale = set(_stale_trial_ids(study, storage))
    for trial in trials:
        if trial.state == TrialState.RUNNING and trial_id(trial) in stale:
            problems.append(Problem(
                trial.number, run_of.get(trial.number),
                "RUNNING trial whose worker stopped sending heartbeats (killed or lost)",
                "fail the trial, end its run KILLED and queue a retry",
                partial(fail_stale_trials, study),
            ))
        if trial.state != TrialState.COMPLETE:
            continue
        run_id = run_of.get(trial.number)
        run = runs.get(run_id) if run_id else None
        recorded = records.mlflow_run_id(trial)
        if run is None and recorded and tracker.is_deleted(recorded):
            problems.append(Problem(trial.number, recorded, "complete trial's MLflow run is deleted",
                                    "restore the run", partial(tracker.restore_run, recorded)))
        elif run is None:
            problems.append(Problem(
                trial.number, run_id, "complete trial has no MLflow run",
                "create it from the results Optuna kept", partial(_replay_run, tracker, study, trial),
            ))
        elif run.info.status != "FINISHED":
            problems.append(Problem(
                trial.number, run_id, f"complete trial's MLflow run is {run.info.status}",
                "log the stored metrics and end the run FINISHED",
                partial(_finish_run, tracker, trial, run.info.run_id),
            ))
        elif unlogged := {k: v for k, v in later.get(trial.number, {}).items() if k not in run.data.metrics}:
            problems.append(Problem(
                trial.number, run_id, f"metrics measured after the trial are not in its MLflow run "
                                      f"({', '.join(sorted(unlogged))})",
                "log them", partial(tracker.log_later_metrics, run.info.run_id, unlogged),
            ))

    for run_id, run in runs.items():
        owning = owner.get(run_id)
        status = run.info.status
        if owning is None:
            if status in ("FINISHED", "RUNNING", "SCHEDULED"):
                problems.append(Problem(
                    _number(run), run_id, f"{status} MLflow run that no Optuna trial records",
                    "end the run FAILED (orphan)",
                    partial(tracker.fail_trial, run_id, "orphan: no Optuna trial records this run"),
                ))
        elif owning.state == TrialState.PRUNED and status in ("FINISHED", "RUNNING", "SCHEDULED") \
                and (epoch := records.early_stopped_epoch(owning)) is not None:
            reason = records.trial_error(owning, "stopped early")
            problems.append(Problem(
                owning.number, run_id, f"{status} MLflow run of a trial stopped early",
                "end the run KILLED, tagged with the epoch it stopped after",
                partial(tracker.stop_trial, run_id, epoch, reason),
            ))
        elif owning.state in (TrialState.FAIL, TrialState.PRUNED) and status in ("FINISHED", "RUNNING", "SCHEDULED"):
            reason = records.trial_error(owning, f"optuna trial {owning.number} is {owning.state.name}")
            problems.append(Problem(
                owning.number, run_id, f"{status} MLflow run of a {owning.state.name} trial",
                "end the run FAILED with the trial's error",
                partial(tracker.fail_trial, run_id, reason),
            ))
    return problems


def agreement(study: optuna.Study) -> str:
    """What `sweep doctor` says when `diagnose` found no problem."""
    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state.name == "COMPLETE" for t in trials)
    stopped = sum(t.state.name == "PRUNED" for t in trials)
    return (f"Optuna and MLflow agree: {complete} complete trials, each with one FINISHED run"
            + (f"; {stopped} stopped early, their runs KILLED" if stopped else ""))


def apply(problems: Sequence[Problem], repair: bool) -> tuple[list[str], int]:
    """With `repair`, mend each problem that can be mended (one failing, e.g. with the
    tracking store still down, does not stop the others). Returns a line per problem and
    how many are left."""
    lines, remaining = [], 0
    for problem in problems:
        where = f"trial {problem.trial}" if problem.trial is not None else "no trial"
        if not repair or problem.repair is None:
            remaining += 1
            lines.append(f"{where}, run {problem.run_id}: {problem.detail} (fix: {problem.fix})")
            continue
        try:
            problem.repair()
        except Exception as error:
            remaining += 1
            lines.append(f"{where}, run {problem.run_id}: {problem.detail}: repair failed "
                         f"({type(error).__name__}: {error_summary(error)})")
        else:
            lines.append(f"repaired {where}, run {problem.run_id}: {problem.detail} -> {problem.fix}")
    return lines, remaining


def _runs_by_trial(trials: list[FrozenTrial], runs: dict[str, Any]) -> dict[int, str]:
    """Trial number -> its run: the recorded run id, else (the MLflow write that returns
    the id failed) the run tagged with the trial's number."""
    run_of = {t.number: run_id for t in trials
              if (run_id := records.mlflow_run_id(t)) is not None and run_id in runs}
    claimed = set(run_of.values())
    for run_id, run in sorted(runs.items(), key=lambda item: item[1].info.start_time):
        number = _number(run)
        if number is not None and number not in run_of and run_id not in claimed:
            run_of[number] = run_id
    return run_of


def _stale_trial_ids(study: optuna.Study, storage: HeartbeatStorage) -> list[int]:
    # The query Optuna fails stale trials by, with the grace period `sweep run` uses, read only.
    if storage.get_heartbeat_interval() is None:
        return []
    return list(storage.stale_trials(study_id(study)))


def _number(run: Any) -> int | None:
    value = run.data.tags.get(TRIAL_NUMBER)
    return int(value) if value is not None and value.isdigit() else None


def _finish_run(tracker: Tracker, trial: FrozenTrial, run_id: str) -> None:
    """Log what the trial's worker could not (metrics, curves, the tags set with them)."""
    pruned = records.pruned_layers(trial)
    metrics = records.trial_metrics(trial) if records.has_metrics(trial) else {}
    tracker.log_results(run_id, metrics, curves=records.curves(trial),
                        tags=result_tags(pruned, trial.constraints),
                        params=result_params(pruned, records.layers(trial)))
    tracker.end_run(run_id, "FINISHED")


def _replay_run(tracker: Tracker, study: optuna.Study, trial: FrozenTrial) -> None:
    """The run MLflow never got, from the trial's record in Optuna (tagged with its number,
    which is how `diagnose` finds it again)."""
    plan = SchedulePlan(**records.stored_plan(trial))
    params = trial_run_params(trial.params, plan, records.seed(trial))
    run_id = tracker.start_trial(records.mlflow_study_run_id(study), trial.number, params)
    _finish_run(tracker, trial, run_id)
