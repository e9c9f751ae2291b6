"""Channel groups from hand-written layer graphs: which channels go together, which stay
whole and why, what is left of each weight, and the MACs (no TensorFlow)."""

from __future__ import annotations

from typing import Any

import pytest

from sweep.search.channel_groups import Call, ChannelGraph, macs

from channel_graphs import Graph, cnn, residual, split


def groups(graph: ChannelGraph) -> dict[str, tuple[tuple[str, ...], int]]:
    return {g.name: (g.producers, len(g)) for g in graph.groups}


def test_a_cnn_has_one_group_per_producer_and_its_classes_stay_whole() -> None:
    graph = ChannelGraph.build(cnn().model("logits"))
    assert groups(graph) == {"conv1": (("conv1",), 4), "conv2": (("conv2",), 6), "dense1": (("dense1",), 8)}
    assert graph.pins == ["the model's input", "the model's output"]


def test_a_flattened_channel_owns_every_row_the_flatten_spreads_it_to() -> None:
    graph = ChannelGraph.build(cnn().model("logits"))
    slices = graph.slices({"conv2": [1, 4]})
    assert slices["dense1"]["kernel"][0] == [j for j in range(96) if j % 6 in (1, 4)]
    assert slices["conv2"]["kernel"] == ([0, 1, 2], [0, 1, 2], [0, 1, 2, 3], [1, 4])
    assert slices["conv2"]["bias"] == ([1, 4],)
    assert slices["conv1"]["kernel"][3] == [0, 1, 2, 3]  # a group not named keeps all


def test_batchnorm_and_the_next_producer_follow_the_channels() -> None:
    graph = ChannelGraph.build(cnn().model("logits"))
    slices = graph.slices({"conv1": [0, 2]})
    assert all(slices["bn"][name] == ([0, 2],) for name in ("gamma", "beta", "moving_mean", "moving_variance"))
    assert slices["conv2"]["kernel"][2] == [0, 2]
    assert graph.kept_widths({"conv1": [0, 2], "dense1": [7]}) == {"conv1": 2, "conv2": 6, "dense1": 1,
                                                                         "logits": 3}


def test_an_add_ties_both_producers_and_the_depthwise_conv_after_it() -> None:
    graph = ChannelGraph.build(residual().model("logits"))
    assert groups(graph) == {"stem": (("stem", "branch"), 4), "other": (("other",), 2), "head": (("head",), 5)}
    slices = graph.slices({"stem": [1, 3]})
    assert slices["branch"]["kernel"][2:] == ([1, 3], [1, 3])  # its input and output channels are the stem's
    assert slices["dw"]["depthwise_kernel"][2] == [1, 3]


def test_a_producer_tied_to_two_others_by_parts_has_a_group_per_part_named_by_its_range() -> None:
    graph = ChannelGraph.build(split().model("logits"))
    assert groups(graph) == {"split[0:2]": (("split", "left"), 2), "split[2:5]": (("split", "right"), 3)}
    assert graph.slices({"split[2:5]": [1]})["split"]["kernel"][3] == [0, 1, 3]


def test_a_concatenate_offsets_each_input_in_the_next_kernels_rows() -> None:
    graph = ChannelGraph.build(residual().model("logits"))
    assert graph.slices({"stem": [0], "other": [1]})["head"]["kernel"][2] == [0, 5]


@pytest.mark.parametrize(("cls", "config", "why"), [
    ("Reshape", {}, "no channel rule for this layer"),
    ("Lambda", {}, "no channel rule for this layer"),
    ("my_layers.Scale", {}, "no channel rule for this layer"),
    ("Activation", {"activation": "sigmoid"}, "its activation 'sigmoid' maps 0 elsewhere"),
    ("ReLU", {"threshold": 0.5}, "a ReLU threshold other than 0"),
    ("MaxPooling2D", {"data_format": "channels_first"}, "channels_first"),
    ("Dropout", {"noise_shape": [None, 1, 1, 4]}, "its noise_shape fixes the channel count"),
])
def test_a_layer_no_rule_covers_pins_the_channels_on_both_sides(cls: str, config: dict[str, Any], why: str) -> None:
    g = Graph((8, 8, 3))
    g.conv("conv1", "input", 4)
    g.add("odd", cls, "conv1", (8, 8, 4), **config)
    g.conv("conv2", "odd", 4)
    g.add("gap", "GlobalAveragePooling2D", "conv2", (4,))
    graph = ChannelGraph.build(g.model("gap"))
    assert graph.groups == []  # conv1 feeds the odd layer; conv2 is fed by it and feeds the output
    assert f"odd ({cls}): {why}" in graph.pins


def test_depthwise_multipliers_grouped_convs_and_broadcasts_pin() -> None:
    g = Graph((8, 8, 4))
    g.conv("conv1", "input", 4)
    g.add("dw", "DepthwiseConv2D", "conv1", (8, 8, 8), {"depthwise_kernel": (3, 3, 4, 2)}, depth_multiplier=2)
    g.add("grouped", "Conv2D", "dw", (8, 8, 8), {"kernel": (1, 1, 4, 8)}, groups=2)
    g.conv("gate", "input", 1)
    g.add("scaled", "Multiply", ("grouped", "gate"), (8, 8, 8))
    graph = ChannelGraph.build(g.model("scaled"))
    assert graph.groups == []
    assert {"dw (DepthwiseConv2D): depth_multiplier above 1", "grouped (Conv2D): a grouped convolution",
            "scaled (Multiply): broadcasts along the channels"} <= set(graph.pins)


def test_a_producer_that_is_not_selected_or_mixes_its_outputs_keeps_them_but_its_inputs_shrink() -> None:
    g = Graph((16,))
    g.dense("dense1", "input", 8, activation="relu")
    g.dense("dense2", "dense1", 8, activation="relu")
    g.dense("probabilities", "dense2", 8, activation="softmax")
    g.add("copy", "Identity", "probabilities", (8,))
    g.dense("logits", "copy", 3)
    graph = ChannelGraph.build(g.model("logits"), selected={"dense2", "probabilities", "logits"})
    assert groups(graph) == {"dense2": (("dense2",), 8)}
    assert "dense1: not selected by model.prune" in graph.pins
    assert "probabilities: its activation 'softmax' mixes or moves its output channels" in graph.pins


def test_a_layer_called_twice_removes_the_same_channels_from_both_calls() -> None:
    g = Graph((8,))
    g.dense("a", "input", 6)
    g.dense("b", "input", 6)
    shared = {"kernel": (6, 6), "bias": (6,)}
    g.calls.append(Call("shared", "Dense", ("a",), ("shared_1",), {"units": 6}, shared))
    g.calls.append(Call("shared", "Dense", ("b",), ("shared_2",), {"units": 6}, shared))
    g.shapes |= {"shared_1": (None, 6), "shared_2": (None, 6)}
    g.add("sum", "Add", ("shared_1", "shared_2"), (6,))
    g.dense("logits", "sum", 2)
    graph = ChannelGraph.build(g.model("logits"))
    # the shared kernel's rows tie a's and b's channels; its columns are one group of its own
    assert groups(graph) == {"a": (("a", "b"), 6), "shared": (("shared",), 6)}


def test_macs_count_convolutions_per_output_position_and_shrink_with_the_kept_channels() -> None:
    model = cnn().model("logits")
    dense = 8 * 8 * 9 * 1 * 4 + 8 * 8 * 9 * 4 * 6 + 96 * 8 + 8 * 3
    assert macs(model) == dense
    graph = ChannelGraph.build(model)
    assert graph.macs() == dense
    assert graph.macs({"conv1": [0], "conv2": [0, 1, 2]}) == 8 * 8 * 9 * 1 + 8 * 8 * 9 * 1 * 3 + 48 * 8 + 8 * 3
