"""How many channels each group of a channel trial loses, and which ones at each pruning
event. Pure Python over `sweep.search.channel_groups`.

`final_sparsity` keeps its meaning in a channel trial: the share of the selected layers'
kernel weights (those tfmot would prune) that is gone at the end, so trials of every
pattern compare at the same size. A kernel loses both ways: its output channels with its
own group, its input rows with the group feeding it, so a 1x1 conv between two groups
keeping half their channels keeps a quarter of its weights. The solver finds the one
scale λ that gives each group the kept fraction k_g = λ·ER_g^a (between one channel and
all of them), where ER_g is the Erdős–Rényi score of the group's producers' kernels and
`a` the trial's `allocation` (0 without `per_layer`: the same fraction everywhere), such
that the selected kernels keep 1 - `final_sparsity` of their weights. Counts are rounded,
so the plan's `planned_sparsity` is what the trial reaches, not exactly the target.

During training each group follows the trial's schedule scaled to its own final fraction
(`SchedulePlan.ending_at`), so its channels go at the schedule's events in the
schedule's proportions, and the last event removes exactly the planned count.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from sweep.search.channel_groups import ChannelGraph, Group
from sweep.search.structure import LayerPruning, Shape, erdos_renyi
from sweep.search.trial_plan import SchedulePlan


@dataclass(frozen=True)
class KernelShare:
    """A selected kernel's weights, and the rows (input axis) and columns (output axis) each
    group's channels own; the rest stays whatever the groups lose."""

    size: int
    rows: int
    columns: int
    rows_by_group: dict[str, int]
    columns_by_group: dict[str, int]

    def kept(self, kept: Mapping[str, float]) -> float:
        """The share of the weights left when each group keeps its share `kept`."""
        rows = self.rows - sum(n * (1 - kept[g]) for g, n in self.rows_by_group.items())
        columns = self.columns - sum(n * (1 - kept[g]) for g, n in self.columns_by_group.items())
        return rows * columns / (self.rows * self.columns)


@dataclass(frozen=True)
class ChannelPlan:
    """Per group, its channels and how many go by the end; per selected kernel, the share of
    its weights that goes (`LayerPruning("channels", share)`); and their total share."""

    channels: dict[str, int]
    dropped: dict[str, int]
    layers: dict[str, LayerPruning]
    planned_sparsity: float
    kernels: dict[str, KernelShare] = field(repr=False, default_factory=dict)

    def removed_share(self, dropped: Mapping[str, int]) -> float:
        """The share of the selected kernels' weights gone when each group has lost
        `dropped` channels (by the end: `planned_sparsity`)."""
        return _removed_share(self.kernels, {g: (n - dropped[g]) / n for g, n in self.channels.items()})

    def fraction(self, group: str) -> float:
        """The share of `group`'s channels removed at the end."""
        return self.dropped[group] / self.channels[group]

    def dropped_at(self, group: str, schedule: SchedulePlan, step: int) -> int:
        """How many of `group`'s channels the pruning event at `step` leaves removed: the
        trial's schedule scaled to the group's final fraction."""
        return dropped(self.channels[group], schedule.ending_at(self.fraction(group)).sparsity_at(step))


def dropped(channels: int, fraction: float) -> int:
    """How many of `channels` a removed `fraction` takes: rounded, and one always stays.

    >>> dropped(10, 0.25), dropped(10, 1.0), dropped(1, 0.9)
    (2, 9, 0)
    """
    return min(round(channels * fraction), channels - 1)


def choose(scores: Mapping[int, float], count: int, removed_before: Collection[int] = ()) -> list[int]:
    """The `count` channels to remove: those removed before first (masks only grow), then
    the lowest `scores`, ties broken by the lower index, so the choice is a pure function
    of the weights.

    >>> choose({0: 0.5, 1: 0.1, 2: 0.3, 3: 0.1}, 2, removed_before=[2])
    [1, 2]
    """
    order = sorted(scores, key=lambda channel: (channel not in removed_before, scores[channel], channel))
    return sorted(order[:count])


def plan_channels(graph: ChannelGraph, kernels: Mapping[str, Sequence[Shape]], final_sparsity: float,
                  allocation: float | None = None) -> ChannelPlan:
    """The plan that removes about `final_sparsity` of the weights of `kernels` (the
    selected layers' prunable weights' shapes, by layer name, as `pruning.layer_shapes`
    gives them) by whole channels of `graph`'s
    groups; `allocation` is the Erdős–Rényi exponent (None: uniform)."""
    counted = _kernels(graph, kernels)
    sizes = {g.name: len(g) for g in graph.groups}
    exponent = allocation or 0.0
    scores = {g.name: _group_score(g, kernels) ** exponent for g in graph.groups}

    def kept(scale: float) -> dict[str, float]:
        return {name: min(1.0, max(1 / sizes[name], scale * scores[name])) for name in sizes}

    low, high = 0.0, max((1 / score for score in scores.values()), default=1.0)
    for _ in range(60):  # bisection: the kept share grows with the scale
        middle = (low + high) / 2
        if _removed_share(counted, kept(middle)) > final_sparsity:
            low = middle
        else:
            high = middle
    fractions = kept(high)
    drops = {name: dropped(sizes[name], 1 - fractions[name]) for name in sizes}
    exact = {name: (sizes[name] - drops[name]) / sizes[name] for name in sizes}
    layers = {name: LayerPruning("channels", 1 - kernel.kept(exact)) for name, kernel in counted.items()
              if kernel.kept(exact) < 1}  # what this trial prunes: not the kernels no group reaches
    return ChannelPlan(sizes, drops, layers, _removed_share(counted, exact), counted)


def _kernels(graph: ChannelGraph, kernels: Mapping[str, Sequence[Shape]]) -> dict[str, KernelShare]:
    owned: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)  # (layer, axis from the end) -> by group
    for group in graph.groups:
        for channel in group.channels:
            for member in channel:
                if member.layer in kernels and member.weight == "kernel":
                    owned[(member.layer, member.axis - len(kernels[member.layer][0]))][group.name] += 1
    shares = {}
    for name, shapes in kernels.items():
        rows, columns = (shapes[0][-2], shapes[0][-1]) if len(shapes[0]) >= 2 else (1, 1)
        shares[name] = KernelShare(sum(math.prod(s) for s in shapes), rows, columns, dict(owned[(name, -2)]),
                                   dict(owned[(name, -1)]))
    return shares


def _removed_share(kernels: Mapping[str, KernelShare], kept: Mapping[str, float]) -> float:
    """The share of the kernels' weights gone when each group keeps its share `kept`."""
    total = sum(k.size for k in kernels.values())
    return 1 - sum(k.size * k.kept(kept) for k in kernels.values()) / total if total else 0.0


def _group_score(group: Group, kernels: Mapping[str, Sequence[Shape]]) -> float:
    """The Erdős–Rényi score of a group's producers' kernels (`structure.allocate`'s rule)."""
    shapes = [kernels[p][0] for p in group.producers if p in kernels]
    return erdos_renyi(shapes) if shapes else 1.0
