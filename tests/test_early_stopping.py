"""Early stopping in multi-objective studies: the rung and stopping rules without
TensorFlow, then real studies whose trials are stopped across two workers and a resume."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from sweep.config import parse_study_config
from sweep.errors import ConfigError
from sweep.search.early_stopping import (
    MIN_TRIALS,
    PLANNED_MIN_TRIALS,
    applies,
    judge,
    planned_rung_epochs,
    recorded_epochs,
    rung_epochs,
    rung_losses,
)
from sweep.stores.records import EARLY_STOPPED, METRICS, RUNGS, RUNGS_PLANNED, rung_peers

from conftest import run_sweep, write_study


def trial(number: int, records: dict[int, tuple[float, float]], state: TrialState = TrialState.RUNNING,
          final_accuracy: float | None = None) -> FrozenTrial:
    """A trial with (accuracy, sparsity) recorded after the given epochs."""
    attrs = {RUNGS: {str(e): {"losses": [-a, -s], "val_accuracy": a} for e, (a, s) in records.items()}}
    if final_accuracy is not None:
        attrs[METRICS] = {"val_accuracy": final_accuracy}
    made = create_trial(state=state, values=[final_accuracy or 0.0, 0.0] if state == TrialState.COMPLETE else None,
                        user_attrs=attrs)
    made.number = number
    return made


def reason(number: int, epoch: int, record: dict, trials: list[FrozenTrial], min_accuracy: float | None) -> str | None:
    stopped = judge(epoch, record, rung_peers(trials, number), min_accuracy)
    return None if stopped is None else str(stopped)


def record(accuracy: float, sparsity: float) -> dict:
    return {"losses": [-accuracy, -sparsity], "val_accuracy": accuracy}


def test_rungs_start_once_sparsity_is_final_and_never_at_the_last_epoch() -> None:
    assert list(recorded_epochs(8, 36, 200)) == [6, 7] and rung_epochs(recorded_epochs(8, 36, 200)) == (6, 7)
    assert rung_epochs(recorded_epochs(12, 10, 30)) == (3, 8)  # pruning ends in epoch 3; halfway through 4-12
    assert rung_epochs(recorded_epochs(8, 36, 288)) == ()  # pruning ends in the last epoch: nothing to save
    assert rung_losses(["accuracy", "compressed_size"], {"val_accuracy": 0.9, "mask_sparsity": 0.7}) == [-0.9, -0.7]
    assert rung_losses(["int8_accuracy", "int8_size", "sparsity"], {"val_accuracy": 0.9, "mask_sparsity": 0.7}) == [-0.9, -0.7]
    assert applies(["accuracy", "int8_size"]) and not applies(["accuracy", "latency"])


def test_a_trial_others_dominate_stops_once_enough_trials_reached_the_epoch() -> None:
    peers = [trial(n, {4: (0.9 + n / 100, 0.8)}) for n in range(MIN_TRIALS - 2)]
    weak = record(0.5, 0.5)
    assert reason(99, 4, weak, peers, None) is None  # too few trials at epoch 4 to judge
    peers.append(trial(50, {4: (0.95, 0.9)}, TrialState.PRUNED))
    assert "front 6 of the 6 trials at this epoch; only fronts up to 2" in reason(99, 4, weak, peers, None)
    # only records at the same epoch count: the same trials at epoch 5 say nothing yet
    assert reason(99, 5, weak, peers, None) is None
    # on the front (the sparsest), it goes on whatever its accuracy
    assert reason(99, 4, record(0.5, 0.99), peers, None) is None
    # failed trials do not count (a retry would count twice)
    failed = [trial(n, {4: (0.99, 0.99)}, TrialState.FAIL) for n in range(60, 70)]
    assert reason(99, 4, record(0.93, 0.8), peers[:3] + failed, None) is None


def test_a_trial_that_cannot_reach_min_accuracy_stops() -> None:
    done = [trial(1, {4: (0.80, 0.7)}, TrialState.COMPLETE, final_accuracy=0.86),
            trial(2, {4: (0.70, 0.7)}, TrialState.COMPLETE, final_accuracy=0.71),
            *(trial(n, {4: (0.5, 0.5)}) for n in range(10, 10 + MIN_TRIALS - 3))]  # weaker, still running
    assert reason(3, 4, record(0.85, 0.7), done, 0.9) is None  # 0.85 + the best gain, 0.06, reaches 0.9
    assert "cannot reach min_accuracy 0.9" in reason(3, 4, record(0.80, 0.7), done, 0.9)
    assert judge(4, record(0.80, 0.7), rung_peers(done, 3), 0.9).shortfall == pytest.approx(0.04)
    assert reason(3, 4, record(0.80, 0.7), done[:2], 0.9) is None  # too few trials at epoch 4 to judge


def planned(accuracy: float, sparsity: float, progress: float) -> dict:
    """A `planned` rung's record: accuracy so far, planned sparsity, progress towards it."""
    return {"losses": [-accuracy, -sparsity, -progress], "val_accuracy": accuracy}


def planned_trial(number: int, epoch: int, values: dict, state: TrialState = TrialState.RUNNING) -> FrozenTrial:
    made = create_trial(state=state, values=[0.0, 0.0] if state == TrialState.COMPLETE else None,
                        user_attrs={RUNGS_PLANNED: {str(epoch): values}})
    made.number = number
    return made


def test_the_planned_rule_judges_every_trial_after_its_first_eighth_by_its_planned_size() -> None:
    assert [planned_rung_epochs(e) for e in (1, 2, 4, 8, 12, 20, 24)] == [(), (1,), (1,), (1,), (2,), (3,), (3,)]
    logs = {"val_accuracy": 0.9, "mask_sparsity": 0.4, "planned_sparsity": 0.8}
    assert rung_losses(["accuracy", "compressed_size"], logs, planned=True) == [-0.9, -0.8, -0.5]
    assert rung_losses(["accuracy", "compressed_size"], logs) == [-0.9, -0.4]  # the pruned rule: the masks
    assert rung_losses(["accuracy", "sparsity"], {**logs, "planned_sparsity": 0.0}, planned=True)[2] == -1.0
    assert rung_losses(["accuracy", "sparsity"], {**logs, "mask_sparsity": 0.80003}, planned=True)[2] == -1.0
    assert rung_losses(["accuracy"], logs, planned=True) == [-0.9]


def test_a_planned_rung_compares_trials_as_far_along_and_reads_only_its_own_records() -> None:
    # trials that pruned all they plan, to 0.9, at accuracy 0.95
    done = [planned_trial(n, 1, planned(0.95, 0.9, 1.0)) for n in range(PLANNED_MIN_TRIALS - 1)]
    peers = rung_peers(done, 99, planned=True)
    # less accurate, planning less, and as far along: beaten
    beaten = judge(1, planned(0.9, 0.8, 1.0), peers, None, PLANNED_MIN_TRIALS)
    assert f"front 2 of the {PLANNED_MIN_TRIALS} trials" in str(beaten)
    # its pruning still ahead: as accurate as the dense model, no trial further along beats it
    assert judge(1, planned(0.97, 0.5, 0.0), peers, None, PLANNED_MIN_TRIALS) is None
    # ... but a trial as far along, as accurate and planning more does
    late = [*done, planned_trial(7, 1, planned(0.97, 0.9, 0.0))]
    assert judge(1, planned(0.97, 0.5, 0.0), rung_peers(late, 99, planned=True), None, PLANNED_MIN_TRIALS)
    # the pruned rule's records are not a planned rung's peers, nor the other way round
    assert all(not peer.rungs for peer in rung_peers(done, 99))
    assert judge(1, planned(0.5, 0.5, 1.0), rung_peers(done[:-1], 99, planned=True), None,
                 PLANNED_MIN_TRIALS) is None  # too few trials at the rung


@pytest.mark.parametrize(("value", "rule"), [(False, None), (True, "pruned"), ("pruned", "pruned"),
                                              ("planned", "planned")])
def test_early_stopping_names_its_rule(value: object, rule: str | None) -> None:
    assert parse_study_config({"name": "s", "early_stopping": value}).early_rule == rule


def test_an_unknown_early_stopping_rule_is_named() -> None:
    with pytest.raises(ConfigError, match="early_stopping: 'yes' is not one of true, false, pruned, planned"):
        parse_study_config({"name": "s", "early_stopping": "yes"})


@pytest.mark.slow
def test_dominated_trials_stop_across_two_workers_and_a_resume(tmp_path: Path) -> None:
    import optuna

    from sweep.stores.optuna_storage import load_study

    write_study(tmp_path, name="early", n_trials=2, early_stopping=True, train={"epochs": 4},
                search={"schedule": "constant", "end_step": 0.5, "begin_step": 0.0})
    first = run_sweep("run", "early.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    storage = f"sqlite:///{tmp_path}/sweep.db"
    study = load_study("early", storage)
    assert all(t.state == TrialState.COMPLETE and set(t.user_attrs[RUNGS]) == {"2", "3"} for t in study.trials)
    # Trials a resumed run must beat: at epochs 2 and 3 they are as accurate and sparse as can be.
    raw = optuna.load_study(study_name="early", storage=storage)
    for _ in range(MIN_TRIALS - 2):
        raw.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={
            RUNGS: {"2": record(1.0, 1.0), "3": record(1.0, 1.0)}, EARLY_STOPPED: 2}))

    resumed = run_sweep("run", "early.yaml", "--n-trials", "2", "--jobs", "2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "stopped early after epoch 2" in resumed.stderr
    new = [t for t in load_study("early", storage).trials if t.number >= 2 + MIN_TRIALS - 2]
    assert len(new) == 2 and all(t.state == TrialState.PRUNED and t.user_attrs[EARLY_STOPPED] == 2 for t in new)
    assert all(list(t.user_attrs[RUNGS]) == ["2"] for t in new)  # stopped at its first rung

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for t in new:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["sweep.early_stopped"] == "2"
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2  # curves up to the stop
    doctor = run_sweep("doctor", "early.yaml", cwd=tmp_path)
    assert doctor.returncode == 0 and "2 complete trials" in doctor.stdout and "6 stopped early" in doctor.stdout, \
        doctor.stdout + doctor.stderr
    again = run_sweep("run", "early.yaml", cwd=tmp_path)  # stopped trials count toward n_trials
    assert again.returncode == 0 and "already has 8 finished trials" in again.stderr, again.stderr
    front = {t.number for t in load_study("early", storage).best_trials}
    assert front and front <= {0, 1}  # stopped trials never enter the front


@pytest.mark.slow
def test_the_planned_rule_stops_trials_after_their_first_epoch_across_a_killed_jobs_2_run_and_a_resume(
    tmp_path: Path,
) -> None:
    import json
    import signal
    import time

    import mlflow
    from test_scale_out import start

    from sweep.stores.optuna_storage import load_study

    n_trials = 12
    write_study(tmp_path, name="planned", n_trials=n_trials, early_stopping="planned", train={"epochs": 4})
    storage = f"sqlite:///{tmp_path}/sweep.db"
    env = {"SWEEP_HEARTBEAT_INTERVAL": "1"}  # a killed worker's trial is stale after 3 s
    doomed = start("run", "planned.yaml", "--jobs", "2", cwd=tmp_path, env=env)
    deadline = time.monotonic() + 240
    while not stopped_trials(tmp_path / "sweep.db"):
        if doomed.poll() is not None or time.monotonic() > deadline:
            doomed.kill()
            raise AssertionError(f"no trial was stopped while the run lasted: {doomed.communicate(timeout=30)}")
        time.sleep(0.2)
    doomed.send_signal(signal.SIGKILL)  # mid-study: its workers' trials are left running
    doomed.communicate(timeout=30)

    resumed = run_sweep("run", "planned.yaml", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = load_study("planned", storage).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(stopped) == n_trials, [(t.number, t.state.name, t.user_attrs.get("error")) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs["error"] == "interrupted" or t.user_attrs["error"].startswith("worker lost")
               for t in trials if t.state == TrialState.FAIL)  # what the kill left running
    # every trial was judged after epoch 1, most stopped there (a few may be later, at the pruned rule's rungs)
    assert all(len(t.user_attrs[RUNGS_PLANNED]["1"]["losses"]) == 3 for t in complete + stopped)
    assert [t for t in stopped if t.user_attrs[EARLY_STOPPED] == 1]
    for t in complete:  # ... and recorded for the pruned rule's rungs from the epoch its window ended
        plan = t.user_attrs["plan"]
        window = recorded_epochs(4, plan["total_steps"] // 4, plan["end_step"])
        assert set(t.user_attrs.get(RUNGS, {})) == {str(e) for e in window}

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for t in stopped:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["sweep.early_stopped"] == str(t.user_attrs[EARLY_STOPPED])
        assert "only fronts up to" in run.data.tags["sweep.error"]
        history = client.get_metric_history(run.info.run_id, "planned_sparsity")  # curves up to the stop
        assert len(history) == t.user_attrs[EARLY_STOPPED]
    doctor = run_sweep("doctor", "planned.yaml", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"{len(complete)} complete trials" in doctor.stdout and f"{len(stopped)} stopped early" in doctor.stdout
    again = run_sweep("run", "planned.yaml", cwd=tmp_path)  # stopped trials count toward n_trials
    assert again.returncode == 0 and f"already has {n_trials} finished trials" in again.stderr, again.stderr

    last = max(complete, key=lambda t: t.number)  # judged at its rung against the others, and went on
    rerun = run_sweep("rerun", "--study", "planned", "--trial", str(last.number), "--output", "out", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    for name in ("val_accuracy", "sparsity", "compressed_bytes"):
        assert summary["reproduced"][name] == summary["original"][name] == last.user_attrs["metrics"][name], name


def stopped_trials(database: Path) -> int:
    """Trials stopped early so far, read without opening the study (the run may be creating it)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'PRUNED'").fetchone()[0]
    except sqlite3.OperationalError:  # no database or no table yet
        return 0
