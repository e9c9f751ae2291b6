"""Which layers a trial prunes, and wrapping them with tfmot, layer by layer.

`prune_low_magnitude(model)` on a whole model raises on the first layer it cannot wrap
(a `Rescaling` or `Normalization` preprocessing layer, BatchNorm, a custom layer). Users'
models have such layers, so sweep clones the model and wraps only the layers tfmot can
prune, recursing into nested models (a functional model holding a `Sequential` or an
Applications backbone); every other layer is kept as it is, weights included.

`model.prune.include` / `exclude` (regular expressions on layer names) narrow the set.
The selection is a pure function of the model and the study file, so a trial, its rerun
and the start-up check agree on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from sweep._tf import keras, tfmot
from sweep.config import PruneConfig
from sweep.errors import UsageError

# tfmot's own table of which layers it prunes and which of their weights; not re-exported.
from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (  # noqa: E402
    PruneRegistry,
)


def all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers in their place (not the models)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from all_layers(layer)
        else:
            yield layer


def prunable_variables(layer: keras.layers.Layer) -> list:  # type: ignore[type-arg]
    """The weights tfmot would prune in `layer` (kernels, not biases); [] if none or if tfmot
    cannot wrap it."""
    if isinstance(layer, tfmot.sparsity.keras.PrunableLayer):
        return list(layer.get_prunable_weights())
    if PruneRegistry.supports(layer):
        return list(PruneRegistry.make_prunable(layer).get_prunable_weights())
    return []


def selected(layer: keras.layers.Layer, rules: PruneConfig) -> bool:
    """Whether a trial prunes `layer`: tfmot can prune weights of it, and its name passes
    `include` and `exclude`."""
    if rules.include is not None and not re.search(rules.include, layer.name):
        return False
    if rules.exclude is not None and re.search(rules.exclude, layer.name):
        return False
    return bool(prunable_variables(layer))


def layers_to_prune(model: keras.Model, rules: PruneConfig) -> list[str]:
    return [layer.name for layer in all_layers(model) if selected(layer, rules)]


def check_prunable(model: keras.Model, rules: PruneConfig, what: str) -> None:
    """A study needs at least one layer to prune: bad input otherwise."""
    if layers_to_prune(model, rules):
        return
    narrowed = rules.include is not None or rules.exclude is not None
    reason = (
        "model.prune.include/exclude leave none of its prunable layers"
        if narrowed and any(prunable_variables(layer) for layer in all_layers(model))
        else "it has no layer tfmot can prune (Dense, Conv, Embedding, ...)"
    )
    raise UsageError(f"model: no layer of {what} can be pruned: {reason}; check the model or model.prune")


def wrap_for_pruning(model: keras.Model, rules: PruneConfig, **pruning: object) -> tuple[keras.Model, list[str]]:
    """A clone of `model` whose selected layers are wrapped with `PruneLowMagnitude`
    (`pruning`: tfmot's keyword arguments, such as `pruning_schedule`), and the names of
    those layers; the other layers are the very same objects, so they keep their weights
    and state."""
    wrapped: list[str] = []

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, input_tensors=None, clone_function=wrap)
        if selected(layer, rules):
            wrapped.append(layer.name)
            return tfmot.sparsity.keras.prune_low_magnitude(layer, **pruning)
        return layer

    return keras.models.clone_model(model, input_tensors=None, clone_function=wrap), wrapped
