"""What a trial and a study record in the Optuna storage (`sweep.stores.records`): the key
strings studies stored by older sweeps have, and every reader and writer round-tripped
through a real SQLite storage."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from sweep.search.trial_plan import SchedulePlan
from sweep.stores import records
from sweep.stores.optuna_storage import existing_study_attrs

# The storage format: a study written by any earlier sweep has these keys. Never edit a string
# here to make a test pass; a new key is added to the list.
TRIAL_KEYS = {
    "SEED": "seed",
    "TF_THREADS": "tf_threads",
    "PLAN": "plan",
    "MLFLOW_RUN_ID": "mlflow_run_id",
    "RUNGS": "rungs",
    "RUNGS_PLANNED": "rungs_planned",
    "EARLY_STOPPED": "early_stopped",
    "PRUNED_LAYERS": "pruned_layers",
    "LAYERS": "layers",
    "METRICS": "metrics",
    "TRACKING_ERROR": "tracking_error",
    "CURVES": "curves",
    "ERROR": "error",
    "TIMINGS": "timings",
    "WORKER_RSS_MB": "worker_rss_mb",
    "SKIPPED": "skipped",
    "WEIGHTS_SHA256": "weights_sha256",
    "CHANNELS": "channels",
}
STUDY_KEYS = {
    "CONFIG": "config",
    "STUDY_FOLDER": "study_folder",
    "OBJECTIVES": "objectives",
    "DATA_FINGERPRINT": "data_fingerprint",
    "MODEL_FINGERPRINT": "model_fingerprint",
    "MLFLOW_STUDY_RUN_ID": "mlflow_study_run_id",
    "BASELINE": "baseline",
    "BASELINE_WEIGHTS_SHA256": "baseline_weights_sha256",
    "BASELINE_WEIGHTS_RUN_ID": "baseline_weights_run_id",
    "LATER_METRICS": "later_metrics:",
}
PLAN = SchedulePlan(family="step", total_steps=120, begin_step=10, end_step=90, frequency=10,
                    final_sparsity=0.8, boundaries=(10, 50), levels=(0.5, 0.8))
METRICS = {"val_accuracy": 0.91, "compressed_bytes": 2048.0, "sparsity": 0.8}


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def new_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(study_name="records", storage=storage_url(tmp_path),
                               directions=["maximize"])


def reloaded(tmp_path: Path) -> optuna.Study:
    """The study read back from the storage: nothing held in memory counts."""
    return optuna.load_study(study_name="records", storage=storage_url(tmp_path))


def test_the_key_strings_are_the_ones_stored_studies_have() -> None:
    assert {name: getattr(records, name) for name in TRIAL_KEYS} == TRIAL_KEYS
    assert {name: getattr(records, name) for name in STUDY_KEYS} == STUDY_KEYS
    assert records.TRIAL_KEYS == tuple(TRIAL_KEYS.values())
    assert records.STUDY_KEYS == tuple(STUDY_KEYS.values())


def test_every_key_the_module_names_is_pinned() -> None:
    named = {value for name, value in vars(records).items()
             if name.isupper() and isinstance(value, str)}
    assert named == set(TRIAL_KEYS.values()) | set(STUDY_KEYS.values())


def test_what_a_trial_records_reads_back_from_the_storage(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    trial = study.ask()
    records.record_seed(trial, 1234)
    records.record_tf_threads(trial, 2)
    records.record_plan(trial, PLAN)
    records.record_mlflow_run_id(trial, "run-a")
    records.record_rung(trial, 3, {"losses": [-0.8, -0.5], "val_accuracy": 0.8})
    # added to epoch 3's
    records.record_rung(trial, 5, {"losses": [-0.85, -0.8], "val_accuracy": 0.85})
    records.record_pruned_layers(trial, ["conv1", "dense1"])
    records.record_layers(trial, {"conv1": {"pattern": "unstructured"}})
    records.record_metrics(trial, METRICS)
    records.record_tracking_error(trial, "MLflow: down")
    records.record_curves(trial, {"val_accuracy": [0.5, 0.8]})
    records.record_timings(trial, {"mlflow_log": 0.25})
    records.record_worker_rss_mb(trial, 512.5)
    records.record_weights_sha256(trial, "s" * 64)
    records.record_channels(trial, {"conv1": 8, "logits": 10})
    study.tell(trial, [0.91])

    stored = reloaded(tmp_path).trials[0]
    assert records.seed(stored) == 1234 and records.tf_threads(stored) == 2
    plan = records.stored_plan(stored)
    assert plan == {**asdict(PLAN), "boundaries": [10, 50], "levels": [0.5, 0.8]}  # JSON: lists
    assert SchedulePlan(**plan).end_step == PLAN.end_step  # as `sweep doctor` reads it
    assert records.mlflow_run_id(stored) == "run-a"
    assert records.rungs(stored) == {"3": {"losses": [-0.8, -0.5], "val_accuracy": 0.8},
                                     "5": {"losses": [-0.85, -0.8], "val_accuracy": 0.85}}
    assert records.pruned_layers(stored) == ["conv1", "dense1"]
    assert records.layers(stored) == {"conv1": {"pattern": "unstructured"}}
    assert records.has_metrics(stored) and records.trial_metrics(stored) == METRICS
    assert records.tracking_error(stored) == "MLflow: down"
    assert records.curves(stored) == {"val_accuracy": [0.5, 0.8]}
    assert stored.user_attrs[records.TIMINGS] == {"mlflow_log": 0.25}  # benchmarks/ read them
    assert stored.user_attrs[records.WORKER_RSS_MB] == 512.5
    assert records.trial_error(stored, "none") == "none"
    assert records.early_stopped_epoch(stored) is None and not records.is_skipped(stored)
    assert records.weights_sha256(stored) == "s" * 64
    assert records.channels(stored) == {"conv1": 8, "logits": 10}


def test_metrics_measured_after_a_trial_finished_read_merged_into_its_own(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    for value in (0.91, 0.8):
        trial = study.ask()
        records.record_metrics(trial, {**METRICS, "val_accuracy": value})
        study.tell(trial, [value])
    records.record_later_metrics(study, 0, {"int8_bytes": 900.0})
    records.record_later_metrics(study, 0, {"latency_ms": 0.01})  # added to the first

    read = reloaded(tmp_path)
    assert records.later_metrics(read) == {0: {"int8_bytes": 900.0, "latency_ms": 0.01}}
    first, second = records.with_later_metrics(read, read.trials)
    assert records.trial_metrics(first) == {**METRICS, "int8_bytes": 900.0, "latency_ms": 0.01}
    assert records.trial_metrics(second) == {**METRICS, "val_accuracy": 0.8}
    assert records.trial_metrics(read.trials[0]) == METRICS  # the stored trial is unchanged


def test_a_failed_a_stopped_and_a_skipped_trial_say_why(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    failed, stopped, skipped = study.ask(), study.ask(), study.ask()
    records.record_error(failed, "ValueError: bad")
    records.record_early_stopped(stopped, 4)
    records.record_error(stopped, "stopped early after epoch 4")
    records.mark_skipped(skipped)
    study.tell(failed, state=TrialState.FAIL)
    study.tell(stopped, state=TrialState.PRUNED)
    study.tell(skipped, state=TrialState.FAIL)

    failed, stopped, skipped = reloaded(tmp_path).trials
    assert records.trial_error(failed, "no reason") == "ValueError: bad"
    assert records.early_stopped_epoch(stopped) == 4
    assert records.trial_error(stopped, "no reason") == "stopped early after epoch 4"
    assert records.is_skipped(skipped) and not records.is_skipped(failed)


def test_a_trial_that_recorded_nothing_reads_as_missing(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    study.tell(study.ask(), state=TrialState.FAIL)
    trial = reloaded(tmp_path).trials[0]
    assert records.tf_threads(trial) is None and records.mlflow_run_id(trial) is None
    assert records.weights_sha256(trial) is None
    assert records.channels(trial) == {}
    assert records.tracking_error(trial) is None and records.early_stopped_epoch(trial) is None
    assert records.rungs(trial) == {} and records.curves(trial) == {}
    assert records.pruned_layers(trial) == [] and records.layers(trial) == {}
    assert records.trial_error(trial, "worker lost") == "worker lost"
    assert not records.has_metrics(trial) and not records.is_skipped(trial)
    for required in (records.seed, records.stored_plan, records.trial_metrics):  # written first
        with pytest.raises(KeyError):
            required(trial)


def test_a_trial_stored_by_an_older_sweep_reads(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    study.add_trial(create_trial(value=0.9, user_attrs={
        "seed": 7, "plan": {"family": "constant", "total_steps": 100}, "mlflow_run_id": "old-run",
        "metrics": {"val_accuracy": 0.9}, "pruned_layers": ["dense"], "layers": {"dense": {}},
        "rungs": {"2": {"losses": [-0.7], "val_accuracy": 0.7}},
    }))
    trial = reloaded(tmp_path).trials[0]
    assert records.seed(trial) == 7 and records.stored_plan(trial)["total_steps"] == 100
    assert records.mlflow_run_id(trial) == "old-run"
    assert records.trial_metrics(trial) == {"val_accuracy": 0.9}
    assert records.pruned_layers(trial) == ["dense"] and records.layers(trial) == {"dense": {}}
    assert records.rungs(trial)["2"]["val_accuracy"] == 0.7
    assert records.tf_threads(trial) is None  # recorded since `sweep rerun` replays it


def test_what_a_study_records_reads_back_opened_or_not(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    stored_config = {"name": "records", "objectives": ["accuracy", "compressed_size"]}
    records.record_study_attrs(study, {records.CONFIG: stored_config,
                                       records.STUDY_FOLDER: "/projects/a",
                                       records.OBJECTIVES: ["accuracy", "compressed_size"]})
    records.record_study_attrs(study, {records.DATA_FINGERPRINT: "d" * 64,
                                       records.MODEL_FINGERPRINT: "m" * 64})
    records.record_mlflow_study_run_id(study, "parent")
    records.record_baseline_weights(study, "w" * 64, "weights-run")
    records.record_baseline(study, {"val_accuracy": 0.95})

    attrs = existing_study_attrs(storage_url(tmp_path), "records")
    assert attrs is not None
    for read in (reloaded(tmp_path), attrs):  # a study, and its attributes as `sweep run` reads
        assert records.stored_config(read) == stored_config
        assert records.study_folder(read) == "/projects/a"
        assert records.objectives(read) == ["accuracy", "compressed_size"]
        assert records.input_fingerprint(read, records.DATA_FINGERPRINT) == "d" * 64
        assert records.input_fingerprint(read, records.MODEL_FINGERPRINT) == "m" * 64
        assert records.has_mlflow_study_run_id(read)
        assert records.mlflow_study_run_id(read) == "parent"
        assert records.has_baseline(read) and records.baseline(read) == {"val_accuracy": 0.95}
        assert records.baseline_weights_sha256(read) == "w" * 64
        assert records.baseline_weights_run_id(read) == "weights-run"


def test_a_study_sweep_has_not_set_up_reads_as_missing(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    for read in (study, {}):
        assert records.stored_config(read) is None and records.study_folder(read) is None
        assert records.objectives(read) == []
        assert records.input_fingerprint(read, records.DATA_FINGERPRINT) is None
        assert not records.has_mlflow_study_run_id(read) and not records.has_baseline(read)
        assert records.baseline_weights_sha256(read) is None
        assert records.baseline_weights_run_id(read) is None
        for required in (records.mlflow_study_run_id, records.baseline):  # written first
            with pytest.raises(KeyError):
                required(read)
