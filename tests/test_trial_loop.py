"""The worker loop and its stopping rules, on real SQLite storages with a trivial objective
(no TensorFlow): milliseconds to seconds, where the end-to-end tests take minutes."""

from __future__ import annotations

import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep.stores.heartbeats import HeartbeatStorage
from sweep.stores.optuna_storage import experimental_api
from sweep.study.trial_loop import Goal, work


def heartbeat_storage(path: Path, interval: int = 1) -> optuna.storages.RDBStorage:
    with experimental_api():
        return HeartbeatStorage(
            f"sqlite:///{path}", heartbeat_interval=interval, grace_period=2 * interval,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
        )


def test_a_waiting_worker_fails_a_dead_workers_trial_and_runs_its_retry(tmp_path: Path) -> None:
    """The last needed trial belongs to a dead worker: its heartbeat stops. A worker that
    can start nothing new (complete + running = target) must still reap it and run the
    retry, instead of waiting forever."""
    storage = heartbeat_storage(tmp_path / "s.db")
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": here it is not
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(dead._trial_id)  # its worker beat once, then died

    started = time.monotonic()
    work(study, lambda t: t.suggest_float("x", 0, 1), Goal(target=2, started=datetime.now(), max_failures=5,
                                                             deadline=time.time() + 30))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE], states
    assert study.trials[1].user_attrs["error"].startswith("worker lost: no heartbeat for 2 s (killed")
    assert study.trials[2].system_attrs["failed_trial"] == dead.number
    assert study.trials[2].params == dead.params
    assert time.monotonic() - started < 10  # grace period 2 s, polled every second


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between creating its trial and the first heartbeat: Optuna alone never reaps
    a trial that never beat, and the study would wait for it forever."""
    from sweep.stores.optuna_storage import open_storage

    monkeypatch.setenv("SWEEP_HEARTBEAT_INTERVAL", "1")  # grace period 3 s
    with experimental_api():
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=True, stale_trial_callback=retry)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # never beats
    assert storage._get_stale_trial_ids(study._study_id) == []  # just seen: it may be about to beat

    work(study, lambda t: t.suggest_float("x", 0, 1), Goal(target=2, started=datetime.now(), max_failures=5,
                                                             deadline=time.time() + 30))
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE], states
    assert study.trials[1].user_attrs["error"] == "worker lost before its first heartbeat (silent for 3 s)"
    assert study.trials[2].system_attrs["failed_trial"] == dead.number


def test_a_worker_stops_at_the_target_and_counts_no_other_runs_failures(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(lambda t: 1 / 0, n_trials=2, catch=(ZeroDivisionError,))  # an earlier run's failures
    work(study, lambda t: t.suggest_float("x", 0, 1), Goal(target=3, started=datetime.now(), max_failures=0))
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 3


def test_too_many_failures_abort_with_the_last_error(tmp_path: Path) -> None:
    from sweep.errors import StudyAborted

    study = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}")

    def failing(trial: optuna.Trial) -> float:
        trial.set_user_attr("error", f"boom {trial.number}")
        raise RuntimeError("boom")

    with pytest.raises(StudyAborted, match=r"3 trials failed in this run, more than --max-failures allows \(2\); last error: boom 2"):
        work(study, failing, Goal(target=5, started=datetime.now(), max_failures=2))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1.5", "lots"])
def test_max_failures_refuses_what_is_not_a_fraction_or_a_count(value: str) -> None:
    from sweep.errors import UsageError
    from sweep.study.trial_loop import max_failures_allowed

    with pytest.raises(UsageError, match="--max-failures: give a fraction below 1"):
        max_failures_allowed(value, 10)


@pytest.mark.parametrize(("value", "allowed"), [("0.5", 5), ("0", 0), ("3", 3), ("0.99", 9)])
def test_max_failures_is_a_fraction_of_the_trials_wanted_or_a_count(value: str, allowed: int) -> None:
    from sweep.study.trial_loop import max_failures_allowed

    assert max_failures_allowed(value, 10) == allowed


def test_a_study_stored_before_a_key_existed_resumes_with_its_default() -> None:
    from sweep.config import inherit_stored_values, parse_study_config
    from sweep.study.resume import check_compatible

    config = parse_study_config({"name": "x"})
    stored = config.model_dump(mode="json")
    del stored["model"]["prune"]  # as stored by sweep before model.prune existed
    del stored["export"]
    config = inherit_stored_values(config, stored)  # as `sweep run` does
    check_compatible(stored, config)
    stored["model"]["builder"] = "mlp"
    with pytest.raises(Exception, match="already exists with a different model"):
        check_compatible(stored, config)


class FakeTracker:
    """Records what a Tracker would have been asked to do."""

    def __init__(self, unfinished: dict[int, list[str]] | None = None) -> None:
        self.failed: list[tuple[str, str]] = []
        self.unfinished = unfinished or {}

    def fail_trial(self, run_id: str, error: str, curves: object = None, status: str = "FAILED") -> None:
        self.failed.append((run_id, status))

    def unfinished_trial_runs(self, number: int) -> list[str]:
        return self.unfinished.get(number, [])


@pytest.mark.parametrize(("recorded", "killed"), [(True, ["run-1"]), (False, ["run-untold"])])
def test_a_lost_trials_retry_starts_clean_and_its_run_is_killed(tmp_path: Path, recorded: bool,
                                                                killed: list[str]) -> None:
    """Optuna copies user attributes to a retry; a lost trial's run id, metrics or tracking
    error must not make the retry look tracked, finished or broken. A worker lost before it
    recorded the run's id leaves the run found by the trial's number."""
    from sweep.study.objective import StaleTrials

    tracker = FakeTracker(unfinished={0: ["run-untold"]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=1,
                                             heartbeat_stale_trial_callback=StaleTrials(tracker))  # type: ignore[arg-type]
        study = optuna.create_study(study_name="s", storage=storage)
        lost = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    attrs = {"mlflow_run_id": "run-1", "tracking_error": "MLflow: down", "metrics": {"a": 1.0}}
    for key, value in attrs.items():
        if recorded or key != "mlflow_run_id":
            lost.set_user_attr(key, value)
    storage.record_heartbeat(lost._trial_id)
    time.sleep(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    retry = study.trials[1]
    assert retry.state == TrialState.WAITING and retry.params == lost.params and retry.user_attrs == {}
    assert tracker.failed == [(run_id, "KILLED") for run_id in killed]


@pytest.mark.parametrize(("target", "finished", "requested", "runs", "reason"), [
    (20, 0, None, 20, "running 20 trials to reach n_trials: 20"),
    (20, 8, None, 12, "running 12 trials to reach n_trials: 20, resuming after 8"),
    (20, 20, None, 0, "the study already has 20 finished trials (n_trials: 20); pass --n-trials N to add more"),
    (20, 25, None, 0, "the study already has 25 finished trials (n_trials: 20); pass --n-trials N to add more"),
    (20, 20, 5, 5, "adding 5 trials (20 finished so far)"),
])
def test_a_run_plans_the_trials_it_adds(target: int, finished: int, requested: int | None, runs: int, reason: str) -> None:
    from sweep.study.resume import plan_trials

    plan = plan_trials(target, finished, requested)
    assert (plan.n_trials, plan.reason) == (runs, reason)


def test_failures_are_this_runs_failed_trials_less_the_skipped_ones() -> None:
    study = optuna.create_study()
    before = datetime.now()
    study.optimize(lambda t: 1 / 0, n_trials=1, catch=(ZeroDivisionError,))  # an earlier run's
    goal = Goal(target=5, started=datetime.now(), max_failures=0)
    study.optimize(lambda t: 1 / 0, n_trials=2, catch=(ZeroDivisionError,))

    def skipped(trial: optuna.Trial) -> float:
        trial.set_user_attr("skipped", True)
        raise RuntimeError("skipped")

    study.optimize(skipped, n_trials=1, catch=(RuntimeError,))
    study.optimize(lambda t: 1.0, n_trials=1)
    assert [t.number for t in goal.failures(study.trials)] == [1, 2]
    assert len(Goal(target=5, started=before, max_failures=0).failures(study.trials)) == 3


def test_a_trial_started_once_the_target_is_finished_or_running_is_skipped() -> None:
    from sweep.stores import records
    from sweep.study.trial_loop import TrialSkipped, check_not_surplus

    study = optuna.create_study()
    study.optimize(lambda t: 1.0, n_trials=1)
    running = study.ask()  # another worker's trial, in flight
    goal = Goal(target=2, started=datetime.now(), max_failures=0)
    surplus = study.ask()
    with pytest.raises(TrialSkipped, match="already has 2 trials finished or running"):
        check_not_surplus(surplus, goal)
    assert records.is_skipped(surplus)
    study.tell(surplus, state=TrialState.FAIL)  # as Optuna records it, the exception caught
    study.tell(running, state=TrialState.FAIL)  # the running one failed: a later trial is needed again
    check_not_surplus(study.ask(), goal)
