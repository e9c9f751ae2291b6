"""Which output channels of a model must be removed together, from its layer graph.

A channel removed from a Conv2D or Dense layer (a *producer*) is removed from everything it
flows into: the BatchNorm and DepthwiseConv2D after it, the other inputs of an `Add`
(their channels are summed one by one), its place in a `Concatenate`, the rows of the next
producer's kernel (a *sink*), the rows a `Flatten` spreads it to. Every tensor has one slot
per channel (its last axis); the layer rules below tie slots together, and each connected
set of slots is one removable channel (a *component*). Components touching the same
weights along the same axes make a *group*: the unit a trial prunes to one fraction.

Pure Python over plain records: `sweep.modeling.channel_graph.describe` turns a tf_keras
model into a `ModelGraph` (nested models included), and everything here is testable
without TensorFlow.

Soundness comes first. Removing a channel must give the model that masking it to zero
gives, so every layer on its way must keep a zero channel zero (ReLU, pooling, padding,
dropout...) and treat channels apart. A layer no rule knows (Reshape, Lambda, a custom
layer, LayerNormalization, a sigmoid) *pins* the channels it touches: they stay whole, and
`ChannelGraph.pins` says why. So do the model's inputs and outputs (the classes stay), and
the output channels of producers a trial does not select (`model.prune.include/exclude`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy.cluster.hierarchy import DisjointSet

Shape = tuple[int | None, ...]

PRODUCERS = {"Conv2D", "Dense"}
CARRIERS = {"BatchNormalization", "DepthwiseConv2D"}  # channel i in, channel i out, with weights
SAME = {  # channel i in, channel i out, no weights, zero stays zero
    "Dropout", "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "ZeroPadding2D", "Cropping2D",
    "UpSampling2D", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "Identity", "ReLU", "LeakyReLU", "ELU", "Activation", "Link",
}
TIES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}  # channel i of every input
ZERO_KEEPING = {  # activations with f(0) = 0
    "linear", "relu", "relu6", "elu", "selu", "tanh", "swish", "silu", "gelu", "leaky_relu", "softsign",
}
CHANNELS_LAST = {None, "channels_last"}


@dataclass(frozen=True)
class Call:
    """One call of a layer in a model's graph.

    `cls`: the tf_keras class name, or the qualified name of any other class (a custom
    layer); "Link" joins a nested model's output to the outer tensor, "LinkIn" the outer
    tensors to its inputs, whose widths stay (`sweep.modeling.channel_surgery` clones a
    nested model on its old input shapes). `inputs` and `outputs` name tensors of
    `ModelGraph.shapes`; `weights` are the layer's weights' short names and shapes, in
    `layer.weights` order."""

    layer: str
    cls: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    config: Mapping[str, Any] = field(default_factory=dict)
    weights: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelGraph:
    """A model as plain records: its calls in graph order, every tensor's shape (batch axis
    first), and which tensors are the model's inputs and outputs."""

    calls: Sequence[Call]
    shapes: Mapping[str, Shape]
    inputs: Sequence[str]
    outputs: Sequence[str]


@dataclass(frozen=True)
class Member:
    """One index of one weight that a channel owns: `layer`'s weight `weight`, index `index`
    along `axis` (counted from 0)."""

    layer: str
    weight: str
    axis: int
    index: int


@dataclass(frozen=True)
class Group:
    """Channels pruned together to one fraction: per channel, the weight slices it owns.
    Named after its first producer in graph order."""

    name: str
    producers: tuple[str, ...]
    channels: tuple[tuple[Member, ...], ...]

    def __len__(self) -> int:
        return len(self.channels)


Keep = Mapping[str, Collection[int]]  # group name -> the channel indices kept


class ChannelGraph:
    """The prunable channel groups of a model, and what each kept set of channels leaves of
    every layer's weights.

    >>> graph = ChannelGraph.build(ModelGraph(
    ...     calls=[Call("dense", "Dense", ("x",), ("h",), {"units": 4}, {"kernel": (3, 4), "bias": (4,)}),
    ...            Call("logits", "Dense", ("h",), ("y",), {"units": 2}, {"kernel": (4, 2), "bias": (2,)})],
    ...     shapes={"x": (None, 3), "h": (None, 4), "y": (None, 2)}, inputs=["x"], outputs=["y"]))
    >>> [(g.name, len(g)) for g in graph.groups]
    [('dense', 4)]
    >>> graph.slices({"dense": [0, 2]})["logits"]["kernel"]
    ([0, 2], [0, 1])
    """

    def __init__(self, model: ModelGraph, groups: list[Group], pins: list[str]) -> None:
        self.model = model
        self.groups = groups
        self.pins = pins  # why channels stay whole, one line per pinning layer
        self._owners = {(m.layer, m.weight, m.axis, m.index): (group.name, index)
                        for group in groups for index, channel in enumerate(group.channels) for m in channel}

    @classmethod
    def build(cls, model: ModelGraph, selected: Collection[str] | None = None) -> ChannelGraph:
        """The groups of `model` whose producers are all in `selected` (default: every
        producer)."""
        slots = _Slots(model.shapes)
        followed: dict[Member, tuple[str, int]] = {}  # each weight index, with a slot it follows
        for call in model.calls:
            why = _rule(call, model.shapes)
            if why:
                slots.pin(call.inputs + call.outputs, f"{call.layer} ({call.cls}): {why}")
                continue
            for member, slot in _tie(call, slots, model.shapes):
                # a layer called twice follows the same channel in both calls
                slots.merge(followed.setdefault(member, slot), slot)
            if call.cls in PRODUCERS:
                if selected is not None and call.layer not in selected:
                    slots.pin(call.outputs, f"{call.layer}: not selected by model.prune")
                elif _activation(call.config) not in ZERO_KEEPING:
                    slots.pin(call.outputs, f"{call.layer}: its activation {_activation(call.config)!r} "
                                            f"mixes or moves its output channels")
        slots.pin(tuple(model.inputs), "the model's input")
        slots.pin(tuple(model.outputs), "the model's output")
        return cls(model, _groups(model, slots, followed), slots.reasons)

    def slices(self, keep: Keep) -> dict[str, dict[str, tuple[list[int], ...]]]:
        """For every layer with weights, each weight's kept indices along each of its axes,
        when each group keeps the channels `keep` names (a group it does not name keeps
        all)."""
        kept = {name: set(channels) for name, channels in keep.items()}

        def is_kept(layer: str, weight: str, axis: int, index: int) -> bool:
            owner = self._owners.get((layer, weight, axis, index))
            return owner is None or owner[0] not in kept or owner[1] in kept[owner[0]]

        return {
            call.layer: {
                weight: tuple([i for i in range(size) if is_kept(call.layer, weight, axis, i)]
                              for axis, size in enumerate(shape))
                for weight, shape in call.weights.items()
            }
            for call in self.model.calls if call.weights
        }

    def kept_widths(self, keep: Keep) -> dict[str, int]:
        """Each producer's output channels once `keep` is applied, by layer name."""
        slices = self.slices(keep)
        return {call.layer: len(slices[call.layer]["kernel"][-1])
                for call in self.model.calls if call.cls in PRODUCERS and "kernel" in call.weights}

    def macs(self, keep: Keep | None = None) -> int:
        """Multiply-accumulates of one inference (see `macs`) once `keep` is applied."""
        return macs(self.model, self.slices(keep or {}))


def _groups(model: ModelGraph, slots: _Slots, followed: Mapping[Member, tuple[str, int]]) -> list[Group]:
    """The unpinned components with a producer's output among their members, grouped by the
    weights and axes they touch, in graph order."""
    calls = {call.layer: (order, call) for order, call in reversed(list(enumerate(model.calls)))}

    def is_output(m: Member) -> bool:
        call = calls[m.layer][1]
        return call.cls in PRODUCERS and m.weight == "kernel" and m.axis == len(call.weights["kernel"]) - 1

    components: dict[tuple[str, int], list[Member]] = defaultdict(list)
    for member, slot in followed.items():
        components[slots.root(slot)].append(member)
    pinned = {slots.root(slot) for slot in slots.pinned}
    by_weights: dict[frozenset[tuple[str, str, int]], list[tuple[Member, ...]]] = defaultdict(list)
    for root, members in components.items():
        if root not in pinned and any(is_output(m) for m in members):
            channel = tuple(sorted(members, key=lambda m: (calls[m.layer][0], m.weight, m.axis, m.index)))
            by_weights[frozenset((m.layer, m.weight, m.axis) for m in members)].append(channel)
    groups = []
    for channels in by_weights.values():
        producers = sorted({m.layer for c in channels for m in c if is_output(m)}, key=lambda n: calls[n][0])
        first = [min(m.index for m in c if m.layer == producers[0] and is_output(m)) for c in channels]
        order = sorted(range(len(channels)), key=first.__getitem__)
        groups.append((producers, [channels[i] for i in order], first[order[0]], first[order[-1]] + 1))
    named = Counter(producers[0] for producers, *_ in groups)
    # a producer whose outputs are tied to different layers (part to an Add, part to a
    # Concatenate) has several groups: each is named by its range of the producer's outputs
    return sorted((Group(producers[0] if named[producers[0]] == 1 else f"{producers[0]}[{low}:{high}]",
                         tuple(producers), tuple(channels)) for producers, channels, low, high in groups),
                  key=lambda g: (calls[g.producers[0]][0], g.name))


def macs(model: ModelGraph, slices: Mapping[str, Mapping[str, tuple[list[int], ...]]] | None = None) -> int:
    """Multiply-accumulates of one inference of one example: a Conv2D or DepthwiseConv2D
    call costs its kernel's size per output position, a Dense call its kernel's size per
    position of its input's leading axes; BatchNorm (folded into the conv by the TFLite
    converter), activations, pooling and `Add` count 0. `slices` (from
    `ChannelGraph.slices`) shrinks the kernels."""
    total = 0
    for call in model.calls:
        if call.cls not in {"Conv2D", "DepthwiseConv2D", "Dense"}:
            continue
        kernel_name = "depthwise_kernel" if call.cls == "DepthwiseConv2D" else "kernel"
        shape = call.weights[kernel_name]
        kept = slices[call.layer][kernel_name] if slices and call.layer in slices else [range(n) for n in shape]
        size = math.prod(len(axis) for axis in kept)
        positions = math.prod(n or 1 for n in model.shapes[call.outputs[0]][1:-1])
        total += positions * size
    return total


def layer_widths(model: ModelGraph) -> dict[str, int]:
    """The output channels of every Conv2D, DepthwiseConv2D and Dense layer, by name."""
    return {call.layer: int(model.shapes[call.outputs[0]][-1] or 0) for call in model.calls
            if call.cls in {"Conv2D", "DepthwiseConv2D", "Dense"}}


class _Slots:
    """Union-find over every tensor's channel slots, with the slots pinned and why."""

    def __init__(self, shapes: Mapping[str, Shape]) -> None:
        self.shapes = shapes
        self.sets: DisjointSet = DisjointSet(
            (tensor, i) for tensor, shape in shapes.items() for i in range(_channels(shape)))
        self.pinned: set[tuple[str, int]] = set()
        self.reasons: list[str] = []

    def root(self, slot: tuple[str, int]) -> tuple[str, int]:
        return self.sets[slot]

    def merge(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        self.sets.merge(a, b)

    def pin(self, tensors: Sequence[str], why: str) -> None:
        self.pinned.update((t, i) for t in tensors for i in range(_channels(self.shapes[t])))
        if why not in self.reasons:
            self.reasons.append(why)


def _channels(shape: Shape) -> int:
    return shape[-1] or 0 if len(shape) >= 2 else 0


def _rule(call: Call, shapes: Mapping[str, Shape]) -> str:
    """Why `call` pins its channels, or "" if a rule ties them."""
    config = call.config
    widths = [_channels(shapes[t]) for t in (*call.inputs, *call.outputs)]
    if call.cls == "InputLayer":
        return ""
    if call.cls == "LinkIn":
        return "a nested model's input keeps its width"
    if not all(widths):
        return "a tensor without a static channel axis"
    if config.get("data_format") not in CHANNELS_LAST:
        return "channels_first"
    if call.cls in PRODUCERS:
        if len(call.inputs) != 1 or len(call.outputs) != 1 or "kernel" not in call.weights:
            return "a producer called on several tensors"
        return "a grouped convolution" if int(config.get("groups", 1)) != 1 else ""
    if call.cls == "BatchNormalization":
        axis = config.get("axis", -1)
        axis = axis[0] if isinstance(axis, list | tuple) and len(axis) == 1 else axis
        rank = len(shapes[call.inputs[0]])
        return "" if axis in (-1, rank - 1) else "normalizes along an axis other than the channels"
    if call.cls == "DepthwiseConv2D":
        return "" if int(config.get("depth_multiplier", 1)) == 1 else "depth_multiplier above 1"
    if call.cls in SAME:
        if call.cls == "Activation" and _activation(config) not in ZERO_KEEPING:
            return f"its activation {_activation(config)!r} maps 0 elsewhere"
        if call.cls == "ReLU" and float(config.get("threshold") or 0) != 0:
            return "a ReLU threshold other than 0"
        if (config.get("noise_shape") or [None])[-1] not in (None, 1):
            return "its noise_shape fixes the channel count"
        return "" if len(set(widths)) == 1 else "changes the channel count"
    if call.cls in TIES:
        return "" if len(set(widths)) == 1 else "broadcasts along the channels"
    if call.cls == "Concatenate":
        return "" if _concatenates_channels(call, shapes) or len(set(widths)) == 1 else "joins along another axis"
    if call.cls == "Flatten":
        return "" if all(shapes[call.inputs[0]][1:]) else "flattens a tensor of unknown size"
    return "no channel rule for this layer"


def _activation(config: Mapping[str, Any]) -> str:
    activation = config.get("activation", "linear")
    return activation if isinstance(activation, str) else "a custom activation"


def _concatenates_channels(call: Call, shapes: Mapping[str, Shape]) -> bool:
    axis = int(call.config.get("axis", -1))
    return axis in (-1, len(shapes[call.outputs[0]]) - 1)


def _tie(call: Call, slots: _Slots, shapes: Mapping[str, Shape]) -> list[tuple[Member, tuple[str, int]]]:
    """Merge the slots `call` ties, and return the weight indices that follow each slot."""
    widths = {t: _channels(shapes[t]) for t in (*call.inputs, *call.outputs)}
    if call.cls == "InputLayer":
        return []
    if call.cls in PRODUCERS:
        (source,), (target,) = call.inputs, call.outputs
        rank = len(call.weights["kernel"])
        outputs = [(Member(call.layer, weight, rank - 1 if weight == "kernel" else 0, i), (target, i))
                   for i in range(widths[target]) for weight in call.weights]
        return outputs + [(Member(call.layer, "kernel", rank - 2, i), (source, i)) for i in range(widths[source])]
    if call.cls == "Concatenate" and _concatenates_channels(call, shapes):
        offset = 0
        for source in call.inputs:
            for i in range(widths[source]):
                slots.merge((source, i), (call.outputs[0], offset + i))
            offset += widths[source]
        return []
    if call.cls == "Flatten":
        (source,), (target,) = call.inputs, call.outputs
        for j in range(widths[target]):
            slots.merge((source, j % widths[source]), (target, j))
        return []
    # carriers, same and ties: slot i of every input and output together
    first = (call.inputs or call.outputs)[0]
    for tensor in (*call.inputs, *call.outputs):
        for i in range(widths[first]):
            slots.merge((first, i), (tensor, i))
    axes = {weight: 2 if weight == "depthwise_kernel" else 0 for weight in call.weights}
    return [(Member(call.layer, weight, axis, i), (first, i)) for weight, axis in axes.items()
            for i in range(call.weights[weight][axis])]
