"""The package layout is the architecture: each stage imports only the stages before it,
TensorFlow is reached only from `modeling/` and `data/` (through `sweep/_tf.py`), LiteRT
only from `modeling/`, MLflow only from `stores/`, and
Optuna's private API only from `sweep/optuna_private.py`. Read from the source, every
import counted, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO

SWEEP = REPO / "sweep"
BASE = {"errors", "user_code", "interrupts"}  # shared by every stage; they import nothing of sweep's but errors
# What each part of sweep may import of sweep, in pipeline order.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "user_code": {"errors"},
    "interrupts": set(),
    "_tf": set(),
    "optuna_private": set(),
    "config": BASE,
    "search": BASE | {"config", "optuna_private"},
    "data": BASE | {"config", "_tf"},
    "modeling": BASE | {"config", "search", "data", "_tf"},
    "stores": BASE | {"config", "search", "optuna_private"},
    "results": BASE | {"config", "search", "stores", "optuna_private"},
    "study": BASE | {"config", "search", "data", "modeling", "stores", "results", "optuna_private"},
    "ui": BASE | {"config", "search", "stores", "results", "study"},
    "cli": BASE | {"config", "stores", "results", "study", "ui"},
    "__init__": BASE | {"config"},
    "__main__": {"cli"},
}
TENSORFLOW = ("tensorflow", "tf_keras", "tensorflow_model_optimization")
OWNERS = {"tensorflow": ("_tf",), "LiteRT": ("modeling",), "mlflow": ("stores",), "optuna private API": ("optuna_private",)}


def part_of(path: Path) -> str:
    """The stage a module belongs to: its package, or the top-level module's own name."""
    relative = path.relative_to(SWEEP)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported(path: Path) -> set[str]:
    """Every module `path` imports, as dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def third_party_owner(name: str) -> str | None:
    root = name.split(".")[0]
    if root in TENSORFLOW:
        return "tensorflow"
    if root == "ai_edge_litert":
        return "LiteRT"
    if root == "mlflow":
        return "mlflow"
    if root == "optuna" and any(part.startswith("_") for part in name.split(".")[1:]):
        return "optuna private API"
    return None


MODULES = sorted(SWEEP.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SWEEP)))
def test_each_stage_imports_only_the_stages_before_it(path: Path) -> None:
    part = part_of(path)
    assert part in ALLOWED, f"{path.relative_to(REPO)}: a new part of sweep; add it to ALLOWED in pipeline order"
    used = {name.split(".")[1] for name in imported(path) if name.startswith("sweep.")} - {part}
    assert used <= ALLOWED[part], f"{part} imports {sorted(used - ALLOWED[part])}"
    for name in imported(path):
        owner = third_party_owner(name)
        assert owner is None or part in OWNERS[owner], f"{part} imports {name}: only {OWNERS[owner]} may"


def test_tensorflow_is_imported_only_through_sweep_tf() -> None:
    users = {part_of(path) for path in MODULES if "sweep._tf" in imported(path)}
    assert users == {"data", "modeling"}


def test_the_guard_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from sweep.study.rerun import rerun_trial\n    import mlflow.tensorflow\n")
    assert {"sweep.study.rerun", "mlflow.tensorflow"} <= imported(module)
    assert third_party_owner("optuna._hypervolume") == "optuna private API"
    assert third_party_owner("optuna.study._multi_objective") == "optuna private API"
    assert third_party_owner("optuna.trial") is None
