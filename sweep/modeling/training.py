"""Training one model: dense (the baseline), pruned with a tfmot schedule, or losing whole
channels along it (`sweep.modeling.channel_masks`; the model it returns is rebuilt without
them).

Each call starts from a clean Keras session and a fixed seed with TensorFlow op
determinism on, so the same seed and parameters reproduce the same weights, and a
long-running worker does not accumulate graphs from earlier trials.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep import interrupts
from sweep._tf import PruneLowMagnitude, disable_op_determinism, keras, tf, tfmot
from sweep.config import PruneConfig, StudyConfig
from sweep.data.splits import Dataset
from sweep.errors import SweepError, brief
from sweep.modeling.channel_masks import ChannelMasks, channel_masks
from sweep.modeling.channel_surgery import removed
from sweep.modeling.models import outputs_probabilities, starting_model
from sweep.modeling.pruning import all_layers, layer_shapes, wrap_for_pruning
from sweep.search.structure import LayerPruning, Structure
from sweep.search.trial_plan import SchedulePlan

_configured = False


class TrainingDiverged(SweepError):
    """Raised when the loss becomes NaN or infinite; the trial fails, the study goes on."""


@dataclass
class TrainedModel:
    model: keras.Model  # pruning stripped: the deployable model
    history: dict[str, list[float]]  # per-epoch loss, accuracy, val_*, mask_sparsity, planned_sparsity
    timings: dict[str, float]  # seconds: build (model, wrapper, compile), train, strip
    layers: dict[str, LayerPruning]  # the layers wrapped for pruning: pattern, target ({} for a dense model)
    channels: dict[str, int] = field(default_factory=dict)  # a channel trial's producers: output channels kept
    dense_sizes: dict[str, int] | None = None  # a channel trial's prunable weights per layer before removal

    @property
    def pruned_layers(self) -> list[str]:
        return list(self.layers)

    @property
    def train_seconds(self) -> float:
        return self.timings["train"]


class MaskSparsity(keras.callbacks.Callback):
    """Adds `mask_sparsity` (zeros / size over all pruning masks) to each epoch's logs, and
    `planned_sparsity`, what it will be once every layer reached its target (`layers`): a
    trial's size is known from its first epoch (`sweep.search.early_stopping`)."""

    def __init__(self, layers: Mapping[str, LayerPruning]) -> None:
        super().__init__()
        self.layers = layers

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        zeros = planned = total = 0.0
        for layer in all_layers(self.model):
            if isinstance(layer, PruneLowMagnitude):
                for _, mask, _ in layer.pruning_vars:
                    values = mask.numpy()
                    layer_zeros = int(values.size - np.count_nonzero(values))
                    zeros += layer_zeros
                    how = self.layers.get(layer.layer.name)  # None: a wrapper sweep did not add
                    planned += how.target * values.size if how is not None else layer_zeros
                    total += values.size
        if logs is not None and total:
            logs["mask_sparsity"] = zeros / total
            logs["planned_sparsity"] = planned / total


class StopOnInterrupt(keras.callbacks.Callback):
    """Ctrl-C/SIGTERM stop training after the current batch (see `sweep.interrupts`)."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        interrupts.stop_if_requested()


def configure_tensorflow(threads: int | None = None, deterministic: bool = True) -> None:
    """Before the first op, once per process: at most `threads` cores, so parallel workers
    on one machine do not oversubscribe it. On every call: op determinism on or off
    (`train.deterministic`; one process may run studies of both kinds). TensorFlow places
    ops on a GPU when it sees one."""
    global _configured
    if not _configured and threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        except RuntimeError:  # TensorFlow already ran ops in this process (used as a library): keep its settings
            pass
    _configured = True
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        disable_op_determinism()


def train(
    dataset: Dataset,
    config: StudyConfig,
    seed: int,
    *,
    plan: SchedulePlan | None = None,
    structure: Structure = Structure(),
    weight_decay: float = 0.0,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    start_weights: Path | None = None,
) -> TrainedModel:
    """Train `config.model` on `dataset`: pruned along `plan` with `structure`, or dense
    without a plan, starting from the weights `sweep.modeling.models.starting_model` gives."""
    configure_tensorflow(deterministic=config.train.deterministic)  # threads: as the caller chose
    started = time.perf_counter()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = starting_model(config.model, dataset.input_shape, dataset.num_classes, start_weights)
    callbacks: list[keras.callbacks.Callback] = [keras.callbacks.TerminateOnNaN(), StopOnInterrupt()]
    if on_epoch is not None:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=on_epoch))
    layers: dict[str, LayerPruning] = {}
    masks: ChannelMasks | None = None
    if plan is not None and structure.pattern == "channels":
        masks = channel_masks(model, config.model.prune, plan, structure)
        layers = masks.plan.layers
        callbacks = [masks, *callbacks]  # first: it zeroes the removed channels before anyone reads the weights
    elif plan is not None:
        model, layers = wrap_for_pruning(model, config.model.prune, plan, structure)
        # UpdatePruningStep first: it re-applies the masks before anyone reads the weights.
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), MaskSparsity(layers), *callbacks]
    model.compile(
        optimizer=_single_device(keras.optimizers.Adam(config.train.learning_rate, weight_decay=weight_decay)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not outputs_probabilities(model)),
        metrics=["accuracy"],
    )
    built = time.perf_counter()
    try:
        history = model.fit(
            **dataset.train.fit_arguments(config.train.batch_size, shuffle_seed=seed),
            epochs=config.train.epochs,
            validation_data=dataset.val.validation_data(config.train.batch_size),
            callbacks=callbacks,
            verbose=0,
        ).history
    except tf.errors.OpError as error:
        if config.train.deterministic and "determinis" in str(error).lower():
            raise SweepError(
                f"an op has no deterministic kernel on this device ({brief(error, 200)}); set "
                f"train.deterministic: false to train with it (reruns then compare within a tolerance)"
            ) from error
        raise
    trained = time.perf_counter()
    losses = history.get("loss", [])
    if len(losses) < config.train.epochs or not all(math.isfinite(v) for v in losses):
        raise TrainingDiverged(
            f"training loss became NaN or infinite in epoch {len(losses)}; "
            f"lower train.learning_rate or the weight_decay range"
        )
    channels: dict[str, int] = {}
    dense_sizes = None
    if masks is not None:
        dense_sizes = {name: sum(math.prod(s) for s in shapes) for name, shapes in layer_shapes(model, PruneConfig()).items()}
        keep = masks.keep()
        channels = masks.graph.kept_widths(keep)
        model = removed(model, masks.graph, keep)
    elif plan is not None:
        model = tfmot.sparsity.keras.strip_pruning(model)
    timings = {"build": built - started, "train": trained - built, "strip": time.perf_counter() - trained}
    return TrainedModel(model, history, timings, layers, channels, dense_sizes)


def _single_device(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` without the cross-replica gradient all-reduce.

    Keras all-reduces gradients through `tf.custom_gradient`, which registers a gradient
    function per trace in TensorFlow's global gradient registry and never removes it; that
    function holds the whole traced training graph. Every trial in a worker would keep its
    graph alive, and memory would grow with every trial (benchmarks/README.md, section 4). sweep
    trains on one device (TensorFlow's default strategy), where the all-reduce is the
    identity, so skipping it changes no number.
    """
    if not tf.distribute.has_strategy():
        optimizer.aggregate_gradients = list
    return optimizer
