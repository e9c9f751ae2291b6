"""Reading a study file, and a study as an older sweep stored it, into a `StudyConfig`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sweep.config.schema import StudyConfig
from sweep.errors import ConfigError, brief


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-6` as a float, as YAML 1.2 does (PyYAML reads a string)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def load_study_config(path: str | Path) -> StudyConfig:
    """Read and validate a study file; raises `ConfigError` naming the offending key.

    >>> config = load_study_config("studies/quickstart.yaml")
    >>> config.objectives
    ['accuracy', 'compressed_size']
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study file")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_YamlLoader)
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}: {error.object[error.start:error.start + 1]!r}); "
            f"save the study file as UTF-8"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_study_config(raw, base_dir=path.parent, source=str(path))


def parse_study_config(
    raw: Any, base_dir: Path = Path("."), source: str = "study", check_files: bool = True
) -> StudyConfig:
    """Validate an already-parsed study mapping (see `load_study_config`). `check_files`
    False accepts files that no longer exist (a stored study's, read for its values)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys like 'name:', got {brief(raw)}")
    try:
        return StudyConfig.model_validate(raw, context={"base_dir": base_dir, "check_files": check_files})
    except ValidationError as error:
        raise ConfigError(f"{source}: {_format_error(error)}") from None


# Keys added since a study could have been stored, with the value such a study ran with:
# a stored study file has every key, so a missing one means an older sweep wrote it.
STORED_BEFORE = {
    ("model", "start"): "scratch",
    ("export", "int8_storage"): "smallest",
    ("export", "tflite_converter"): "savedmodel",
}
# Objectives whose meaning changed with the `export` section: a study stored without one
# ran `int8_size` on the raw file's size.
RENAMED_BEFORE_EXPORT = {"int8_size": "int8_file_size"}


def _stored_before_export(study: dict[str, Any]) -> bool:
    return "export" not in study


def _renamed_before_export(objectives: Sequence[str]) -> list[str]:
    return [RENAMED_BEFORE_EXPORT.get(o, o) for o in objectives]


def parse_stored_config(raw: Any, source: str, folder: Path = Path(".")) -> StudyConfig:
    """A study file as `sweep run` stored it, read with the values it ran with, its paths
    resolved against `folder` (the study file's: a copied project uses its own files).
    Older studies stored absolute paths, which stay as they are. Its files may be gone:
    reading its values does not need them."""
    if isinstance(raw, dict):
        raw = {**raw}
        if _stored_before_export(raw) and isinstance(raw.get("objectives"), list):
            raw["objectives"] = _renamed_before_export(raw["objectives"])
        for (section, key), value in STORED_BEFORE.items():
            part = raw.get(section, {})  # a section added since is missing whole
            if isinstance(part, dict) and key not in part:
                raw[section] = {**part, key: value}
    return parse_study_config(raw, base_dir=folder, source=source, check_files=False)


def inherit_stored_values(config: StudyConfig, stored: Any) -> StudyConfig:
    """`config` resuming a study an older sweep stored: a key added since, which the study
    file leaves out, keeps the value the study ran with (`STORED_BEFORE`), not the new
    default, and an objective renamed since keeps its stored meaning
    (`RENAMED_BEFORE_EXPORT`), so the unchanged study file still resumes its study."""
    if not isinstance(stored, dict):
        return config
    if _stored_before_export(stored) and "int8_storage" not in config.export.model_fields_set:
        config = config.model_copy(update={"objectives": _renamed_before_export(config.objectives)})
    for (section, key), value in STORED_BEFORE.items():
        part, stored_part = getattr(config, section), stored.get(section, {})
        if isinstance(stored_part, dict) and key not in stored_part and key not in part.model_fields_set:
            config = config.model_copy(update={section: part.model_copy(update={key: value})})
    return config


def _format_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"] if part != "step_params"]  # flat in the file
    message = first["msg"].removeprefix("Value error, ")
    if match := re.match(r"^(\w+): (.*)$", message):  # raised by _field_error
        location.append(match.group(1))
        message = match.group(2)
    if first["type"] == "extra_forbidden":
        message = f"unknown key; expected one of: {', '.join(_allowed_keys(location[:-1]))}"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] in ("literal_error", "enum") or "input" in first and first["type"].endswith(("_type", "than", "than_equal", "finite_number")):
        message = f"{message}, got {brief(first['input'])}"
    more = error.error_count() - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{'.'.join(location) or 'study'}: {message}{suffix}"


def _allowed_keys(section: list[str]) -> list[str]:
    model: type[BaseModel] = StudyConfig
    for key in section:
        model = model.model_fields[key].annotation  # type: ignore[assignment]
    keys = list(model.model_fields)
    if "step_params" in keys:
        keys[keys.index("step_params")] = "step_level_<i>, step_position_<i>"
    return keys


def load_study_name(path: str | Path) -> str:
    """Only the `name:` of a study file, for the commands that read a study's results
    (`sweep pareto`, `best`, `report`, `doctor`, `ui`, `dashboard`): they use the study file
    `sweep run` stored, so the data and model files this one names may have moved since.

    >>> load_study_name("studies/quickstart.yaml")
    'digits-quickstart'
    """
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_YamlLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        raw = None
    if not isinstance(raw, dict) or "name" not in raw:
        return load_study_config(path).name  # raises the error that says what is wrong with the file
    return parse_study_config({"name": raw["name"]}, source=str(path), check_files=False).name
