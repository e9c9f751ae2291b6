"""`import sweep` and `sweep --help` stay light: no TensorFlow, tfmot or MLflow."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "tf_keras", "tensorflow_model_optimization", "mlflow", "optuna")


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_import_sweep_does_not_import_heavy_libraries() -> None:
    assert not loaded_after("import sweep") & set(HEAVY)


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\nsys.argv = ['sweep', '--help']\nimport sweep.cli\n"
        "try:\n    sweep.cli.main()\nexcept SystemExit:\n    pass"
    )
    assert not loaded_after(code) & set(HEAVY)


def test_pure_modules_do_not_import_tensorflow() -> None:
    modules = "sweep.config, sweep.space, sweep.schedule_plan, sweep.pareto, sweep.stores"
    assert "tensorflow" not in loaded_after(f"import {modules}")
