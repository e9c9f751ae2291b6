"""Bad input to `sweep run`: one line naming the problem and the fix, exit code 2, and
the storage and tracking store exactly as they were (checked by dumping both)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import run_sweep, write_study

pytestmark = pytest.mark.slow

NPZ_WITHOUT_Y_TEST = "no_y_test.npz"
NOT_A_MODEL = "not_a_model.py"


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one real study (`tiny`, one trial) in its default stores."""
    folder = tmp_path_factory.mktemp("existing")
    write_study(folder, n_trials=1, search={"schedule": "constant"})
    result = run_sweep("run", "tiny.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    rng = np.random.default_rng(0)
    np.savez(folder / NPZ_WITHOUT_Y_TEST, x_train=rng.random((20, 4)), y_train=np.zeros(20, int), x_test=rng.random((5, 4)))
    (folder / NOT_A_MODEL).write_text("def build(input_shape, num_classes):\n    return 'a string'\n")
    return folder


def snapshot(folder: Path) -> dict[str, object]:
    """Logical content of both SQLite stores and the artifact files."""
    state: dict[str, object] = {}
    for name in ("sweep.db", "mlflow.db"):
        path = folder / name
        if path.exists():
            with sqlite3.connect(path) as connection:
                state[name] = list(connection.iterdump())
    state["files"] = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                            if p.is_file() and not p.name.endswith(("-wal", "-shm", ".yaml")))
    return state


# (case, overrides of the tiny study, extra command-line arguments, expected message)
CASES = [
    ("unknown key", {"trian": {"epochs": 2}}, [], "trian: unknown key; expected one of"),
    ("wrong type", {"train": {"epochs": "two"}}, [], "train.epochs: Input should be a valid integer, got 'two'"),
    ("inverted range", {"search": {"final_sparsity": [0.9, 0.6]}}, [], "search.final_sparsity: range [0.9, 0.6] is empty or inverted"),
    ("sparsity of 1", {"search": {"final_sparsity": [0.5, 1.0]}}, [], "search.final_sparsity: sparsity must be in [0, 1)"),
    ("end before begin", {"search": {"begin_step": 0.6, "end_step": 0.5}}, [], "search.end_step: must be greater than begin_step (0.6), got 0.5"),
    ("log range from 0", {"search": {"weight_decay": [0, 0.1]}}, [], "search.weight_decay: a range is searched on a log scale"),
    ("missing npz", {"data": {"dataset": "npz", "path": "nowhere.npz"}}, [], "data.path: no such file:"),
    ("npz lacks an array", {"name": "fresh", "data": {"dataset": "npz", "path": NPZ_WITHOUT_Y_TEST}}, [], "has no array 'y_test'"),
    ("missing builder file", {"model": {"builder": "nets.py:build"}}, [], "model.builder: no such file:"),
    ("builder not a model", {"name": "fresh", "model": {"builder": f"{NOT_A_MODEL}:build"}}, [], "returned str; it must return an uncompiled tf_keras.Model"),
    ("changed search space", {"search": {"schedule": "step"}}, [], "study 'tiny' already exists with a different search (schedule: stored 'constant', study file 'step')"),
    ("changed training", {"train": {"epochs": 3}, "search": {"schedule": "constant"}}, [], "already exists with a different train (epochs: stored 2, study file 3)"),
    ("unreachable storage", {"search": {"schedule": "constant"}}, ["--storage", "postgresql://sweep:hunter2@127.0.0.1:1/optuna"],
     "cannot reach the Optuna storage postgresql://sweep:***@127.0.0.1:1/optuna"),
    ("storage folder missing", {"search": {"schedule": "constant"}}, ["--storage", "sqlite:////no/such/folder/sweep.db"], "the folder /no/such/folder of sqlite:////no/such/folder/sweep.db does not exist"),
    ("unreachable tracking server", {"search": {"schedule": "constant"}}, ["--tracking-uri", "http://user:hunter2@127.0.0.1:1"],
     "cannot reach the MLflow tracking server http://user:***@127.0.0.1:1"),
    ("not a database URL", {"search": {"schedule": "constant"}}, ["--storage", "postgres-ish:/x"], "Optuna storage postgres-ish:/x is not a database URL"),
    ("bad max-failures", {"search": {"schedule": "constant"}}, ["--max-failures", "lots"], "--max-failures: give a fraction below 1 (0.5) or a whole count (3), got 'lots'"),
    ("zero jobs", {"search": {"schedule": "constant"}}, ["--jobs", "0"], "Invalid value for '--jobs'"),
    ("missing study file", None, [], "no such study file"),
]


@pytest.mark.parametrize(("overrides", "args", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    existing: Path, tmp_path: Path, overrides: dict | None, args: list[str], message: str
) -> None:
    folder = tmp_path / "work"
    shutil.copytree(existing, folder)
    before = snapshot(folder)
    study_file = "absent.yaml" if overrides is None else write_study(folder, n_trials=2, **overrides).name
    result = run_sweep("run", study_file, *args, cwd=folder)
    assert result.returncode == 2, result.stderr
    if "Invalid value" not in message:  # click's own usage errors print the usage too
        assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert snapshot(folder) == before
