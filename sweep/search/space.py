"""The search space: turns the study file's `search` section into Optuna suggestions.

Optuna parameter names are the `search` keys (`final_sparsity`, `power`, ...), so a
user finds a hyperparameter under the same name in the study file, in Optuna and in
MLflow. Fixed values are suggested too (a one-point range), so every trial's
`params` is its complete configuration and `optuna.trial.FixedTrial(trial.params)`
replays it exactly.

The step schedule adds `step_level_<i>` (a level as a fraction of `final_sparsity`)
and `step_position_<i>` (where a level starts, as a fraction of the pruning window).

The structure of the sparsity (`pattern`, `policy`, and `allocation` with `per_layer`)
is suggested only where the study file sets more than the default, so studies without
it keep the same params as before (and reruns of older studies replay them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sweep.config import SearchConfig, Span
from sweep.search.structure import Structure


class Suggester(Protocol):
    """What we need from `optuna.Trial` (also satisfied by `optuna.trial.FixedTrial`)."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def suggest_int(self, name: str, low: int, high: int) -> int: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class TrialParams:
    """One point of the search space, as sampled (fractions, not absolute steps)."""

    schedule: str
    final_sparsity: float
    begin_step: float  # fraction of the total training steps
    end_step: float  # fraction of the total training steps
    frequency: int  # as sampled; the plan may shorten it to fit the pruning window
    weight_decay: float
    initial_sparsity: float | None = None  # polynomial only
    power: float | None = None  # polynomial only
    breakpoints: int | None = None  # step only: number of sparsity levels
    step_levels: tuple[float, ...] = ()  # step only: levels below final, as fractions of it
    step_positions: tuple[float, ...] = ()  # step only: inner level starts, fractions of window
    structure: Structure = Structure()


def suggest_params(trial: Suggester, search: SearchConfig) -> TrialParams:
    """Sample one configuration from `search` (define-by-run: conditional params appear
    only for the schedule family that uses them)."""
    schedule = trial.suggest_categorical("schedule", list(search.schedule))
    common: dict[str, Any] = {  # suggested in this order (a seeded sampler draws in call order)
        "schedule": schedule,
        "final_sparsity": _float(trial, "final_sparsity", search.final_sparsity),
        "begin_step": _float(trial, "begin_step", search.begin_step),
        "end_step": _float(trial, "end_step", search.end_step),
        "frequency": _int(trial, "frequency", search.frequency),
        "weight_decay": _float(trial, "weight_decay", search.weight_decay, log=True),
        "structure": _structure(trial, search),
    }
    if schedule == "polynomial":
        return TrialParams(
            **common,
            initial_sparsity=_float(trial, "initial_sparsity", search.initial_sparsity),
            power=_float(trial, "power", search.power),
        )
    if schedule == "step":
        levels = _int(trial, "breakpoints", search.breakpoints)
        fractions = [_step(trial, f"step_level_{i}", search) for i in range(1, levels)]
        positions = [_step(trial, f"step_position_{i}", search) for i in range(1, levels - 1)]
        return TrialParams(
            **common,
            breakpoints=levels,
            step_levels=tuple(sorted(fractions)),
            step_positions=tuple(sorted(positions)),
        )
    return TrialParams(**common)


def _structure(trial: Suggester, search: SearchConfig) -> Structure:
    default = SearchConfig.model_fields
    pattern = (trial.suggest_categorical("pattern", list(search.pattern))
               if search.pattern != default["pattern"].default else "unstructured")
    return Structure(
        pattern=pattern,
        # which layers tfmot wraps: a channel trial wraps none
        policy=(trial.suggest_categorical("policy", list(search.policy))
                if search.policy != default["policy"].default and pattern != "channels" else "all"),
        allocation=_float(trial, "allocation", search.allocation) if search.per_layer else None,
    )


def start_points(search: SearchConfig, n: int, seed: int) -> list[dict[str, Any]]:
    """A space-filling start for a new study: `n` trials whose shared numeric parameters
    form a Latin hypercube (each range cut into `n` strata, every stratum used once, so
    `final_sparsity` spans its range from the first trials on) and whose schedules (and
    searched patterns) take turns. The sampler draws the rest: each family's own parameters.

    Random start-up points cluster and leave gaps; this start raises the quickstart's
    hypervolume after 10 trials (benchmarks/README.md, section 6).
    """
    from scipy.stats import qmc  # scipy comes with scikit-learn and Optuna

    spans = {name: getattr(search, name) for name in ("final_sparsity", "begin_step", "end_step", "weight_decay", "frequency")}
    spans = {name: span for name, span in spans.items() if not span.fixed}
    rng = np.random.default_rng(seed)
    unit = qmc.LatinHypercube(d=len(spans), seed=rng).random(n) if spans else np.empty((n, 0))
    points = []
    for k, row in enumerate(unit):
        point: dict[str, Any] = {"schedule": search.schedule[k % len(search.schedule)]}
        if len(search.pattern) > 1:
            point["pattern"] = search.pattern[(k // len(search.schedule)) % len(search.pattern)]
        for (name, span), u in zip(spans.items(), row, strict=True):
            if name == "weight_decay":  # searched on a log scale
                value = float(np.exp(np.log(span.low) + u * (np.log(span.high) - np.log(span.low))))
            elif name == "frequency":
                value = int(span.low + u * (span.high - span.low + 1))
            else:
                value = float(span.low + u * (span.high - span.low))
            point[name] = min(max(value, span.low), span.high)  # float rounding at the ends
        points.append(point)
    return points


def fixed_search(search: SearchConfig, params: dict[str, Any]) -> SearchConfig:
    """`search` with every value of one trial's `params` fixed: replaying it suggests
    exactly those params (`sweep best --format yaml`)."""
    values = search.model_dump(mode="json")
    values.update(params)
    if params.get("pattern") == "channels":  # a channel trial samples no policy: it wraps nothing
        values["policy"] = "all"
    return SearchConfig.model_validate(values)


def _float(trial: Suggester, name: str, span: Span, log: bool = False) -> float:
    return trial.suggest_float(name, span.low, span.high, log=log and not span.fixed)


def _step(trial: Suggester, name: str, search: SearchConfig) -> float:
    return _float(trial, name, search.step_params.get(name, Span(0.0, 1.0)))


def _int(trial: Suggester, name: str, span: Span) -> int:
    return trial.suggest_int(name, int(span.low), int(span.high))
