"""Removing channels from real tf_keras models: the rebuilt model computes what the masked
model computes, with the channel counts the groups say (issue 28's equivalence tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sweep._tf import keras
from sweep.errors import UsageError
from sweep.modeling.channel_graph import describe
from sweep.modeling.channel_masks import zero_removed
from sweep.modeling.channel_surgery import narrowed, removed
from sweep.modeling.pruning import all_layers
from sweep.search.channel_groups import ChannelGraph, Keep, layer_widths, macs

pytestmark = pytest.mark.integration  # TensorFlow in this process

REPO = Path(__file__).resolve().parents[1]


def pretrained_example() -> keras.Model:
    """The model `studies/pretrained/train_model.py` builds (it imports its loader from its folder)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO / "studies/pretrained"))
        spec = importlib.util.spec_from_file_location("train_model", REPO / "studies/pretrained/train_model.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.build()


def residual_and_concat() -> keras.Model:
    """A conv stem, a residual block whose Add ties two producers, a Concatenate of two
    branches feeding a conv, a depthwise conv, and a Flatten into Dense."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = keras.layers.Conv2D(12, 3, padding="same", name="stem")(inputs)
    stem = keras.layers.BatchNormalization(name="stem_bn")(stem)
    stem = keras.layers.ReLU(6.0, name="stem_relu")(stem)
    branch = keras.layers.Conv2D(12, 1, name="residual_conv", activation="relu")(stem)
    added = keras.layers.Add(name="add")([stem, branch])
    left = keras.layers.Conv2D(6, 3, padding="same", name="left")(added)
    right = keras.layers.DepthwiseConv2D(3, padding="same", name="right_dw")(added)
    right = keras.layers.BatchNormalization(name="right_bn")(right)
    joined = keras.layers.Concatenate(name="concat")([left, right])
    mixed = keras.layers.Conv2D(10, 1, name="mix", activation="swish")(joined)
    pooled = keras.layers.MaxPooling2D(2, name="pool")(mixed)
    flat = keras.layers.Flatten(name="flatten")(pooled)
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(flat)
    hidden = keras.layers.Dropout(0.2, name="dropout")(hidden)
    outputs = keras.layers.Dense(5, name="logits")(hidden)
    return keras.Model(inputs, outputs, name="residual_concat")


def mobilenet() -> keras.Model:
    return keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10)


def nested_mobilenet() -> keras.Model:
    inputs = keras.Input((32, 32, 3), name="pixels")
    features = keras.applications.MobileNetV2(alpha=0.35, weights=None, input_shape=(32, 32, 3),
                                              include_top=False, pooling="avg")(inputs)
    hidden = keras.layers.Dense(32, activation="relu", name="head")(features)
    return keras.Model(inputs, keras.layers.Dense(10, name="classes")(hidden), name="nested")


def nested_block_and_split_producer() -> keras.Model:
    """A nested block after a conv (its input keeps its width), and a producer whose outputs
    are tied to two others: part through an Add with one, part with a Concatenate's other
    input (two groups of one producer)."""
    inputs = keras.Input((8, 8, 3), name="image")
    stem = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    block_input = keras.Input((8, 8, 6), name="block_input")
    block_conv = keras.layers.Conv2D(5, 3, padding="same", name="block_conv")(block_input)
    block = keras.Model(block_input, keras.layers.ReLU(name="block_relu")(block_conv), name="block")
    split = block(stem)
    left = keras.layers.Conv2D(2, 1, name="left")(inputs)
    right = keras.layers.Conv2D(3, 1, name="right")(inputs)
    joined = keras.layers.Add(name="add")([split, keras.layers.Concatenate(name="concat")([left, right])])
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(joined)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(pooled), name="split")


def randomized(model: keras.Model, seed: int = 0) -> keras.Model:
    """`model` with every weight random, BatchNorm's statistics included (fresh ones are 0
    and 1, which would hide a slicing mistake)."""
    rng = np.random.default_rng(seed)
    for layer in all_layers(model):
        values = []
        for weight, value in zip(layer.weights, layer.get_weights(), strict=True):
            if "variance" in weight.name or "gamma" in weight.name:
                values.append(rng.uniform(0.5, 1.5, value.shape))
            else:
                values.append(rng.normal(0, 1 / np.sqrt(max(value.size // value.shape[-1], 1)), value.shape))
        layer.set_weights([v.astype(np.float32) for v in values])
    return model


def half_of_each(graph: ChannelGraph, seed: int = 1) -> Keep:
    """A random half (at least one) of every group's channels."""
    rng = np.random.default_rng(seed)
    return {g.name: sorted(rng.choice(len(g), max(1, len(g) // 2), replace=False).tolist()) for g in graph.groups}


def assert_removal_matches_masking(model: keras.Model, keep: Keep, graph: ChannelGraph) -> keras.Model:
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    zero_removed(masked, graph, keep)
    rebuilt = removed(model, graph, keep)
    x = np.random.default_rng(2).normal(size=(4, *model.input_shape[1:])).astype(np.float32)
    expected = masked(x, training=False).numpy()
    np.testing.assert_allclose(rebuilt(x, training=False).numpy(), expected, atol=1e-5, rtol=1e-5)
    assert rebuilt.count_params() < model.count_params()
    assert graph.macs(keep) == ChannelGraph.build(describe(rebuilt)).macs() < graph.macs()
    return rebuilt


def output_channels(model: keras.Model) -> dict[str, int]:
    return layer_widths(describe(model))


def test_a_sequential_cnn_loses_whole_filters_through_batchnorm_pooling_and_flatten() -> None:
    model = randomized(pretrained_example())
    graph = ChannelGraph.build(describe(model))
    assert [(g.name, len(g)) for g in graph.groups] == [("conv1", 32), ("conv2", 64), ("dense1", 128)]
    # a conv2 channel owns 16 rows of dense1's kernel: the 4x4 positions the Flatten spreads it to
    assert sum(m.layer == "dense1" for m in graph.groups[1].channels[0]) == 16
    assert any("rescale (Rescaling)" in why for why in graph.pins)

    rebuilt = assert_removal_matches_masking(model, half_of_each(graph), graph)
    assert output_channels(rebuilt) == {"conv1": 16, "conv2": 32, "dense1": 64, "logits": 10}
    assert rebuilt.get_layer("bn1").get_weights()[2].shape == (16,)  # moving mean sliced


def test_an_add_ties_its_producers_and_a_concatenate_keeps_its_inputs_apart() -> None:
    model = randomized(residual_and_concat())
    graph = ChannelGraph.build(describe(model))
    assert {g.name: (g.producers, len(g)) for g in graph.groups} == {
        "stem": (("stem", "residual_conv"), 12),  # the Add ties them, the depthwise conv carries them on
        "left": (("left",), 6),
        "mix": (("mix",), 10),
        "hidden": (("hidden",), 16),
    }
    keep = {"stem": [0, 3, 4, 11], "left": [5], "mix": [1, 2, 3, 9], "hidden": list(range(0, 16, 2))}
    rebuilt = assert_removal_matches_masking(model, keep, graph)
    assert output_channels(rebuilt) == {"stem": 4, "residual_conv": 4, "left": 1, "right_dw": 4, "mix": 4,
                                        "hidden": 8, "logits": 5}
    assert rebuilt.get_layer("mix").get_weights()[0].shape == (1, 1, 5, 4)  # 1 left + 4 depthwise inputs


def test_mobilenet_v2_keeps_its_residual_chains_consistent() -> None:
    model = randomized(mobilenet())
    graph = ChannelGraph.build(describe(model))
    assert len(graph.groups) == 25
    assert sum(len(g) for g in graph.groups) == 4144
    chained = next(g for g in graph.groups if "block_2_project" in g.producers)
    assert chained.producers == ("block_1_project", "block_2_project")
    keep = {g.name: list(range(len(g) // 2)) for g in graph.groups}

    rebuilt = assert_removal_matches_masking(model, keep, graph)
    channels = output_channels(rebuilt)
    assert (channels["Conv1"], channels["block_1_expand"], channels["block_2_project"], channels["Conv_1"],
            channels["predictions"]) == (8, 24, 4, 640, 10)


def test_a_nested_backbone_is_pruned_in_its_place() -> None:
    model = randomized(nested_mobilenet())
    graph = ChannelGraph.build(describe(model))
    assert {"Conv1", "Conv_1", "head"} <= {g.name for g in graph.groups}
    rebuilt = assert_removal_matches_masking(model, half_of_each(graph), graph)
    assert output_channels(rebuilt)["classes"] == 10


def test_a_nested_block_keeps_its_input_width_and_a_split_producer_has_one_group_per_tie() -> None:
    model = randomized(nested_block_and_split_producer())
    graph = ChannelGraph.build(describe(model))
    assert {g.name: g.producers for g in graph.groups} == {"left": ("left", "block_conv"),
                                                           "right": ("right", "block_conv")}
    assert "block (LinkIn): a nested model's input keeps its width" in graph.pins  # so stem stays whole
    keep = {"left": [1], "right": [0, 2]}
    rebuilt = assert_removal_matches_masking(model, keep, graph)
    assert output_channels(rebuilt) == {"stem": 6, "block_conv": 3, "left": 1, "right": 2, "logits": 4}


def test_two_layers_of_one_name_in_nested_models_are_refused_for_channels_but_measured() -> None:
    def block(name: str) -> keras.Model:
        inputs = keras.Input((8, 8, 4))
        return keras.Model(inputs, keras.layers.Conv2D(4, 1, name="conv")(inputs), name=name)

    inputs = keras.Input((8, 8, 4))
    outputs = keras.layers.GlobalAveragePooling2D()(block("second")(block("first")(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(outputs))
    with pytest.raises(UsageError, match="model: two layers are named 'conv' .in nested models.; give each layer"):
        describe(model)
    assert macs(describe(model, unique_names=False)) == 2 * 8 * 8 * 16 + 8  # the macs metric of any study


def test_narrowed_weights_load_into_the_architecture_the_counts_give(tmp_path: Path) -> None:
    model = randomized(residual_and_concat())
    graph = ChannelGraph.build(describe(model))
    keep = half_of_each(graph)
    rebuilt = removed(model, graph, keep)
    rebuilt.save_weights(tmp_path / "weights.h5")
    again = narrowed(residual_and_concat(), graph.kept_widths(keep))
    again.load_weights(tmp_path / "weights.h5")
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(again(x).numpy(), rebuilt(x).numpy())


def test_the_private_graph_attributes_describe_reads_are_there() -> None:
    """tf_keras internals `sweep.modeling.channel_graph` relies on: a new tf_keras that moves
    them fails here, not in a user's study."""
    model = residual_and_concat()
    node = model.get_layer("add")._inbound_nodes[0]
    assert [t._keras_history.layer.name for t in node.keras_inputs] == ["stem_relu", "residual_conv"]
    assert model._is_graph_network and max(model._nodes_by_depth) > 0
    described = describe(model)
    assert [c.layer for c in described.calls if c.cls == "Add"] == ["add"]
    assert described.shapes[described.outputs[0]] == (None, 5)
