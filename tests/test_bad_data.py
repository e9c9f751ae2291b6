"""Bad data files and misfit model builders through the real `sweep run`: one line naming
the problem and the fix, exit code 2, and the stores exactly as they were."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_sweep, write_study
from test_bad_inputs import snapshot

pytestmark = pytest.mark.slow

BUILDERS = """
import tf_keras as keras


def three_classes(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(3)])


def broken(input_shape, num_classes):
    raise RuntimeError("no layers\\nfor you")
"""


def arrays(**changes: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.random((40, 4, 4)), "y_train": np.arange(40) % 3,
            "x_test": rng.random((10, 4, 4)), "y_test": np.arange(10) % 3, **changes}


@pytest.fixture(scope="module")
def existing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with one real study (`tiny`, one trial) in its default stores, and the bad
    data files and builders the cases name."""
    folder = tmp_path_factory.mktemp("existing")
    write_study(folder, n_trials=1, search={"schedule": "constant"})
    result = run_sweep("run", "tiny.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    (folder / "builders.py").write_text(BUILDERS)
    np.savez(folder / "test_shape.npz", **arrays(x_test=np.zeros((10, 5, 5))))
    np.savez(folder / "empty_test.npz", **arrays(x_test=np.zeros((0, 4, 4)), y_test=np.zeros(0, int)))
    np.savez(folder / "text.npz", **arrays(x_train=np.full((40, 4, 4), "0.5")))
    np.savez_compressed(folder / "whole.npz", **arrays())
    whole = (folder / "whole.npz").read_bytes()
    (folder / "truncated.npz").write_bytes(whole[: len(whole) // 2])
    with open(folder / "array.npz", "wb") as file:  # a .npy file, whatever its name
        np.save(file, arrays()["x_train"])
    return folder


def npz(path: str) -> dict[str, object]:
    return {"data": {"dataset": "npz", "path": path}}


# (case, overrides of the tiny study, expected message)
CASES = [
    ("builder output size", {"model": {"builder": "builders.py:three_classes"}},
     "returns outputs of shape (None, 3), but the dataset's 10 classes need (batch, 10); end the model with Dense(num_classes)"),
    ("builder raises", {"model": {"builder": "builders.py:broken"}},
     "builders.py:broken raised RuntimeError('no layers\\nfor you') when called with ((8, 8, 1), 10); fix the builder"),
    ("test shape differs", npz("test_shape.npz"), "data: x_test images have shape (5, 5, 1) but x_train images (4, 4, 1)"),
    ("empty x_test", npz("empty_test.npz"), "data: x_test is empty (shape (0, 4, 4))"),
    ("text arrays", npz("text.npz"), "data: x_train must hold numbers (pixel values), got dtype <U3"),
    ("truncated npz", npz("truncated.npz"), "truncated.npz as .npz (BadZipFile("),
    (".npy as data.path", npz("array.npz"), "array.npz is a single .npy array, not an .npz archive; save it with numpy.savez"),
]


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_data_or_builder_is_one_line_exit_2_and_writes_nothing(
    existing: Path, tmp_path: Path, overrides: dict, message: str
) -> None:
    folder = tmp_path / "work"
    shutil.copytree(existing, folder)
    before = snapshot(folder)
    study_file = write_study(folder, name="fresh", n_trials=2, **overrides).name
    result = run_sweep("run", study_file, cwd=folder)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr, result.stderr
    assert snapshot(folder) == before
