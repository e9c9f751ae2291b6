"""`import sweep` and `sweep --help` stay light: no TensorFlow, tfmot or MLflow, and no study
schema (pydantic), which `--help` does not need."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # subprocesses

HEAVY = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "mlflow", "optuna")
SCHEMA = ("pydantic", "sweep.config")  # loaded by the commands that read a study file


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_sweep_does_not_import_heavy_libraries() -> None:
    assert not loaded_after("import sweep") & set(HEAVY + SCHEMA)


def test_import_sweep_still_exports_the_schema() -> None:
    assert "pydantic" in loaded_after("from sweep import StudyConfig, load_study_config")


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\nsys.argv = ['sweep', '--help']\nimport sweep.cli\n"
        "try:\n    sweep.cli.main()\nexcept SystemExit:\n    pass"
    )
    assert not loaded_after(code) & set(HEAVY + SCHEMA)


def test_modules_outside_modeling_load_neither_tensorflow_nor_mlflow() -> None:
    """Every stage but `modeling/` imports TensorFlow and MLflow inside the functions that
    need them, so reading results or the study file stays quick."""
    from conftest import REPO

    modules = [".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
               for path in sorted((REPO / "sweep").rglob("*.py"))
               if path.parent.name != "modeling" and path.stem not in ("__main__", "_tf")]
    assert len(modules) > 40
    assert not loaded_after(f"import {', '.join(modules)}") & {"tensorflow", "mlflow"}


def test_unit_tests_run_without_tensorflow_subprocesses_or_servers() -> None:
    """`pytest -m unit` is the seconds-long logic suite: run it under conftest's guard, on
    the files that hold unit tests, and it must pass with nothing heavy."""
    from conftest import REPO, UNIT_GUARD

    listed = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "unit", "-p", "no:xdist"],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout
    files = sorted({line.split("::")[0] for line in listed.splitlines() if "::" in line})
    assert len(files) > 5, listed[-2000:]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "unit", "-p", "no:xdist", "-p", "no:cacheprovider",
                             *files], cwd=REPO, capture_output=True, text=True, check=False,
                            env={**os.environ, UNIT_GUARD: "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
