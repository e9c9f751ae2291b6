"""`sweep run`: check everything, then create or resume the study and run its trials.

Order matters: every check that can fail on the user's input (study file, data,
model builder, storage, tracking store, a changed search space) runs before the
first write, so a mistake leaves the storage and the tracking store untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

from sweep.config import StudyConfig
from sweep.errors import UsageError
from sweep.objective import FROZEN_SECTIONS, PruningObjective, study_user_attrs
from sweep.stores import open_storage
from sweep.tracking import Tracker

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class RunPlan:
    """How many trials this invocation runs, and why."""

    n_trials: int
    reason: str


def run_study(
    config: StudyConfig,
    *,
    storage_url: str,
    tracking_uri: str,
    n_trials: int | None = None,
    timeout: float | None = None,
    progress: Callable[..., object] | None = None,
) -> optuna.Study:
    """Run (or resume) the study `config` describes; returns the Optuna study."""
    storage = open_storage(storage_url)
    existing = _existing_study(storage, config)
    tracker = Tracker(tracking_uri, config.name)

    from sweep.data import load_dataset
    from sweep.models import build_model

    dataset = load_dataset(config.data)
    build_model(config.model.builder, dataset.input_shape, dataset.num_classes)  # fails early

    done = 0 if existing is None else _count(existing, TrialState.COMPLETE)
    plan = plan_trials(config.n_trials, done, n_trials)
    study = optuna.create_study(
        study_name=config.name,
        storage=storage,
        directions=config.directions,
        sampler=make_sampler(config.sampler, config.seed, offset=0 if existing is None else existing.trials),
        load_if_exists=True,
    )
    for key, value in study_user_attrs(config).items():
        study.set_user_attr(key, value)
    study_run_id = tracker.study_run(config.to_yaml())
    study.set_user_attr("mlflow_study_run_id", study_run_id)
    baseline = ensure_baseline(study, tracker, study_run_id, config, dataset)

    display = progress(plan) if progress else None
    objective = PruningObjective(
        config, dataset, tracker, study_run_id, baseline,
        on_epoch=getattr(display, "epoch", None),
    )
    if plan.n_trials:
        study.optimize(
            objective,
            n_trials=plan.n_trials,
            timeout=timeout,
            catch=(Exception,),
            callbacks=[display] if display else None,
        )
    return study


def plan_trials(target: int, complete: int, requested: int | None) -> RunPlan:
    """`--n-trials N` adds N trials; otherwise run until the study has `n_trials` complete."""
    if requested is not None:
        return RunPlan(requested, f"adding {requested} trials ({complete} complete so far)")
    remaining = max(target - complete, 0)
    if remaining == 0:
        return RunPlan(0, f"the study already has {complete} complete trials (n_trials: {target}); "
                          f"pass --n-trials N to add more")
    resumed = f", resuming after {complete}" if complete else ""
    return RunPlan(remaining, f"running {remaining} trials to reach n_trials: {target}{resumed}")


def make_sampler(name: str, seed: int, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded from the study seed. `offset` (trials already in the
    study) keeps a resumed run from replaying the first run's random start-up points."""
    sampler_seed = int(np.random.SeedSequence([seed, offset]).generate_state(1)[0])
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=sampler_seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sampler_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=sampler_seed)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's own dependency)
        except ImportError:
            raise UsageError("sampler: gp needs PyTorch; pip install torch, or choose tpe") from None
        return optuna.samplers.GPSampler(seed=sampler_seed)
    raise UsageError(f"sampler: unknown sampler {name!r}")


def ensure_baseline(
    study: optuna.Study,
    tracker: Tracker,
    study_run_id: str,
    config: StudyConfig,
    dataset: object,
) -> dict[str, float]:
    """The dense model's metrics, trained once per study with the trials' budget."""
    if "baseline" in study.user_attrs:
        return study.user_attrs["baseline"]
    from sweep.measure import measure
    from sweep.training import train

    trained = train(dataset, config, config.seed)  # type: ignore[arg-type]
    baseline = measure(trained.model, dataset)  # type: ignore[arg-type]
    baseline["train_seconds"] = trained.train_seconds
    study.set_user_attr("baseline", baseline)
    tracker.log_baseline(study_run_id, baseline)
    return baseline


@dataclass
class _Existing:
    trials: int
    states: dict[TrialState, int]


def _existing_study(storage: optuna.storages.BaseStorage, config: StudyConfig) -> _Existing | None:
    """The study already in the storage under this name, if it is compatible with `config`."""
    try:
        study_id = storage.get_study_id_from_name(config.name)
    except KeyError:
        return None
    stored = storage.get_study_user_attrs(study_id).get("config", {})
    wanted = config.model_dump(mode="json")
    for key in FROZEN_SECTIONS:
        if key in stored and stored[key] != wanted[key]:
            raise UsageError(
                f"study {config.name!r} already exists with a different {key} "
                f"({_describe_difference(stored[key], wanted[key])}); "
                f"give the study a new name, or restore the original {key}"
            )
    trials = storage.get_all_trials(study_id, deepcopy=False)
    states: dict[TrialState, int] = {}
    for trial in trials:
        states[trial.state] = states.get(trial.state, 0) + 1
    return _Existing(trials=len(trials), states=states)


def _count(existing: _Existing, state: TrialState) -> int:
    return existing.states.get(state, 0)


def _describe_difference(stored: object, wanted: object) -> str:
    if isinstance(stored, dict) and isinstance(wanted, dict):
        for key in sorted(set(stored) | set(wanted)):
            if stored.get(key) != wanted.get(key):
                return f"{key}: stored {stored.get(key)!r}, study file {wanted.get(key)!r}"
    return f"stored {stored!r}, study file {wanted!r}"
