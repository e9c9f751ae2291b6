"""Which layers a trial prunes, and wrapping them with tfmot, layer by layer.

`prune_low_magnitude(model)` on a whole model raises on the first layer it cannot wrap
(a `Rescaling` or `Normalization` preprocessing layer, BatchNorm, a custom layer). Users'
models have such layers, so sweep clones the model and wraps only the layers tfmot can
prune, recursing into nested models (a functional model holding a `Sequential` or an
Applications backbone); every other layer is kept as it is, weights included.

`model.prune.include` / `exclude` (regular expressions on layer names) and the pruning
policy (`search.policy: xnnpack`: tfmot's `PruneForLatencyOnXNNPack`, 1x1 convs only)
narrow the set; `sweep.search.structure` gives each layer its pattern and target. The selection
is a pure function of the model, the study file and the trial's params, so a trial, its
rerun and the start-up check agree on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sweep._tf import PruneRegistry, keras, tfmot
from sweep.config import PruneConfig, SearchConfig
from sweep.errors import UsageError
from sweep.modeling.channel_graph import describe
from sweep.modeling.schedules import build_schedule
from sweep.search.channel_groups import ChannelGraph
from sweep.search.structure import LayerPruning, Pattern, Structure, plan_layers
from sweep.search.trial_plan import SchedulePlan


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers in their place (not the models)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def prunable_variables(layer: keras.layers.Layer) -> list[Any]:
    """The weights tfmot would prune in `layer` (kernels, not biases); [] if none or if tfmot
    cannot wrap it."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return list(layer.get_prunable_weights())
    if PruneRegistry.supports(layer):
        return list(PruneRegistry.make_prunable(layer).get_prunable_weights())
    return []


def selected(layer: keras.layers.Layer, rules: PruneConfig, policy: str = "all") -> bool:
    """Whether a trial prunes `layer`: tfmot can prune weights of it, the policy allows it,
    and its name passes `include` and `exclude`."""
    if rules.include is not None and not re.search(rules.include, layer.name):
        return False
    if rules.exclude is not None and re.search(rules.exclude, layer.name):
        return False
    if policy == "xnnpack" and not tfmot.sparsity.keras.PruneForLatencyOnXNNPack().allow_pruning(layer):
        return False
    return bool(prunable_variables(layer))


def layer_shapes(model: keras.Model, rules: PruneConfig, policy: str = "all") -> dict[str, list[tuple[int, ...]]]:
    """The shapes of the weights a trial prunes, by layer name, in model order."""
    return {
        layer.name: [tuple(v.shape) for v in prunable_variables(layer)]
        for layer in all_layers(model)
        if selected(layer, rules, policy)
    }


def check_prunable(model: keras.Model, rules: PruneConfig, search: SearchConfig, what: str) -> str | None:
    """A study needs a layer to prune under every policy it searches, a model the XNNPack
    policy accepts, and two layers for per-layer targets: bad input otherwise. Returns what
    channel trials can remove, for the user to see before the study starts (None: the study
    searches no channels)."""
    for policy in search.policy:
        if policy == "xnnpack":
            try:
                tfmot.sparsity.keras.PruneForLatencyOnXNNPack().ensure_model_supports_pruning(model)
            except ValueError as error:
                raise UsageError(f"search.policy: xnnpack: tfmot's PruneForLatencyOnXNNPack refuses {what}: "
                                 f"{error}; use policy: all") from error
        shapes = layer_shapes(model, rules, policy)
        if not shapes:
            narrowed = rules.include is not None or rules.exclude is not None
            reason = (
                "the XNNPack policy prunes only 1x1 convolutions, and it has none"
                if policy == "xnnpack"
                else "model.prune.include/exclude leave none of its prunable layers"
                if narrowed and any(prunable_variables(layer) for layer in all_layers(model))
                else "it has no layer tfmot can prune (Dense, Conv, Embedding, ...)"
            )
            raise UsageError(f"model: no layer of {what} can be pruned: {reason}; check the model or model.prune")
        if search.per_layer and len(shapes) < 2:
            raise UsageError(f"search.per_layer: {what} has one layer to prune ({next(iter(shapes))}); "
                             f"per-layer targets need two or more; set per_layer: false")
        _check_patterns(model, shapes, search, what, policy)
    return _check_channels(model, rules, search, what) if "channels" in search.pattern else None


def _check_channels(model: keras.Model, rules: PruneConfig, search: SearchConfig, what: str) -> str:
    """Channel trials need a channel group to remove (two for per-layer fractions): else
    every such trial would train the dense model."""
    graph = ChannelGraph.build(describe(model), selected=layer_shapes(model, rules))
    if not graph.groups:
        raise UsageError(f'search.pattern: "channels" finds no channel of {what} that can be removed '
                         f'({"; ".join(graph.pins[:3])}); remove channels from search.pattern')
    if search.per_layer and len(graph.groups) < 2:
        raise UsageError(f"search.per_layer: {what} has one channel group ({graph.groups[0].name}); per-layer "
                         f"fractions need two or more; set per_layer: false")
    pins = [why for why in graph.pins if why not in ("the model's input", "the model's output")]
    channels = sum(len(g) for g in graph.groups)
    return (f"channels: up to {channels - len(graph.groups)} of {channels} channels in {len(graph.groups)} groups "
            f"can be removed (one of each group stays)"
            + (f"; kept whole: {'; '.join(pins[:5])}{' ...' if len(pins) > 5 else ''}" if pins else ""))


def _check_patterns(
    model: keras.Model, shapes: dict[str, list[tuple[int, ...]]], search: SearchConfig, what: str, policy: str
) -> None:
    """A searched pattern must fit a pruned layer: else every trial that draws it is pruned
    unstructured while its params say otherwise, and the search wastes trials on a duplicate."""
    patternable = set(patternable_layers(model)) & set(shapes)
    under = f" under policy {policy}" if len(search.policy) > 1 else ""
    for name in search.pattern:
        pattern = Pattern(name)
        if not any(pattern.fits(shapes[layer]) for layer in patternable):
            kernels = ", ".join(f"{layer} {_inputs(pattern, shapes[layer])}" for layer in shapes if layer in patternable)
            raise UsageError(
                f'search.pattern: "{name}" fits no layer that {what} prunes{under}: it needs {pattern.requirement()}'
                f"{f' ({kernels})' if kernels else ' (no Dense or Conv2D layer is pruned)'}; remove it from "
                f"search.pattern, or prune layers it fits"
            )


def _inputs(pattern: Pattern, shapes: list[tuple[int, ...]]) -> str:
    """What of a layer's kernel a pattern looks at: its input channels (M:N), its shape (a block)."""
    return str(shapes[0][-2]) if pattern.m_of_n and len(shapes[0]) >= 2 else str(shapes[0])


def patternable_layers(model: keras.Model) -> list[str]:
    """The layers a pattern may apply to: Dense and Conv2D (not Conv2DTranspose, whose axis
    -2 is its output), by name."""
    return [layer.name for layer in all_layers(model) if isinstance(layer, keras.layers.Dense | keras.layers.Conv2D)
            and not isinstance(layer, keras.layers.Conv2DTranspose)]


def wrap_for_pruning(
    model: keras.Model, rules: PruneConfig, plan: SchedulePlan, structure: Structure
) -> tuple[keras.Model, dict[str, LayerPruning]]:
    """A clone of `model` whose selected layers are wrapped with `PruneLowMagnitude`, each
    with its pattern and its schedule (`plan`, ending at the layer's target), and what each
    of them got; the other layers are the very same objects, so they keep their weights and
    state."""
    layers = plan_layers(layer_shapes(model, rules, structure.policy), structure, plan.final_sparsity,
                         patternable_layers(model))

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, input_tensors=None, clone_function=wrap)
        if layer.name not in layers or not selected(layer, rules, structure.policy):
            return layer
        how = layers[layer.name]
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=build_schedule(plan.ending_at(how.target)), **Pattern(how.pattern).tfmot_arguments()
        )

    return keras.models.clone_model(model, input_tensors=None, clone_function=wrap), layers
