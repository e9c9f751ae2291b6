"""notebooks/ run headlessly, top to bottom, against a study made in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_notebook, run_sweep

pytestmark = pytest.mark.slow


def test_committed_notebooks_are_clean() -> None:
    for path in (REPO / "notebooks").glob("*.ipynb"):
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path


@pytest.mark.parametrize("min_accuracy", [None, 0.3])
def test_pareto_notebook_runs_and_chooses_what_sweep_best_chooses(
    analysed_study: Path, tmp_path: Path, min_accuracy: float | None
) -> None:
    text, outputs = run_notebook(analysed_study, "analysed", tmp_path / "executed.ipynb", min_accuracy=min_accuracy)
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 6  # front, sparsity, weight decay, schedules, layers, hypervolume
    chosen = int(text.split("chosen trial: ")[1].split()[0])

    flags = [] if min_accuracy is None else ["--min-accuracy", str(min_accuracy)]
    best = run_sweep("best", "analysed.yaml", "--format", "json", *flags, cwd=analysed_study)
    assert best.returncode == 0, best.stderr
    assert chosen == json.loads(best.stdout)["trial"]
    assert f"sweep rerun --study analysed --trial {chosen}" in text
