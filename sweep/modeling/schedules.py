"""tfmot pruning schedules built from a `SchedulePlan`, including our step schedule.

`polynomial` is tfmot's `PolynomialDecay`, `constant` its `ConstantSparsity`, and
`step` is `StepSparsity` below: piecewise-constant levels that rise at searched
boundaries up to the final sparsity. `StepSparsity` serializes through `get_config`,
so a saved *pruned* model loads again inside `load_scope()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from sweep._tf import keras, tf, tfmot
from sweep.search.trial_plan import SchedulePlan


class StepSparsity(tfmot.sparsity.keras.PruningSchedule):
    """Sparsity `levels[i]` from step `boundaries[i]` on; masks change every `frequency`
    steps within `[begin_step, end_step]`.

    >>> StepSparsity([10, 40, 80], [0.2, 0.5, 0.9], begin_step=10, end_step=80, frequency=10)
    """

    def __init__(
        self,
        boundaries: Sequence[int],
        levels: Sequence[float],
        begin_step: int,
        end_step: int,
        frequency: int = 100,
    ) -> None:
        if len(boundaries) != len(levels) or not levels:
            raise ValueError("boundaries and levels must be non-empty and of equal length")
        if list(boundaries) != sorted(boundaries) or list(levels) != sorted(levels):
            raise ValueError("boundaries and levels must be ascending")
        for level in levels:
            self._validate_sparsity(level, "level")
        self._validate_step(begin_step, end_step, frequency, allow_negative_1=False)
        self.boundaries = [int(b) for b in boundaries]
        self.levels = [float(level) for level in levels]
        self.begin_step = int(begin_step)
        self.end_step = int(end_step)
        self.frequency = int(frequency)

    def __call__(self, step: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        step = tf.cast(step, tf.int64)
        # Levels rise at boundaries: the level in force is the sum of the rises passed so far.
        rises = tf.constant(
            [self.levels[0]] + [b - a for a, b in zip(self.levels, self.levels[1:])], tf.float32
        )
        passed = tf.cast(step >= tf.constant(self.boundaries[1:], tf.int64), tf.float32)
        sparsity = rises[0] + tf.reduce_sum(rises[1:] * passed)
        return (
            self._should_prune_in_step(step, self.begin_step, self.end_step, self.frequency),
            sparsity,
        )

    def get_config(self) -> dict:
        return {
            "class_name": self.__class__.__name__,
            "config": {
                "boundaries": self.boundaries,
                "levels": self.levels,
                "begin_step": self.begin_step,
                "end_step": self.end_step,
                "frequency": self.frequency,
            },
        }


def build_schedule(plan: SchedulePlan) -> tfmot.sparsity.keras.PruningSchedule:
    """The tfmot schedule that does what `plan` describes."""
    if plan.family == "polynomial":
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=plan.initial_sparsity,
            final_sparsity=plan.final_sparsity,
            begin_step=plan.begin_step,
            end_step=plan.end_step,
            power=plan.power,
            frequency=plan.frequency,
        )
    if plan.family == "constant":
        return tfmot.sparsity.keras.ConstantSparsity(
            plan.final_sparsity,
            begin_step=plan.begin_step,
            end_step=plan.end_step,
            frequency=plan.frequency,
        )
    if plan.family == "step":
        return StepSparsity(
            plan.boundaries, plan.levels, plan.begin_step, plan.end_step, plan.frequency
        )
    raise ValueError(f"unknown schedule family {plan.family!r}")


@contextlib.contextmanager
def load_scope() -> Iterator[None]:
    """Load a saved pruned model: `with load_scope(): keras.models.load_model(path)`."""
    with keras.utils.custom_object_scope({"StepSparsity": StepSparsity}), tfmot.sparsity.keras.prune_scope():
        yield
