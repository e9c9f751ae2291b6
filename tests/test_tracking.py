"""What `sweep run` tells the MLflow UI about a study (experiment tags), on a real SQLite
tracking store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweep.stores.tracking import EXPERIMENT_KIND, PARETO_VIEW, SAVED_VIEW_PREFIX, Tracker

pytestmark = pytest.mark.integration  # MLflow runs `uname` in a subprocess as it starts


def test_the_pareto_view_is_added_once_and_a_view_the_user_saved_over_stays_theirs(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    tags = lambda: tracker.client.get_experiment(tracker.experiment_id).tags
    assert set(tracker.ui_pages("http://h")) == {"runs"}  # no view yet: only the runs page

    tracker.present(["val_accuracy", "compressed_bytes"])
    view = json.loads(tags()[SAVED_VIEW_PREFIX + PARETO_VIEW])
    state = json.loads(view["state"])
    assert view["name"] == "Pareto front" and tags()[EXPERIMENT_KIND] == "custom_model_development"
    assert state["searchFilter"] == "tags.sweep.pareto = 'true'" and state["orderByKey"] == "metrics.`val_accuracy`"
    assert state["selectedColumns"] == ["metrics.`val_accuracy`", "metrics.`compressed_bytes`"]
    pages = tracker.ui_pages("http://h")
    assert pages["Pareto front"] == (f"http://h/#/experiments/{tracker.experiment_id}/runs"
                                     "?viewStateShareKey=pareto-front&workflowType=machine_learning")

    tracker.client.set_experiment_tag(tracker.experiment_id, SAVED_VIEW_PREFIX + PARETO_VIEW, "theirs")
    tracker.client.set_experiment_tag(tracker.experiment_id, EXPERIMENT_KIND, "genai_development")
    tracker.present(["val_accuracy", "compressed_bytes"])  # the next `sweep run`
    assert tags()[SAVED_VIEW_PREFIX + PARETO_VIEW] == "theirs" and tags()[EXPERIMENT_KIND] == "genai_development"


def test_a_trial_run_no_trial_recorded_is_found_by_its_number_while_it_runs(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "s")
    parent = tracker.study_run("name: s\n")
    untold = tracker.start_trial(parent, 3, {"x": 1})
    tracker.start_trial(parent, 4, {"x": 2})
    assert tracker.unfinished_trial_runs(3) == [untold]
    tracker.fail_trial(untold, "worker lost", status="KILLED")
    assert tracker.unfinished_trial_runs(3) == [] and tracker.client.get_run(untold).info.status == "KILLED"


def test_a_study_reads_back_from_mlflow_through_a_read_only_tracker(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from sweep.stores.readback import read_study

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "store").mkdir()  # not MLflow's default ./mlflow.db, so a global URI would show
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    tracker = Tracker(uri, "s")
    parent = tracker.study_run("name: s\n")
    tracker.log_baseline(parent, {"val_accuracy": 0.9})
    done = tracker.start_trial(parent, 0, {"x": 1})
    tracker.log_results(done, {"val_accuracy": 0.8}, tags={"sweep.feasible": "false"})
    tracker.end_run(done)
    tracker.start_trial(parent, 1, {"x": 2})  # still running: not a result yet

    study = read_study(uri, "s")
    assert (study.study_run_id, study.config_yaml, study.baseline) == (parent, "name: s\n", {"val_accuracy": 0.9})
    (run,) = study.trials
    assert (run.run_id, run.number, run.feasible, run.metrics, run.params) == (
        done, 0, False, {"val_accuracy": 0.8}, {"x": "1"})
    with pytest.raises(LookupError, match="no sweep study named 'other'"):
        read_study(uri, "other")
    assert "MLFLOW_TRACKING_URI" not in os.environ and mlflow.get_tracking_uri() != uri  # no global set


def test_mlflow_s_process_wide_tracking_uri_is_ours_only_inside_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from sweep.stores.tracking import _process_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///theirs.db")
    before = mlflow.get_tracking_uri()  # theirs, or what another test in this process set globally
    with _process_tracking_uri("sqlite:///ours.db"):
        assert mlflow.get_tracking_uri() == "sqlite:///ours.db"
    assert mlflow.get_tracking_uri() == before and os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///theirs.db"


@pytest.mark.integration  # TensorFlow in this process
def test_a_logged_keras_model_needs_the_packages_of_its_layers_at_their_installed_versions() -> None:
    from importlib.metadata import version

    from sweep._tf import keras, tfmot
    from sweep.stores.tracking import keras_model_requirements

    plain = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(3)])
    pinned = dict(line.split("==") for line in keras_model_requirements(plain))
    assert pinned["tensorflow"] == version("tensorflow") and pinned["tf-keras"] == version("tf-keras")
    assert {"mlflow", "numpy"} <= set(pinned) and "tensorflow-model-optimization" not in pinned
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(plain)  # a layer class from another package
    pinned = dict(line.split("==") for line in keras_model_requirements(wrapped))
    assert pinned["tensorflow-model-optimization"] == version("tensorflow-model-optimization")
