"""The study runner in-process: what a worker does once, not once per trial."""

from __future__ import annotations

import gc
import statistics
from pathlib import Path

import optuna
import pytest

import sweep.data.datasets
from sweep.config import parse_study_config
from sweep.search.space import start_points
from sweep.study.runner import RunRequest, run_study

pytestmark = pytest.mark.slow


def test_a_worker_loads_the_dataset_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    original = sweep.data.datasets._LOADERS["digits"]

    def counting(config):  # type: ignore[no-untyped-def]
        calls.append(config)
        return original(config)

    monkeypatch.setitem(sweep.data.datasets._LOADERS, "digits", counting)
    sweep.data.datasets.load_dataset.cache_clear()
    config = parse_study_config({"name": "once", "n_trials": 3, "model": {"builder": "mlp"},
                                 "train": {"epochs": 1, "batch_size": 128}, "search": {"schedule": "constant"}})
    study = run_study(RunRequest(config, f"sqlite:///{tmp_path / 'sweep.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert len(calls) == 1  # the check, the baseline and three trials share one load
    trials = sorted(study.trials, key=lambda t: t.number)  # a new TPE study starts space-filling
    assert [{k: t.params[k] for k in point} for t, point in zip(trials, start_points(config.search, 3, 0))] == \
        start_points(config.search, 3, 0)


def _live_training_graphs() -> int:
    from tensorflow.python.framework.func_graph import FuncGraph

    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, FuncGraph) and o.name == "train_function")


def test_a_worker_keeps_no_trial_alive_after_it_ends(tmp_path: Path) -> None:
    """Memory stays flat across trials: no trial's training graph outlives it (Keras'
    gradient all-reduce used to pin every one, about 20 MB per pruned CNN trial)."""
    config = parse_study_config({"name": "flat", "n_trials": 10, "model": {"builder": "cnn"},
                                 "train": {"epochs": 1}, "search": {"schedule": "polynomial"}})
    before = _live_training_graphs()
    study = run_study(RunRequest(config, f"sqlite:///{tmp_path / 'sweep.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert _live_training_graphs() - before <= 1
    rss = [t.user_attrs["worker_rss_mb"] for t in sorted(study.trials, key=lambda t: t.number)]
    assert len(rss) == 10
    # the leak grew it by ~18 MB per trial (+126 MB from here); jitter is about 30 MB
    assert statistics.median(rss[-3:]) - statistics.median(rss[2:5]) < 50, rss
