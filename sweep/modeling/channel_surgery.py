"""Removing channels for good: the trained model rebuilt with smaller layers, for what a
channel trial ships.

The rebuild and the masks of training (`sweep.modeling.channel_masks`) both follow
`ChannelGraph.slices`, so they cannot disagree: a removed channel is zero in every weight
it owns while masked, and absent from the rebuilt model, whose outputs are the masked
model's (tests/test_channel_surgery.py). The rebuilt model is a plain tf_keras model of
the same layer classes and names: `model.keras`, the TFLite files and their int8
versions are dense and smaller, and XNNPack runs them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sweep._tf import keras
from sweep.modeling.pruning import all_layers
from sweep.search.channel_groups import ChannelGraph, Keep


def removed(model: keras.Model, graph: ChannelGraph, keep: Keep) -> keras.Model:
    """A new model without the channels `keep` leaves out: each producer narrowed to its
    kept outputs, the layers after it sized by their smaller inputs, and every weight's
    kept slices copied in (BatchNorm statistics included)."""
    slices = graph.slices(keep)
    smaller = narrowed(model, graph.kept_widths(keep))
    for old, new in zip(all_layers(model), all_layers(smaller), strict=True):
        if old.name in slices and old.weights:
            new.set_weights([value[np.ix_(*kept)]
                             for kept, value in zip(slices[old.name].values(), old.get_weights(), strict=True)])
        else:
            new.set_weights(old.get_weights())
    return smaller


def narrowed(model: keras.Model, output_channels: Mapping[str, int]) -> keras.Model:
    """`model`'s architecture with each producer named in `output_channels` given that many
    outputs, with new weights: what a trial's saved weights load into."""

    def narrow(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, input_tensors=None, clone_function=narrow)
        if not type(layer).__module__.startswith("tf_keras."):
            return layer  # a custom layer pins its channels: its shapes, and any state beyond its config, stay
        config = layer.get_config()
        if layer.name in output_channels:
            config["filters" if "filters" in config else "units"] = output_channels[layer.name]
        return type(layer).from_config(config)

    return keras.models.clone_model(model, input_tensors=None, clone_function=narrow)
