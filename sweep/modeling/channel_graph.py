"""A tf_keras model's layer graph as the plain records `sweep.search.channel_groups` reads.

The graph comes from the live model, not from `get_config()`: the config has no tensor
shapes (Flatten and the MACs need them). This is the one module that reads tf_keras'
private graph attributes (`_nodes_by_depth`, `_keras_history`, `Node.keras_inputs`);
`tests/test_channel_surgery.py` pins them.
"""

from __future__ import annotations

from typing import Any

from sweep._tf import keras, tf
from sweep.errors import UsageError
from sweep.search.channel_groups import Call, ModelGraph, Shape


def describe(model: keras.Model) -> ModelGraph:
    """Every call of every layer of `model`, nested models' layers in their place (joined to
    the outer tensors by "Link" calls), in graph order.

    Raises `UsageError` for a model without a layer graph (a subclassed model) or with two
    layers of one name (the records name layers)."""
    if not _is_graph(model):
        raise UsageError(f"model: {model.name} ({type(model).__name__}) has no layer graph to remove channels "
                         f"from (a subclassed model); build it with the functional or Sequential API")
    calls: list[Call] = []
    shapes: dict[str, Shape] = {}
    _walk(model, "", calls, shapes)
    named: dict[str, str] = {}
    for call in calls:
        if call.cls not in ("InputLayer", "Link") and named.setdefault(call.layer, call.cls) != call.cls:
            raise UsageError(f"model: two layers are named {call.layer!r}; give each layer its own name")
    return ModelGraph(calls, shapes, [_tensor_id("", t) for t in model.inputs],
                      [_tensor_id("", t) for t in model.outputs])


def _walk(model: keras.Model, prefix: str, calls: list[Call], shapes: dict[str, Shape]) -> None:
    order = {id(layer): index for index, layer in enumerate(model.layers)}
    nodes = [node for depth in sorted(model._nodes_by_depth, reverse=True)
             for node in sorted(model._nodes_by_depth[depth], key=lambda n: order.get(id(n.layer), -1))]
    for node in nodes:
        layer = node.layer
        inputs = [_tensor_id(prefix, t) for t in node.keras_inputs]
        outputs = [_tensor_id(prefix, t) for t in tf.nest.flatten(node.outputs)]
        for tensor, name in zip((*node.keras_inputs, *tf.nest.flatten(node.outputs)),
                                (*inputs, *outputs), strict=True):
            shapes[name] = tuple(tensor.shape.as_list())
        if _is_graph(layer):
            inner = f"{prefix}{layer.name}/"
            _walk(layer, inner, calls, shapes)
            ends = zip((*inputs, *[_tensor_id(inner, t) for t in layer.outputs]),
                       (*[_tensor_id(inner, t) for t in layer.inputs], *outputs), strict=True)
            calls.extend(Call(layer.name, "Link", (a,), (b,)) for a, b in ends)
            continue
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
