"""`sweep doctor`'s rules (`doctor.diagnose` and `doctor.apply`) on a real SQLite Optuna
storage and a fake tracker holding the MLflow side: every disagreement it must find, and
none where the two agree. No TensorFlow, no subprocess."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sweep.stores.heartbeats import HeartbeatStorage
from sweep.stores.optuna_storage import experimental_api
from sweep.stores.records import EARLY_STOPPED
from sweep.stores.tracking import TRIAL_NUMBER
from sweep.study.doctor import apply, diagnose

pytestmark = pytest.mark.unit


class FakeTracker:
    """The MLflow side: runs by id (status, trial-number tag, start time), deleted runs,
    and what a repair asked for."""

    def __init__(self) -> None:
        self.runs: dict[str, Any] = {}
        self.deleted: set[str] = set()
        self.calls: list[tuple[str, ...]] = []

    def add(self, run_id: str, status: str, number: int | None) -> None:
        tags = {} if number is None else {TRIAL_NUMBER: str(number)}
        self.runs[run_id] = SimpleNamespace(info=SimpleNamespace(run_id=run_id, status=status,
                                                                 start_time=len(self.runs)),
                                            data=SimpleNamespace(tags=tags))

    def trial_runs(self) -> dict[str, Any]:
        return dict(self.runs)

    def is_deleted(self, run_id: str) -> bool:
        return run_id in self.deleted

    def restore_run(self, run_id: str) -> None:
        self.calls.append(("restore", run_id))

    def fail_trial(self, run_id: str, reason: str, curves: object = None, status: str = "FAILED") -> None:
        self.calls.append(("fail", run_id, status))
        self.runs[run_id].info.status = status

    def stop_trial(self, run_id: str, epoch: int, reason: str, curves: object = None) -> None:
        self.calls.append(("stop", run_id, str(epoch)))
        self.runs[run_id].info.status = "KILLED"

    def log_results(self, run_id: str, metrics: object, **kwargs: object) -> None:
        self.calls.append(("log", run_id))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.calls.append(("end", run_id, status))
        self.runs[run_id].info.status = status


def storage_at(path: Path, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    with experimental_api():
        return HeartbeatStorage(f"sqlite:///{path}", heartbeat_interval=heartbeat,
                                grace_period=heartbeat and 2 * heartbeat)


def add(study: optuna.Study, state: TrialState, **user_attrs: object) -> None:
    study.add_trial(create_trial(
        state=state, values=[0.9] if state == TrialState.COMPLETE else None,
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"metrics": {"val_accuracy": 0.9}, **user_attrs},
    ))


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(study_name="s", storage=storage_at(tmp_path / "s.db"))


def test_a_study_that_agrees_with_mlflow_has_no_problems(study: optuna.Study) -> None:
    tracker = FakeTracker()
    add(study, TrialState.COMPLETE, mlflow_run_id="a")
    add(study, TrialState.FAIL, mlflow_run_id="b", error="boom")
    add(study, TrialState.PRUNED, mlflow_run_id="c", **{EARLY_STOPPED: 4})
    tracker.add("a", "FINISHED", 0)
    tracker.add("b", "FAILED", 1)
    tracker.add("c", "KILLED", 2)
    assert diagnose(study, tracker, study._storage) == []  # type: ignore[arg-type]


def test_every_disagreement_is_found_and_repaired(study: optuna.Study) -> None:
    tracker = FakeTracker()
    add(study, TrialState.COMPLETE, mlflow_run_id="running")  # 0: its run never ended
    add(study, TrialState.COMPLETE, mlflow_run_id="gone")  # 1: its run was deleted
    add(study, TrialState.FAIL, mlflow_run_id="failed", error="boom")  # 2: its run ended FINISHED
    add(study, TrialState.PRUNED, mlflow_run_id="stopped", **{EARLY_STOPPED: 3})  # 3: run still RUNNING
    add(study, TrialState.COMPLETE)  # 4: the write of its run id failed; the run is found by its tag
    tracker.add("running", "RUNNING", 0)
    tracker.add("failed", "FINISHED", 2)
    tracker.add("stopped", "RUNNING", 3)
    tracker.add("tagged", "FINISHED", 4)
    tracker.add("orphan", "FINISHED", None)
    tracker.deleted.add("gone")

    problems = diagnose(study, tracker, study._storage)  # type: ignore[arg-type]
    found = sorted((p.trial if p.trial is not None else -1, p.run_id, p.detail) for p in problems)
    assert found == [
        (-1, "orphan", "FINISHED MLflow run that no Optuna trial records"),
        (0, "running", "complete trial's MLflow run is RUNNING"),
        (1, "gone", "complete trial's MLflow run is deleted"),
        (2, "failed", "FINISHED MLflow run of a FAIL trial"),
        (3, "stopped", "RUNNING MLflow run of a trial stopped early"),
    ]

    lines, remaining = apply(problems, repair=False)
    assert remaining == 5 and len(lines) == 5 and tracker.calls == []  # without --repair: reads only
    lines, remaining = apply(problems, repair=True)
    assert remaining == 0 and all(line.startswith("repaired ") for line in lines)
    assert sorted(tracker.calls) == sorted([
        ("fail", "orphan", "FAILED"), ("log", "running"), ("end", "running", "FINISHED"), ("restore", "gone"),
        ("fail", "failed", "FAILED"), ("stop", "stopped", "3"),
    ])
    # all mended but the deleted run, which the fake does not restore
    left = diagnose(study, tracker, study._storage)  # type: ignore[arg-type]
    assert [(p.trial, p.detail) for p in left] == [(1, "complete trial's MLflow run is deleted")]


def test_a_complete_trial_without_any_run_is_replayed_and_a_failed_repair_is_left(study: optuna.Study) -> None:
    tracker = FakeTracker()
    add(study, TrialState.COMPLETE)
    [problem] = diagnose(study, tracker, study._storage)  # type: ignore[arg-type]
    assert problem.detail == "complete trial has no MLflow run" and problem.trial == 0
    # the trial lacks what a replay needs (its plan and seed): the repair fails, in one line
    lines, remaining = apply([problem], repair=True)
    assert remaining == 1 and lines == [
        "trial 0, run None: complete trial has no MLflow run: repair failed (KeyError: 'plan')"]


def test_a_running_trial_whose_worker_died_is_found_only_once_its_heartbeat_is_stale(tmp_path: Path) -> None:
    storage = storage_at(tmp_path / "s.db", heartbeat=1)
    study = optuna.create_study(study_name="s", storage=storage)
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": here it is not
        warnings.simplefilter("ignore", UserWarning)
        lost = study.ask({"x": FloatDistribution(0, 1)})
    storage.record_heartbeat(lost._trial_id)
    assert diagnose(study, FakeTracker(), storage) == []  # beating within its grace period
    time.sleep(3.5)  # well past the grace period (2 s)
    [problem] = diagnose(study, FakeTracker(), storage)
    assert problem.detail == "RUNNING trial whose worker stopped sending heartbeats (killed or lost)"
    assert "error" not in study.trials[0].user_attrs  # finding it wrote nothing
    apply([problem], repair=True)
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.FAIL]
    assert study.trials[0].user_attrs["error"].startswith("worker lost: no heartbeat for 2 s")
