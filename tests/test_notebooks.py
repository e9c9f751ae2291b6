"""notebooks/ run headlessly, top to bottom, against a study made in the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_sweep

pytestmark = pytest.mark.slow
NOTEBOOK = REPO / "notebooks" / "pareto_analysis.ipynb"


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
    import papermill

    executed = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(executed), cwd=str(analysed_study), kernel_name="python3", progress_bar=False,
        parameters={"tracking_uri": f"sqlite:///{analysed_study / 'mlflow.db'}", "study_name": "analysed",
                    "min_accuracy": min_accuracy},
    )  # raises PapermillExecutionError on any cell error
    cells = json.loads(executed.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 6  # front, sparsity, weight decay, schedules, layers, hypervolume
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    chosen = int(text.split("chosen trial: ")[1].split()[0])

    flags = [] if min_accuracy is None else ["--min-accuracy", str(min_accuracy)]
    best = run_sweep("best", "analysed.yaml", "--format", "json", *flags, cwd=analysed_study)
    assert best.returncode == 0, best.stderr
    assert chosen == json.loads(best.stdout)["trial"]
    assert f"sweep rerun --study analysed --trial {chosen}" in text
