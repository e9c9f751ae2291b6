"""Resuming a study: which sections of the study file it cannot change, what it records
about itself, and how many trials a run adds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweep.config import StudyConfig, parse_stored_config
from sweep.errors import ConfigError, UsageError

# Sections that define what a trial means; a study cannot be resumed with them changed.
FROZEN_SECTIONS = ("seed", "data", "model", "train", "search", "objectives")


def study_user_attrs(config: StudyConfig) -> dict[str, Any]:
    """What a study records about itself: the resolved study file (for replay) and objectives."""
    return {"config": config.model_dump(mode="json"), "objectives": list(config.objectives)}


def check_compatible(stored: dict[str, Any] | None, config: StudyConfig) -> None:
    """A study can be resumed only with the sections that define its trials unchanged."""
    if not stored:
        return
    try:  # keys added to the study file since the study began get their defaults
        stored = parse_stored_config(stored, source="stored study").model_dump(mode="json")
    except ConfigError:  # e.g. a data file moved since: compare as stored
        pass
    wanted = config.model_dump(mode="json")
    for key in FROZEN_SECTIONS:
        if key in stored and stored[key] != wanted[key]:
            raise UsageError(
                f"study {config.name!r} already exists with a different {key} "
                f"({describe_difference(stored[key], wanted[key])}); "
                f"give the study a new name, or restore the original {key}"
            )


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
