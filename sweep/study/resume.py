"""Resuming a study: which sections of the study file it cannot change, what it records
about itself, and how many trials a run adds.

A study stores its study file with paths relative to the study file's folder and reads
them back from the folder of the study file it is given, so a copied or moved project
resumes and reruns from its own files. Where the data and a pretrained model are is no part
of what a trial means; their content is (`sweep.study.fingerprints`). Studies stored before kept
absolute paths: for them the same path is the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.config import StudyConfig, parse_stored_config
from sweep.errors import ConfigError, UsageError
from sweep.stores import records
from sweep.study.fingerprints import FINGERPRINTED

# Sections that define what a trial means; a study cannot be resumed with them changed.
FROZEN_SECTIONS = ("seed", "data", "model", "train", "search", "export", "objectives")


def study_attrs(config: StudyConfig) -> dict[str, Any]:
    """What a study records about itself: the resolved study file (for replay; its paths
    relative to its folder), the folder, and the objectives."""
    return {records.CONFIG: config.stored(), records.STUDY_FOLDER: str(config.folder),
            records.OBJECTIVES: list(config.objectives)}


def stored_study_config(study_name: str, attrs: Mapping[str, Any], study_file: Path | None) -> StudyConfig:
    """The study file a study ran with, its files found next to `study_file` (a copied or
    moved project uses its own), or without one (`--study NAME`) next to the study file of
    its last `sweep run`."""
    if (stored := records.stored_config(attrs)) is None:
        raise UsageError(f"study {study_name!r} was not created by sweep run (no stored config)")
    folder = study_file.parent if study_file is not None else Path(records.study_folder(attrs) or ".")
    return parse_stored_config(stored, source=f"study {study_name!r}", folder=folder)


def check_compatible(stored: dict[str, Any] | None, config: StudyConfig) -> None:
    """A study can be resumed only with the sections that define its trials unchanged."""
    if not stored:
        return
    wanted = config.model_dump(mode="json")
    try:  # keys added to the study file since the study began get their defaults
        stored = parse_stored_config(stored, source="stored study", folder=config.folder).model_dump(mode="json")
    except ConfigError:  # a key the study file has no more: compare as stored
        wanted = config.stored()
    for section, key in (location for locations in FINGERPRINTED.values() for location in locations):
        stored, wanted = _without(stored, section, key), _without(wanted, section, key)
    for key in FROZEN_SECTIONS:
        if key in stored and stored[key] != wanted[key]:
            raise UsageError(
                f"study {config.name!r} already exists with a different {key} "
                f"({describe_difference(stored[key], wanted[key])}); "
                f"give the study a new name, or restore the original {key}"
            )


def _without(study: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    part = study.get(section)
    return {**study, section: {k: v for k, v in part.items() if k != key}} if isinstance(part, dict) else study


def describe_difference(stored: object, wanted: object) -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                return f"{key}: stored {stored.get(key)!r}, study file {wanted.get(key)!r}"
    return f"stored {stored!r}, study file {wanted!r}"


@dataclass
class RunPlan:
    """How many trials this invocation runs, and why."""

    n_trials: int
    reason: str


def plan_trials(target: int, finished: int, requested: int | None) -> RunPlan:
    """`--n-trials N` adds N trials; otherwise run until the study has `n_trials` finished
    (complete, or stopped early)."""
    if requested is not None:
        return RunPlan(requested, f"adding {requested} trials ({finished} finished so far)")
    remaining = max(target - finished, 0)
    if remaining == 0:
        return RunPlan(0, f"the study already has {finished} finished trials (n_trials: {target}); "
                          f"pass --n-trials N to add more")
    resumed = f", resuming after {finished}" if finished else ""
    return RunPlan(remaining, f"running {remaining} trials to reach n_trials: {target}{resumed}")
