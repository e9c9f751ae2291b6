"""Bad input to `sweep run`: one line naming the problem and the fix, exit code 2, and
the storage and tracking store exactly as they were (checked by dumping both)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from sweep.errors import UsageError

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
    (folder / "builders.py").write_text(BUILDERS)
    np.savez(folder / "test_shape.npz", **arrays(x_test=np.zeros((10, 5, 5))))
    np.savez_compressed(folder / "whole.npz", **arrays())
    whole = (folder / "whole.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    return folder


BUILDERS = """
import tf_keras as keras


def three_classes(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(3)])


def one_layer(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])


def broken(input_shape, num_classes):
    raise RuntimeError("no layers\\nfor you")
"""


def arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((40, 4, 4)), "y_train": np.arange(40) % 3,
            "x_test": rng.random((10, 4, 4)), "y_test": np.arange(10) % 3, **changes}


def npz(path: str) -> dict[str, object]:
    return {"name": "fresh", "data": {"dataset": "npz", "path": path}}


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
    ("max-failures nan", {"search": {"schedule": "constant"}}, ["--max-failures", "nan"], "--max-failures: give a fraction below 1 (0.5) or a whole count (3), got 'nan'"),
    ("NaN in a range", {"name": "fresh", "search": {"final_sparsity": [0.5, float("nan")]}}, [], "search.final_sparsity: expected a finite number or a [low, high] range, got [0.5, nan]"),
    ("builder output size", {"name": "fresh", "model": {"builder": "builders.py:three_classes"}}, [],
     "'s model has outputs of shape (None, 3), but the dataset's 10 classes need (batch, 10); end the model with Dense(num_classes)"),
    ("builder raises", {"name": "fresh", "model": {"builder": "builders.py:broken"}}, [],
     "builders.py:broken raised RuntimeError('no layers\\nfor you') when called with ((8, 8, 1), 10); fix the builder"),
    ("test shape differs", npz("test_shape.npz"), [], "data: x_test images have shape (5, 5, 1) but x_train images (4, 4, 1)"),
    ("truncated npz", npz("truncated.npz"), [], "truncated.npz as .npz (BadZipFile("),
    ("zero jobs", {"search": {"schedule": "constant"}}, ["--jobs", "0"], "Invalid value for '--jobs'"),
    ("missing study file", None, [], "no such study file"),
    ("unknown pattern", {"name": "fresh", "search": {"pattern": "2-4"}}, [], "search.pattern: unknown sparsity pattern '2-4'"),
    # what YAML makes of an unquoted 2:4 (the study file is written by yaml.safe_dump here)
    ("unquoted 2:4", {"name": "fresh", "search": {"pattern": 124}}, [], 'YAML reads an unquoted 2:4; quote it: "2:4"'),
    ("xnnpack policy on a model it refuses", {"name": "fresh", "search": {"policy": ["all", "xnnpack"]}}, [],
     "search.policy: xnnpack: tfmot's PruneForLatencyOnXNNPack refuses model.builder mlp: Could not find `Conv2D 3x3`"),
    ("per_layer with one prunable layer", {"name": "fresh", "model": {"builder": "builders.py:one_layer"},
                                           "search": {"per_layer": True}}, [],
     "builders.py:one_layer has one layer to prune (dense); per-layer targets need two or more; set per_layer: false"),
    # this test environment has no PyTorch: checked before the study, its run and baseline are written
    ("gp without torch", {"name": "fresh", "sampler": "gp"}, [], "sampler: gp needs PyTorch; pip install torch, or choose tpe"),
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


def test_resuming_on_changed_data_is_refused(tmp_path: Path) -> None:
    """Same file name, same shapes, other values: the trials would mix two datasets."""
    from sweep.config import load_study_config
    from sweep.data.datasets import load_dataset
    from sweep.study.runner import RunRequest, run_study

    def save(seed: int) -> None:
        rng = np.random.default_rng(seed)
        np.savez(tmp_path / "data.npz", x_train=rng.random((120, 4, 4)), y_train=rng.integers(0, 3, 120),
                 x_test=rng.random((30, 4, 4)), y_test=rng.integers(0, 3, 30))

    save(0)
    config = load_study_config(write_study(tmp_path, name="npz", n_trials=1, model={"builder": "mlp"},
                                           data={"dataset": "npz", "path": "data.npz"}, search={"schedule": "constant"}))
    stores = (f"sqlite:///{tmp_path / 'sweep.db'}", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_study(RunRequest(config, *stores))
    save(1)
    load_dataset.cache_clear()
    before = snapshot(tmp_path)
    with pytest.raises(UsageError) as refused:
        run_study(RunRequest(config, *stores, n_trials=1))
    assert "study 'npz' was run on different data: data.path" in str(refused.value)
    assert "give the study a new name, or restore the original data" in str(refused.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("store", ["sweep.db", "mlflow.db"])
def test_a_corrupt_store_is_one_line_exit_2(tmp_path: Path, store: str) -> None:
    write_study(tmp_path, n_trials=1, search={"schedule": "constant"})
    (tmp_path / store).write_bytes(b"this is not a database, whatever its name says" * 100)
    result = run_sweep("run", "tiny.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert f"{tmp_path / store} is not a usable SQLite database (file is not a database); move it away" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([store, "tiny.yaml"])
