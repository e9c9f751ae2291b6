"""The files and code a study file names: paths resolved against the study file's folder,
"file.py:function" and "pkg.module:function" specs checked without running them."""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationInfo

from sweep.errors import brief

# Keys that can name files, relative to the study file: paths, and code given as
# "file.py:function" or "file.py" (a "pkg.module:function" or a built-in builder names none).
PATH_KEYS = (("data", "path"), ("model", "pretrained"))
CODE_KEYS = (("data", "loader"), ("model", "builder"), ("model", "custom_objects"))


def map_files(dumped: dict[str, Any], change: Callable[[str], str]) -> dict[str, Any]:
    """A dumped study with `change` applied to every file path it names."""
    dumped = {**dumped}
    for section, key in (*PATH_KEYS, *CODE_KEYS):
        part = dumped.get(section)
        value = part.get(key) if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(value, str):
            dumped[section] = {**part, key: change(value) if (section, key) in PATH_KEYS else _map_code(value, change)}
    return dumped


def _map_code(spec: str, change: Callable[[str], str]) -> str:
    target, sep, function = spec.rpartition(":") if ":" in spec else (spec, "", "")
    return f"{change(target)}{sep}{function}" if target.endswith(".py") else spec


def checks_files(info: ValidationInfo) -> bool:
    return bool((info.context or {}).get("check_files", True))


def resolve(path: str, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir", Path("."))
    return (Path(base_dir) / Path(path).expanduser()).resolve()


def code_spec(spec: str, info: ValidationInfo, also: str = "") -> str:
    """A "pkg.module:function" or "file.py:function" spec whose module or file exists and,
    for a file, defines the function (checked without running it); file paths made absolute."""
    target, sep, function = spec.rpartition(":")
    if not sep or not target or not function.isidentifier():
        raise ValueError(f"expected {also}'pkg.module:function' or 'file.py:function', got {brief(spec)}")
    target = code_target(target, info)
    if target.endswith(".py") and checks_files(info) and not _defines(Path(target), function):
        raise ValueError(f"{target} defines no top-level function {function!r}")
    return f"{target}:{function}"


def code_target(target: str, info: ValidationInfo) -> str:
    """An importable module name, or an existing .py file made absolute."""
    if target.endswith(".py"):
        path = resolve(target, info)
        if checks_files(info) and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return str(path)
    if not checks_files(info):
        return target
    try:
        found = importlib.util.find_spec(target) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ValueError(f"cannot find module {target!r}; is it installed or on PYTHONPATH?")
    return target


def _defines(path: Path, name: str) -> bool:
    """Whether a Python file defines `name` at top level, without running the file."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False
