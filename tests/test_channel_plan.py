"""How many channels a channel trial removes from each group, and which (no TensorFlow)."""

from __future__ import annotations

import math

import pytest

from sweep.search.channel_groups import ChannelGraph
from sweep.search.channel_plan import ChannelPlan, choose, dropped, plan_channels
from sweep.search.space import TrialParams
from sweep.search.trial_plan import plan_schedule

from channel_graphs import cnn, residual, split


def kernels(graph: ChannelGraph) -> dict[str, list[tuple[int, ...]]]:
    """Every producer's kernel shape, as `pruning.layer_shapes` gives the selected ones."""
    return {c.layer: [c.weights["kernel"]] for c in graph.model.calls if c.cls in ("Conv2D", "Dense")}


def removed_share_from_slices(graph: ChannelGraph, plan: ChannelPlan) -> float:
    """The same share, counted on the weights `ChannelGraph.slices` keeps."""
    slices = graph.slices({name: range(n - plan.dropped[name]) for name, n in plan.channels.items()})
    shapes = kernels(graph)
    total = sum(math.prod(s[0]) for s in shapes.values())
    kept = sum(math.prod(len(axis) for axis in slices[name]["kernel"]) for name in shapes)
    return 1 - kept / total


def test_one_channel_always_stays() -> None:
    assert [dropped(4, f) for f in (0, 0.2, 0.5, 0.99, 1)] == [0, 1, 2, 3, 3]


def test_the_channels_removed_before_go_first_then_the_weakest_and_ties_by_index() -> None:
    scores = {0: 0.2, 1: 0.0, 2: 0.0, 3: 0.9, 4: 0.1}
    assert choose(scores, 2) == [1, 2]
    assert choose(scores, 3, removed_before=[3]) == [1, 2, 3]  # a removed channel stays removed
    assert choose(scores, 0) == []


@pytest.mark.parametrize("graph", [cnn(), residual(), split()], ids=["cnn", "residual", "split"])
@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.8])
def test_the_plan_reaches_the_weight_share_within_rounding_and_says_what_it_reaches(
        graph: object, sparsity: float) -> None:
    channels = ChannelGraph.build(graph.model("logits"))  # type: ignore[attr-defined]
    plan = plan_channels(channels, kernels(channels), sparsity)
    assert plan.planned_sparsity == pytest.approx(removed_share_from_slices(channels, plan))
    floor = all(plan.channels[g] - plan.dropped[g] == 1 for g in plan.channels)  # one channel always stays
    assert abs(plan.planned_sparsity - sparsity) < 0.12 or floor  # groups of 2 to 8 channels round coarsely
    shares = sorted(plan.fraction(g) for g in plan.channels)
    assert shares[-1] - shares[0] <= 0.5  # one fraction for all, up to rounding
    layer_share = sum(math.prod(s[0]) * plan.layers[n].target for n, s in kernels(channels).items()
                      if n in plan.layers)  # a kernel no group reaches is not listed
    assert layer_share / sum(math.prod(s[0]) for s in kernels(channels).values()) == pytest.approx(
        plan.planned_sparsity)
    assert all(how.pattern == "channels" for how in plan.layers.values())


def test_erdos_renyi_allocation_keeps_the_small_first_conv_denser() -> None:
    channels = ChannelGraph.build(cnn().model("logits"))
    uniform = plan_channels(channels, kernels(channels), 0.5)
    allocated = plan_channels(channels, kernels(channels), 0.5, allocation=1.0)
    assert allocated.fraction("conv1") < uniform.fraction("conv1")
    assert allocated.fraction("conv2") > uniform.fraction("conv2")  # the lowest Erdős–Rényi score
    assert abs(allocated.planned_sparsity - 0.5) < 0.12


def test_a_share_no_channel_count_reaches_leaves_one_channel_per_group_and_says_so() -> None:
    channels = ChannelGraph.build(cnn().model("logits"))
    plan = plan_channels(channels, kernels(channels), 0.999)
    assert all(plan.channels[g] - plan.dropped[g] == 1 for g in plan.channels)
    assert plan.planned_sparsity == pytest.approx(removed_share_from_slices(channels, plan))
    assert plan.planned_sparsity == pytest.approx(1 - (9 + 9 + 16 + 3) / (36 + 216 + 768 + 24))


@pytest.mark.parametrize("schedule", ["polynomial", "constant", "step"])
def test_each_group_follows_the_schedule_to_exactly_its_planned_count(schedule: str) -> None:
    channels = ChannelGraph.build(cnn().model("logits"))
    plan = plan_channels(channels, kernels(channels), 0.6)
    params = TrialParams(schedule, 0.6, begin_step=0.1, end_step=0.8, frequency=7, weight_decay=0,
                         initial_sparsity=0.1, power=3.0, step_positions=(0.5,), step_levels=(0.3, 0.6))
    steps = plan_schedule(params, total_steps=100)
    for group in plan.channels:
        counts = [plan.dropped_at(group, steps, step) for step in steps.pruning_steps()]
        assert counts == sorted(counts)
        assert counts[-1] == plan.dropped[group]
