"""End to end: the real `sweep run` command on a tiny study, read back with Optuna's and
MLflow's own clients."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from conftest import run_sweep, write_study

pytestmark = pytest.mark.slow


def stores(folder: Path) -> tuple[str, str]:
    return f"sqlite:///{folder / 'sweep.db'}", f"sqlite:///{folder / 'mlflow.db'}"


def test_run_records_every_trial_in_optuna_and_mlflow_and_resumes(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, n_trials=3, search={"schedule": ["polynomial", "constant", "step"]})
    result = run_sweep("run", str(study_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Pareto-optimal trials of tiny" in result.stdout
    storage, tracking = stores(tmp_path)  # the defaults, in the working directory

    study = optuna.load_study(study_name="tiny", storage=storage)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    baseline = study.user_attrs["baseline"]
    assert baseline["sparsity"] < 0.01 and baseline["val_accuracy"] > 0.5

    mlflow.set_tracking_uri(tracking)
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("tiny")
    parents = mlflow.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'study'",
                                 output_format="list")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["sweep.study"] == "tiny"
    assert parent.data.metrics["baseline/val_accuracy"] == pytest.approx(baseline["val_accuracy"])
    assert "n_trials: 3" in Path(client.download_artifacts(parent.info.run_id, "study.yaml", str(tmp_path))).read_text()

    runs = mlflow.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'trial'",
                              output_format="list")
    assert sorted(r.data.tags["sweep.trial_number"] for r in runs) == ["0", "1", "2"]
    by_id = {r.info.run_id: r for r in runs}
    for trial in trials:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"trial-{trial.number:03d}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep.study"] == "tiny"
        assert run.data.tags["sweep.trial_number"] == str(trial.number)
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
        plan = trial.user_attrs["plan"]
        assert run.data.params["pruning_end_step"] == str(plan["end_step"])
        assert run.data.params["pruning_begin_step"] == str(plan["begin_step"])
        assert run.data.params["seed"] == str(trial.user_attrs["seed"])
        metrics = trial.user_attrs["metrics"]
        for name, value in metrics.items():
            assert run.data.metrics[name] == pytest.approx(value), name
        assert trial.values == [metrics["val_accuracy"], metrics["compressed_bytes"]]
        assert metrics["sparsity"] == pytest.approx(trial.params["final_sparsity"], abs=0.01)
        assert metrics["compression_ratio"] == pytest.approx(baseline["compressed_bytes"] / metrics["compressed_bytes"])
        assert metrics["accuracy_drop"] == pytest.approx(baseline["val_accuracy"] - metrics["val_accuracy"])
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [0, 1, 2]  # epochs 0 and 1, then the final value
        assert max(history, key=lambda m: m.step).value == pytest.approx(metrics["val_accuracy"])
        assert len(client.get_metric_history(run.info.run_id, "mask_sparsity")) >= 2

    # A second run of a complete study adds nothing; --n-trials adds trials to the same study.
    again = run_sweep("run", str(study_file), cwd=tmp_path)
    assert again.returncode == 0 and "already has 3 finished trials" in again.stderr
    more = run_sweep("run", str(study_file), "--n-trials", "1", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4
    assert study.user_attrs["baseline"] == baseline  # not retrained
    assert len(mlflow.search_runs([experiment.experiment_id], "tags.`sweep.role` = 'study'",
                                  output_format="list")) == 1
    fourth = study.trials[-1]
    first_params = {tuple(sorted(t.params.items())) for t in study.trials[:3]}
    assert tuple(sorted(fourth.params.items())) not in first_params  # resumed sampler moved on


def test_flags_and_environment_choose_the_stores(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, name="flags", n_trials=1, search={"schedule": "constant"})
    storage = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    tracking = f"sqlite:///{tmp_path / 'tracking.db'}"
    result = run_sweep("run", str(study_file), "--storage", storage, cwd=tmp_path,
                       env={"MLFLOW_TRACKING_URI": tracking})
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "sweep.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert len(optuna.load_study(study_name="flags", storage=storage).trials) == 1
    assert MlflowClient(tracking).get_experiment_by_name("flags") is not None


def test_bad_study_file_exits_2_with_one_line_and_writes_nothing(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, search={"begin_step": [0.0, 0.3], "end_step": [0.1, 0.9]})
    result = run_sweep("run", str(study_file), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "search.end_step: must be greater than begin_step (0.3), got 0.1" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_a_new_tracking_store_is_made_aside_then_moved_into_place_or_deleted(tmp_path: Path) -> None:
    """`sweep run` creates a new MLflow store while TensorFlow imports (sweep.stores.startup)."""
    (tmp_path / "nets.py").write_text("def broken(input_shape, num_classes):\n    raise RuntimeError('no')\n")
    write_study(tmp_path, name="bad", model={"builder": "nets.py:broken"})
    refused = run_sweep("run", "bad.yaml", cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["bad.yaml", "nets.py"]
    write_study(tmp_path, name="good", n_trials=1, search={"schedule": "constant"})
    result = run_sweep("run", "good.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not list(tmp_path.glob(".mlflow.db*"))
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("good") is not None


def test_error_messages_print_brackets_literally(tmp_path: Path) -> None:
    study_file = write_study(tmp_path, search={"final_sparsity": [0.9, 0.2]})
    result = run_sweep("run", str(study_file), cwd=tmp_path)
    assert result.returncode == 2
    assert "write [low, high] with low < high" in result.stderr  # not eaten as terminal markup


def test_max_accuracy_drop_makes_trials_far_below_the_baseline_infeasible(tmp_path: Path) -> None:
    write_study(tmp_path, name="drop", n_trials=2, constraints={"max_accuracy_drop": 0.05},
                search={"schedule": "constant"})
    result = run_sweep("run", "drop.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="drop", storage=f"sqlite:///{tmp_path / 'sweep.db'}")
    floor = study.user_attrs["baseline"]["val_accuracy"] - 0.05
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for trial in study.trials:
        accuracy = trial.user_attrs["metrics"]["val_accuracy"]
        assert trial.constraints == {"min_accuracy": pytest.approx(floor - accuracy)}
        feasible = client.get_run(trial.user_attrs["mlflow_run_id"]).data.tags["sweep.feasible"]
        assert feasible == ("true" if accuracy >= floor else "false")
