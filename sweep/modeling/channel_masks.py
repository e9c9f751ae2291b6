"""Masking whole channels while a channel trial trains, then removing them.

tfmot masks each weight tensor on its own and cannot tie channels across layers (the
inputs of an `Add`, a conv and its BatchNorm) nor mask a bias or BatchNorm, so channel
trials wrap nothing with tfmot: `ChannelMasks` keeps one mask per weight a group owns
(kernels on both axes, biases, BatchNorm's four vectors, depthwise kernels) and multiplies
it in after every optimizer step, so every forward pass, validation's included, sees the
removed channels as exact zeros.

The steps are tfmot's (the first batch is step 1). At each event of the trial's schedule
(`SchedulePlan.should_prune`), before that batch, each group's count follows the schedule
scaled to its own fraction (`ChannelPlan.dropped_at`). The channels are chosen by
`channel_plan.choose`: those removed before, then the lowest scores. A channel's score
sums, over the kernels, depthwise kernels and BatchNorm scales it owns, the L2 norm of
its slice divided by that weight's mean over the group's channels, so a 1,280-wide
kernel does not outweigh its BatchNorm. No randomness: the same weights give the same
choice, and a rerun the same model.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from sweep._tf import keras, tf
from sweep.config import PruneConfig
from sweep.modeling.channel_graph import describe, short_name
from sweep.modeling.pruning import all_layers, layer_shapes
from sweep.search.channel_groups import ChannelGraph, Keep
from sweep.search.channel_plan import ChannelPlan, choose, plan_channels
from sweep.search.structure import Structure
from sweep.search.trial_plan import SchedulePlan

SCORED = ("kernel", "depthwise_kernel", "gamma")  # biases, shifts and statistics say nothing of importance


def weight_masks(graph: ChannelGraph, keep: Keep, shapes: Mapping[str, Mapping[str, tuple[int, ...]]]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """A 0/1 mask of each weight in `shapes` (by layer, then weight): 0 where a channel
    `keep` leaves out owns it."""
    slices = graph.slices(keep)
    masks: dict[str, dict[str, np.ndarray]] = {}
    for layer, weights in shapes.items():
        for weight, shape in weights.items():
            mask = np.zeros(shape, dtype=np.float32)
            mask[np.ix_(*slices[layer][weight])] = 1
            masks.setdefault(layer, {})[weight] = mask
    return masks


def zero_removed(model: keras.Model, graph: ChannelGraph, keep: Keep) -> None:
    """Set every weight a removed channel owns to 0, in place."""
    variables = _variables(model)
    masks = weight_masks(graph, keep, {layer: {w: tuple(v.shape) for w, v in weights.items()}
                                       for layer, weights in variables.items()})
    for layer, weights in masks.items():
        for weight, mask in weights.items():
            variables[layer][weight].assign(variables[layer][weight] * mask)


def channel_masks(model: keras.Model, rules: PruneConfig, schedule: SchedulePlan, structure: Structure
                  ) -> ChannelMasks:
    """The callback that prunes `model`'s channels for a trial: the groups of the layers
    `model.prune` selects, planned to the trial's `final_sparsity` and `allocation`."""
    kernels = layer_shapes(model, rules)
    graph = ChannelGraph.build(describe(model), selected=kernels)
    plan = plan_channels(graph, kernels, schedule.final_sparsity, structure.allocation)
    return ChannelMasks(model, graph, plan, schedule)


class ChannelMasks(keras.callbacks.Callback):
    """Removes `plan`'s channels from `model` along `schedule`, as zeros; `keep()` says which
    channels remain. Adds `mask_sparsity` (the share of the selected kernels' weights removed
    so far) and `planned_sparsity` (by the end) to each epoch's logs, as `MaskSparsity` does
    for tfmot's masks."""

    def __init__(self, model: keras.Model, graph: ChannelGraph, plan: ChannelPlan, schedule: SchedulePlan) -> None:
        super().__init__()
        self.graph, self.plan, self.schedule = graph, plan, schedule
        self.dropped: dict[str, list[int]] = {group.name: [] for group in graph.groups}
        self.step = 0
        variables = _variables(model)
        owned = sorted({(m.layer, m.weight) for g in graph.groups for channel in g.channels for m in channel})
        self._owned = [(variables[layer][weight], layer, weight) for layer, weight in owned]
        self._masks = [tf.Variable(tf.ones_like(v), trainable=False) for v, _, _ in self._owned]
        self._scored = {group.name: _score_indices(group.channels, variables) for group in graph.groups}

    def keep(self) -> dict[str, list[int]]:
        return {name: sorted(set(range(self.plan.channels[name])) - set(dropped))
                for name, dropped in self.dropped.items()}

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        if self.schedule.should_prune(self.step):
            self._choose()
            self._apply()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._apply()  # the optimizer moved the removed weights: zero them again

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["mask_sparsity"] = self.plan.removed_share({g: len(r) for g, r in self.dropped.items()})
            logs["planned_sparsity"] = self.plan.planned_sparsity

    def _choose(self) -> None:
        for name, dropped in self.dropped.items():
            count = self.plan.dropped_at(name, self.schedule, self.step)
            self.dropped[name] = choose(self._scores(name), count, dropped)
        shapes: dict[str, dict[str, tuple[int, ...]]] = defaultdict(dict)
        for variable, layer, weight in self._owned:
            shapes[layer][weight] = tuple(variable.shape)
        masks = weight_masks(self.graph, self.keep(), shapes)
        for mask, (_, layer, weight) in zip(self._masks, self._owned, strict=True):
            mask.assign(masks[layer][weight])

    def _scores(self, group: str) -> dict[int, float]:
        total = np.zeros(self.plan.channels[group])
        for variable, axis, positions, owners in self._scored[group]:
            values = np.moveaxis(variable.numpy().astype(np.float64), axis, 0)
            squares = (values.reshape(values.shape[0], -1) ** 2).sum(axis=1)[positions]
            norms = np.sqrt(np.bincount(owners, weights=squares, minlength=len(total)))
            if norms.mean() > 0:
                total += norms / norms.mean()
        return dict(enumerate(total.tolist()))

    @tf.function
    def _apply(self) -> None:
        for mask, (variable, _, _) in zip(self._masks, self._owned, strict=True):
            variable.assign(variable * mask)


def _variables(model: keras.Model) -> dict[str, dict[str, tf.Variable]]:
    """Every layer's weights by layer name and short weight name (as `describe` names them)."""
    return {layer.name: {short_name(w): w for w in layer.weights} for layer in all_layers(model)}


def _score_indices(channels: tuple, variables: Mapping[str, Mapping[str, tf.Variable]]
                   ) -> list[tuple[tf.Variable, int, np.ndarray, np.ndarray]]:
    """For each scored weight and axis a group owns: the indices along that axis and the
    channel that owns each."""
    indices: dict[tuple[str, str, int], tuple[list[int], list[int]]] = defaultdict(lambda: ([], []))
    for channel, members in enumerate(channels):
        for m in members:
            if m.weight in SCORED:
                positions, owners = indices[(m.layer, m.weight, m.axis)]
                positions.append(m.index)
                owners.append(channel)
    return [(variables[layer][weight], axis, np.array(positions), np.array(owners))
            for (layer, weight, axis), (positions, owners) in indices.items()]
