"""The study runner in-process: what a worker does once, not once per trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import sweep.data
from sweep.config import parse_study_config
from sweep.runner import RunRequest, run_study

pytestmark = pytest.mark.slow


def test_a_worker_loads_the_dataset_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    original = sweep.data._LOADERS["digits"]

    def counting(config):  # type: ignore[no-untyped-def]
        calls.append(config)
        return original(config)

    monkeypatch.setitem(sweep.data._LOADERS, "digits", counting)
    sweep.data.load_dataset.cache_clear()
    config = parse_study_config({"name": "once", "n_trials": 3, "model": {"builder": "mlp"},
                                 "train": {"epochs": 1, "batch_size": 128}, "search": {"schedule": "constant"}})
    study = run_study(RunRequest(config, f"sqlite:///{tmp_path / 'sweep.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}"))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3
    assert len(calls) == 1  # the check, the baseline and three trials share one load
