"""A tf_keras model's layer graph as the plain records `sweep.search.channel_groups` reads.

The graph comes from the live model, not from `get_config()`: the config has no tensor
shapes (Flatten and the MACs need them). This is the one module that reads tf_keras'
private graph attributes (`_nodes_by_depth`, `_keras_history`, `Node.keras_inputs`);
`tests/test_channel_surgery.py` pins them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sweep._tf import keras, tf
from sweep.errors import UsageError
from sweep.search.channel_groups import Call, ModelGraph, Shape


def describe(model: keras.Model, unique_names: bool = True) -> ModelGraph:
    """Every call of every layer of `model`, nested models' layers in their place (joined to
    the outer tensors by "Link" calls, their inputs by "LinkIn" calls), in graph order.

    Raises `UsageError` for a model without a layer graph (a subclassed model) and, with
    `unique_names` (removing channels: records, masks and the rebuild name layers), for two
    layers of one name in nested models."""
    if not _is_graph(model):
        raise UsageError(f"model: {model.name} ({type(model).__name__}) has no layer graph to remove channels "
                         f"from (a subclassed model); build it with the functional or Sequential API")
    calls: list[Call] = []
    shapes: dict[str, Shape] = {}
    layers: dict[str, set[int]] = defaultdict(set)  # name -> the layer objects of that name
    _walk(model, "", calls, shapes, layers)
    if unique_names and (twice := [name for name, objects in layers.items() if len(objects) > 1]):
        raise UsageError(f"model: two layers are named {twice[0]!r} (in nested models); give each layer its own "
                         f"name to remove channels")
    return ModelGraph(calls, shapes, [_tensor_id("", t) for t in model.inputs],
                      [_tensor_id("", t) for t in model.outputs])


def _walk(model: keras.Model, prefix: str, calls: list[Call], shapes: dict[str, Shape],
          layers: dict[str, set[int]]) -> None:
    order = {id(layer): index for index, layer in enumerate(model.layers)}
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True)
             for node in sorted(model._nodes_by_depth[depth], key=lambda n: order.get(id(n.layer), -1))]
    for node in nodes:
        layer = node.layer
        inputs = [_tensor_id(prefix, t) for t in node.keras_inputs]
        outputs = [_tensor_id(prefix, t) for t in tf.nest.flatten(node.outputs)]
        for tensor, name in zip((*node.keras_inputs, *tf.nest.flatten(node.outputs)),
                                (*inputs, *outputs), strict=True):
            shapes[name] = tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else ()
        if _is_graph(layer) and len(inputs) == len(layer.inputs) and len(outputs) == len(layer.outputs):
            inner = f"{prefix}{layer.name}/"
            _walk(layer, inner, calls, shapes, layers)
            # A nested model's inputs keep their width: its clone is built on new Input layers
            # of the old shapes (`channel_surgery.narrowed`). Its single output passes channels on.
            calls.extend(Call(layer.name, "LinkIn", (a,), (_tensor_id(inner, t),))
                         for a, t in zip(inputs, layer.inputs, strict=True))
            link = "Link" if len(outputs) == 1 else "LinkIn"
            calls.extend(Call(layer.name, link, (_tensor_id(inner, t),), (b,))
                         for t, b in zip(layer.outputs, outputs, strict=True))
            continue
        if not isinstance(layer, keras.layers.InputLayer):
            layers[layer.name].add(id(layer))
        weights = {short_name(w): tuple(w.shape.as_list()) for w in layer.weights}
        calls.append(Call(layer.name, _class_name(layer), tuple(inputs), tuple(outputs), _config(layer), weights))


def short_name(weight: Any) -> str:
    """A weight's name within its layer: "kernel" for "block/conv/kernel:0"."""
    return str(weight.name).split("/")[-1].split(":")[0]


def _is_graph(layer: Any) -> bool:
    return isinstance(layer, keras.Model) and bool(getattr(layer, "_is_graph_network", False))


def _tensor_id(prefix: str, tensor: Any) -> str:
    layer, node_index, tensor_index = tensor._keras_history
    return f"{prefix}{layer.name}:{node_index}:{tensor_index}"


def _class_name(layer: keras.layers.Layer) -> str:
    """tf_keras' class name for its own layers; a subclass or any other class (a custom
    layer, which no channel rule may assume anything of) by its qualified name."""
    cls = type(layer)
    return cls.__name__ if cls.__module__.startswith("tf_keras.") else f"{cls.__module__}.{cls.__qualname__}"


def _config(layer: keras.layers.Layer) -> dict[str, Any]:
    try:
        return dict(layer.get_config())
    except NotImplementedError:  # a custom layer without get_config: pinned all the same
        return {}
