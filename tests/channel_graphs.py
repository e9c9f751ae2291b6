"""Layer graphs written by hand, for the channel tests that need no TensorFlow."""

from __future__ import annotations

from typing import Any

from sweep.search.channel_groups import Call, ModelGraph


class Graph:
    """A model graph written call by call; each call's output tensor is named after it."""

    def __init__(self, shape: tuple[int | None, ...]) -> None:
        self.calls: list[Call] = [Call("input", "InputLayer", (), ("input",))]
        self.shapes: dict[str, tuple[int | None, ...]] = {"input": (None, *shape)}

    def add(self, name: str, cls: str, inputs: str | tuple[str, ...], shape: tuple[int | None, ...],
            weights: dict[str, tuple[int, ...]] | None = None, **config: Any) -> str:
        inputs = (inputs,) if isinstance(inputs, str) else inputs
        self.calls.append(Call(name, cls, inputs, (name,), config, weights or {}))
        self.shapes[name] = (None, *shape)
        return name

    def conv(self, name: str, source: str, filters: int, size: int = 3, **config: Any) -> str:
        *space, channels = self.shapes[source][1:]
        assert channels
        return self.add(name, "Conv2D", source, (*space, filters),
                        {"kernel": (size, size, channels, filters), "bias": (filters,)}, filters=filters, **config)

    def dense(self, name: str, source: str, units: int, **config: Any) -> str:
        inputs = self.shapes[source][-1]
        assert inputs
        return self.add(name, "Dense", source, (*self.shapes[source][1:-1], units),
                        {"kernel": (inputs, units), "bias": (units,)}, units=units, **config)

    def model(self, output: str) -> ModelGraph:
        return ModelGraph(self.calls, self.shapes, ["input"], [output])


def cnn() -> Graph:
    g = Graph((8, 8, 1))
    g.conv("conv1", "input", 4)
    g.add("bn", "BatchNormalization", "conv1", (8, 8, 4),
          {name: (4,) for name in ("gamma", "beta", "moving_mean", "moving_variance")}, axis=[3])
    g.add("relu", "ReLU", "bn", (8, 8, 4), max_value=6.0, threshold=0.0)
    g.conv("conv2", "relu", 6)
    g.add("pool", "MaxPooling2D", "conv2", (4, 4, 6))
    g.add("flatten", "Flatten", "pool", (96,))
    g.dense("dense1", "flatten", 8, activation="relu")
    g.dense("logits", "dense1", 3)
    return g


def residual() -> Graph:
    g = Graph((8, 8, 3))
    g.conv("stem", "input", 4)
    g.conv("branch", "stem", 4, size=1)
    g.add("add", "Add", ("stem", "branch"), (8, 8, 4))
    g.add("dw", "DepthwiseConv2D", "add", (8, 8, 4), {"depthwise_kernel": (3, 3, 4, 1), "bias": (4,)},
          depth_multiplier=1)
    g.conv("other", "input", 2)
    g.add("concat", "Concatenate", ("dw", "other"), (8, 8, 6), axis=-1)
    g.conv("head", "concat", 5, size=1)
    g.add("gap", "GlobalAveragePooling2D", "head", (5,))
    g.dense("logits", "gap", 2)
    return g


def split() -> Graph:
    """A producer whose outputs are tied by parts: two to one conv, three to another."""
    g = Graph((8, 8, 3))
    g.conv("split", "input", 5)
    g.conv("left", "input", 2)
    g.conv("right", "input", 3)
    g.add("concat", "Concatenate", ("left", "right"), (8, 8, 5), axis=-1)
    g.add("add", "Add", ("split", "concat"), (8, 8, 5))
    g.add("gap", "GlobalAveragePooling2D", "add", (5,))
    g.dense("logits", "gap", 2)
    return g
