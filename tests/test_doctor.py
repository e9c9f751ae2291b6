"""What a failing tracking store or a dead worker leaves behind, and `sweep doctor`
finding and mending it: real training, real SQLite stores, the real command."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweep.config import parse_study_config
from sweep.stores.tracking import Tracker
from sweep.study.runner import RunRequest, run_study

from conftest import immutable, run_sweep

pytestmark = pytest.mark.slow


def stores(folder: Path) -> tuple[str, str]:
    return f"sqlite:///{folder / 'sweep.db'}", f"sqlite:///{folder / 'mlflow.db'}"


def test_trained_trials_survive_a_failing_tracking_store_and_doctor_replays_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, tracking = stores(tmp_path)
    start_trial, log_results = Tracker.start_trial, Tracker.log_results

    def start_fails_for_trial_0(self, study_run_id, number, params):  # type: ignore[no-untyped-def]
        if number == 0:
            raise MlflowException("simulated: tracking server unreachable")
        return start_trial(self, study_run_id, number, params)

    def log_fails(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise MlflowException("simulated: database is locked")

    monkeypatch.setattr(Tracker, "start_trial", start_fails_for_trial_0)
    monkeypatch.setattr(Tracker, "log_results", log_fails)
    config = parse_study_config({"name": "down", "n_trials": 2, "model": {"builder": "mlp"},
                                 "train": {"epochs": 2, "batch_size": 128}, "search": {"schedule": "constant"}})
    study = run_study(RunRequest(config, storage, tracking))
    monkeypatch.setattr(Tracker, "start_trial", start_trial)
    monkeypatch.setattr(Tracker, "log_results", log_results)

    first, second = sorted(study.trials, key=lambda t: t.number)
    assert first.state == second.state == TrialState.COMPLETE
    assert "tracking server unreachable" in first.user_attrs["tracking_error"]
    assert "database is locked" in second.user_attrs["tracking_error"]
    for trial in (first, second):  # the results are kept where they can be
        assert trial.user_attrs["metrics"]["val_accuracy"] > 0
        assert len(trial.user_attrs["curves"]["val_accuracy"]) == 2
    assert "mlflow_run_id" not in first.user_attrs
    client = MlflowClient(tracking)
    assert client.get_run(second.user_attrs["mlflow_run_id"]).info.status == "RUNNING"

    (tmp_path / "down.yaml").write_text("name: down\n")
    found = run_sweep("doctor", "down.yaml", cwd=tmp_path)
    assert found.returncode == 1
    assert "trial 0, run None: complete trial has no MLflow run" in found.stdout
    assert "trial 1" in found.stdout and "complete trial's MLflow run is RUNNING" in found.stdout
    repaired = run_sweep("doctor", "down.yaml", "--repair", cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    again = run_sweep("doctor", "down.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "agree: 2 complete trials" in again.stdout, again.stdout

    experiment = client.get_experiment_by_name("down").experiment_id
    runs = {r.data.tags["sweep.trial_number"]: r for r in client.search_runs([experiment], "tags.`sweep.role` = 'trial'")}
    assert set(runs) == {"0", "1"}
    for trial in (first, second):
        run = runs[str(trial.number)]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["val_accuracy"] == pytest.approx(trial.user_attrs["metrics"]["val_accuracy"])
        assert run.data.params["seed"] == str(trial.user_attrs["seed"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [0, 1, 2]  # the curve, then the final value


def test_doctor_finds_a_dead_workers_trial_and_repairs_it(tmp_path: Path) -> None:
    storage, tracking = stores(tmp_path)
    # A study whose worker started a trial and its MLflow run, beat once, and died (no
    # training needed: doctor reads only the two stores).
    tracker = Tracker(tracking, "zombie")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        beating = optuna.storages.RDBStorage(storage, heartbeat_interval=1)
        study = optuna.create_study(study_name="zombie", storage=beating)
        study.set_user_attr("mlflow_study_run_id", tracker.study_run("name: zombie\n"))
        trial = study.ask({"final_sparsity": optuna.distributions.FloatDistribution(0.5, 0.95)})
    beating.record_heartbeat(trial._trial_id)
    run_id = tracker.start_trial(study.user_attrs["mlflow_study_run_id"], trial.number, {})
    study._storage.set_trial_user_attr(trial._trial_id, "mlflow_run_id", run_id)
    time.sleep(4)  # three missed beats of 1 s

    env = {"SWEEP_HEARTBEAT_INTERVAL": "1"}
    found = run_sweep("doctor", "--study", "zombie", cwd=tmp_path, env=env)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"trial {trial.number}, run {run_id}: RUNNING trial whose worker stopped sending heartbeats" in found.stdout
    repaired = run_sweep("doctor", "--study", "zombie", "--repair", cwd=tmp_path, env=env)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    study = optuna.load_study(study_name="zombie", storage=storage)
    assert study.trials[trial.number].state == TrialState.FAIL
    assert [t.state for t in study.trials if t.system_attrs.get("failed_trial") == trial.number] == [TrialState.WAITING]
    run = MlflowClient(tracking).get_run(run_id)
    assert run.info.status == "KILLED" and "worker lost" in run.data.tags["sweep.error"]


def test_doctor_only_reads_a_wrong_tracking_store(analysed_study: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{analysed_study / 'sweep.db'}"
    other = tmp_path / "other"
    other.mkdir()
    MlflowClient(f"sqlite:///{other / 'mlflow.db'}").search_experiments()  # another study's store
    optuna_file = shutil.copy2(analysed_study / "sweep.db", tmp_path / "optuna.db")  # not an MLflow store
    optuna_tables = sqlite_tables(optuna_file)
    for uri, message in [
        (f"sqlite:///{tmp_path / 'typo.db'}", "no MLflow tracking store at sqlite:///"),
        (f"sqlite:///{other / 'mlflow.db'}", "no MLflow experiment 'analysed' in sqlite:///"),
        (f"sqlite:///{optuna_file}", f"{optuna_file} is not an MLflow tracking store"),
    ]:
        result = run_sweep("doctor", "--study", "analysed", "--storage", storage, "--tracking-uri", uri, cwd=tmp_path)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "typo.db").exists()
    assert sqlite_tables(optuna_file) == optuna_tables  # no MLflow tables made in it
    assert [e.name for e in MlflowClient(f"sqlite:///{other / 'mlflow.db'}").search_experiments()] == ["Default"]
    agrees = run_sweep("doctor", "analysed.yaml", cwd=analysed_study)
    assert agrees.returncode == 0 and "agree: 5 complete trials" in agrees.stdout, agrees.stdout + agrees.stderr


def sqlite_tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as database:
        return {name for (name,) in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def copy_stores(study: Path, folder: Path) -> Path:
    """The study's stores (its artifacts stay where they are) in `folder`, to change freely."""
    for store in study.glob("*.db*"):
        shutil.copy2(store, folder / store.name)
    (folder / "analysed.yaml").write_text("name: analysed\n")
    return folder


def test_doctor_reads_a_read_only_tracking_store_and_repair_says_it_cannot_write(
    analysed_study: Path, tmp_path: Path
) -> None:
    folder = copy_stores(analysed_study, tmp_path)
    tracking = folder / "mlflow.db"
    client = MlflowClient(f"sqlite:///{tracking}")
    trial = optuna.load_study(study_name="analysed", storage=f"sqlite:///{folder / 'sweep.db'}").trials[0]
    run_id = trial.user_attrs["mlflow_run_id"]
    client.update_run(run_id, "RUNNING")  # as a tracking store that went down mid-trial leaves it
    before = tracking.read_bytes()
    with immutable(tracking):
        found = run_sweep("doctor", "analysed.yaml", cwd=folder)
        assert found.returncode == 1, found.stderr
        assert f"trial {trial.number}, run {run_id}: complete trial's MLflow run is RUNNING" in found.stdout
        assert found.stderr == "1 problem left; run with --repair to fix them\n"

        refused = run_sweep("doctor", "analysed.yaml", "--repair", cwd=folder)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and refused.stdout == "", refused.stderr
        assert f"the MLflow tracking store {tracking} is read-only" in refused.stderr
        assert "chattr -i" in refused.stderr and "without --repair" in refused.stderr
    assert tracking.read_bytes() == before
    assert client.get_run(run_id).info.status == "RUNNING"
