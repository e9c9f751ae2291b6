"""Importing the user's code that a study file names: a model builder, a data loader, the
module that registers a model's custom layers.

A study file names code as "pkg.module:function" or "path/to/file.py:function" (custom
objects: "pkg.module" or "file.py"); `sweep.config` has already checked that the module or
file exists and made file paths absolute. Importing runs the user's code, so every failure
is theirs to fix: a one-line `UsageError` naming the study key.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sweep.errors import UsageError, brief


def import_target(target: str, key: str) -> ModuleType:
    """The module "pkg.module", or the file "path/file.py" run once per process as a module."""
    try:
        if not target.endswith(".py"):
            return importlib.import_module(target)
        # One module per file (the name hashes the path): importing it again is free, and two
        # files called `model.py` do not shadow each other.
        module_name = f"sweep_user_{hashlib.sha1(target.encode()).hexdigest()[:12]}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, Path(target))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in their folder
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
        finally:
            sys.dont_write_bytecode = writes_bytecode
        return module
    except Exception as error:
        raise UsageError(f"{key}: importing {target} failed: {brief(error, 160)}; fix that code") from error


def resolve_function(spec: str, key: str) -> Callable[..., Any]:
    """The function a "module:function" or "file.py:function" spec names."""
    target, _, name = spec.rpartition(":")
    function = getattr(import_target(target, key), name, None)
    if not callable(function):
        raise UsageError(f"{key}: {target} has no function {name!r}")
    return function
