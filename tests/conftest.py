"""Shared fixtures: small real studies on the bundled digits data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, "-m", "sweep"]


def write_study(folder: Path, **overrides: object) -> Path:
    """A tiny but real study file (2-epoch MLP on digits) with `overrides` merged in."""
    study: dict[str, object] = {
        "name": "tiny",
        "seed": 0,
        "n_trials": 3,
        "model": {"builder": "mlp"},
        "train": {"epochs": 2, "batch_size": 64},
        "search": {"frequency": [2, 8]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}  # type: ignore[dict-item]
        else:
            study[key] = value
    path = folder / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_sweep(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
              ) -> subprocess.CompletedProcess[str]:
    """The real `sweep` command in a subprocess, with a clean environment for stores."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    full_env.update(env or {})
    return subprocess.run(
        [*SWEEP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return write_study(tmp_path)
