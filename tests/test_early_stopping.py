"""Early stopping in multi-objective studies: the rung and stopping rules without
TensorFlow, then real studies whose trials are stopped across two workers and a resume."""

from __future__ import annotations

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
    assert [planned_rung_epochs(e) for e in (1, 2, 4, 8, 12, 24)] == [(), (1,), (1,), (1,), (2,), (3,)]
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
def test_the_planned_rule_stops_trials_after_their_first_epoch_across_a_killed_jobs_2_run_and_a_resume(
    tmp_path: Path,
) -> None:
    import signal
    import time

    import mlflow
    import optuna
    from test_scale_out import start


    n_trials = 12
    write_study(tmp_path, name="planned", n_trials=n_trials, early_stopping="planned", train={"epochs": 4})
    storage = f"sqlite:///{tmp_path}/sweep.db"
    env = {"SWEEP_HEARTBEAT_INTERVAL": "1"}  # a killed worker's trial is stale after 3 s
    doomed = start("run", "planned.yaml", "--jobs", "2", cwd=tmp_path, env=env)
    deadline = time.monotonic() + 240
    while not any(t.state == TrialState.PRUNED for t in trials_of(storage)):
        assert doomed.poll() is None and time.monotonic() < deadline, doomed.communicate()
        time.sleep(0.2)
    assert doomed.poll() is None  # killed mid-study, its workers' trials left running
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)
    before = {t.number for t in trials_of(storage) if t.state == TrialState.PRUNED}

    resumed = run_sweep("run", "planned.yaml", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = trials_of(storage)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stopped = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(stopped) == n_trials, [(t.number, t.state.name, t.user_attrs.get("error")) for t in trials]
    assert {t.number for t in stopped} > before  # the resumed run stopped trials too, judged against the first's
    assert all(t.user_attrs[EARLY_STOPPED] == 1 and list(t.user_attrs[RUNGS_PLANNED]) == ["1"] for t in stopped)
    assert all(len(t.user_attrs[RUNGS_PLANNED]["1"]["losses"]) == 3 for t in complete)  # every trial was judged
    for t in complete:  # ... and recorded for the pruned rule's rungs from the epoch its window ended
        plan = t.user_attrs["plan"]
        window = recorded_epochs(4, plan["total_steps"] // 4, plan["end_step"])
        assert set(t.user_attrs.get(RUNGS, {})) == {str(e) for e in window}
    assert all(t.user_attrs["error"] == "interrupted" or t.user_attrs["error"].startswith("worker lost")
               for t in trials if t.state == TrialState.FAIL)

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for t in stopped:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "KILLED" and run.data.tags["sweep.early_stopped"] == "1"
        assert "only fronts up to" in run.data.tags["sweep.error"]
        assert len(client.get_metric_history(run.info.run_id, "planned_sparsity")) == 1  # curves up to the stop
    doctor = run_sweep("doctor", "planned.yaml", cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"{len(complete)} complete trials" in doctor.stdout and f"{len(stopped)} stopped early" in doctor.stdout
    front = {t.number for t in optuna.load_study(study_name="planned", storage=storage).best_trials}
    assert front and front <= {t.number for t in complete}  # stopped trials never enter the front
    again = run_sweep("run", "planned.yaml", cwd=tmp_path)  # stopped trials count toward n_trials
    assert again.returncode == 0 and f"already has {n_trials} finished trials" in again.stderr, again.stderr
    last = max(t.number for t in complete)  # judged at its rung against the others, and went on
    rerun = run_sweep("rerun", "--study", "planned", "--trial", str(last), "--output", "out", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]  # every compared metric reproduced exactly


def trials_of(storage: str) -> list[FrozenTrial]:
    import optuna

    try:
        return optuna.load_study(study_name="planned", storage=storage).get_trials()
    except KeyError:  # not created yet
        return []
