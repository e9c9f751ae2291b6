"""Absolute pruning steps for one trial, and what the schedule does at each step.

Pure Python: `sweep.modeling.schedules` turns a plan into tfmot objects, and tests and plots
use `sparsity_at`/`should_prune` to see a schedule without TensorFlow.

The pitfall this module exists for: tfmot's wrapper counts its own steps (the first
batch is step 1) and a schedule changes the mask only at `begin_step + k*frequency`
within `[begin_step, end_step]`. If `end_step` is not on that grid, or lies past the
last batch, the final sparsity is never applied. So the plan

* turns the sampled fractions into steps of the real training run,
* keeps `end_step` on or before the last batch,
* shortens `frequency` if the pruning window is shorter than it, and
* moves `end_step` to the nearest point of the pruning grid inside training, and the
  step schedule's level starts onto that grid,

so the last pruning event applies exactly `final_sparsity`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sweep.config import SearchConfig
from sweep.search.space import Suggester, TrialParams, suggest_params


@dataclass(frozen=True)
class SchedulePlan:
    family: str  # polynomial | constant | step
    total_steps: int  # batches in the whole training run
    begin_step: int  # first step that may prune
    end_step: int  # last pruning event; always on the pruning grid
    frequency: int  # effective: the sampled one, shortened to fit the window
    final_sparsity: float
    initial_sparsity: float = 0.0  # polynomial
    power: float = 1.0  # polynomial
    boundaries: tuple[int, ...] = ()  # step: the step each level starts at (first = begin_step)
    levels: tuple[float, ...] = ()  # step: ascending sparsities, the last = final_sparsity

    def should_prune(self, step: int) -> bool:
        """Whether tfmot updates the masks at `step` (mirrors `_should_prune_in_step`)."""
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0

    def sparsity_at(self, step: int) -> float:
        """The sparsity the schedule asks for at `step` (applied only where `should_prune`)."""
        if self.family == "constant":
            return self.final_sparsity
        if self.family == "polynomial":
            progress = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
            decay = (1.0 - progress) ** self.power
            return (self.initial_sparsity - self.final_sparsity) * decay + self.final_sparsity
        level = self.levels[0]
        for boundary, sparsity in zip(self.boundaries, self.levels, strict=True):
            if step >= boundary:
                level = sparsity
        return level

    def pruning_steps(self) -> list[int]:
        """Every step at which the masks change (tfmot's first step is 1)."""
        first = max(self.begin_step, 1)
        offset = (-(first - self.begin_step)) % self.frequency
        return list(range(first + offset, self.end_step + 1, self.frequency))

    def mask_sparsity_after(self, step: int) -> float:
        """The sparsity of the masks once `step` has run: the last pruning event's target."""
        events = [s for s in self.pruning_steps() if s <= step]
        return self.sparsity_at(events[-1]) if events else 0.0

    def ending_at(self, final_sparsity: float) -> SchedulePlan:
        """The same schedule ending at `final_sparsity` (a layer's own target), every
        sparsity on the way in proportion."""
        if final_sparsity == self.final_sparsity:
            return self
        ratio = final_sparsity / self.final_sparsity if self.final_sparsity else 0.0
        return replace(
            self,
            final_sparsity=final_sparsity,
            initial_sparsity=self.initial_sparsity * ratio,
            levels=(*(level * ratio for level in self.levels[:-1]), final_sparsity) if self.levels else (),
        )

    def as_params(self) -> dict[str, int]:
        """The derived absolute steps, logged next to the sampled fractions."""
        return {
            "total_steps": self.total_steps,
            "pruning_begin_step": self.begin_step,
            "pruning_end_step": self.end_step,
            "pruning_frequency": self.frequency,
        }


def trial_plan(trial: Suggester, search: SearchConfig, total_steps: int) -> tuple[TrialParams, SchedulePlan]:
    """A trial's parameters, sampled by `trial` (or replayed from its stored ones by an
    `optuna.trial.FixedTrial`), and the plan they give over `total_steps` batches: the one
    way a trial, its rerun and the analysis turn parameters into a schedule."""
    params = suggest_params(trial, search)
    return params, plan_schedule(params, total_steps)


def plan_schedule(params: TrialParams, total_steps: int) -> SchedulePlan:
    """Place `params` on a training run of `total_steps` batches.

    >>> from sweep.search.space import TrialParams
    >>> p = TrialParams("constant", 0.8, begin_step=0.1, end_step=0.8, frequency=30, weight_decay=0)
    >>> plan = plan_schedule(p, total_steps=100)
    >>> plan.begin_step, plan.end_step, plan.frequency, plan.pruning_steps()
    (10, 70, 30, [10, 40, 70])
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    begin = min(round(params.begin_step * total_steps), total_steps - 1)
    end = min(max(round(params.end_step * total_steps), begin + 1), total_steps)
    frequency = min(params.frequency, end - begin)
    # pruning events after begin_step: the grid point nearest the sampled end, within training
    events = max(round((end - begin) / frequency), 1)
    if begin + events * frequency > total_steps:
        events -= 1
    end = begin + events * frequency
    common: dict[str, Any] = {
        "family": params.schedule,
        "total_steps": total_steps,
        "begin_step": begin,
        "end_step": end,
        "frequency": frequency,
        "final_sparsity": params.final_sparsity,
    }
    if params.schedule == "polynomial":
        assert params.initial_sparsity is not None and params.power is not None
        return SchedulePlan(**common, initial_sparsity=params.initial_sparsity, power=params.power)
    if params.schedule == "step":
        inner = [begin + round(position * events) * frequency for position in params.step_positions]
        levels = [fraction * params.final_sparsity for fraction in params.step_levels]
        return SchedulePlan(
            **common,
            boundaries=(begin, *inner, end),
            levels=(*levels, params.final_sparsity),
        )
    return SchedulePlan(**common)
