"""Model builders: `build(input_shape, num_classes) -> uncompiled tf_keras.Model`.

`mlp` and `cnn` are small defaults sized for digits/MNIST; `model.builder` can name your
own function as "pkg.module:function" or "path/to/file.py:function". Layers get fixed
names, so metrics such as `sparsity/dense1` mean the same layer in every trial.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

from sweep._tf import keras
from sweep.config import PruneConfig
from sweep.errors import SweepError, UsageError, brief

Builder = Callable[[tuple[int, ...], int], "keras.Model"]


def mlp(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Two hidden dense layers: the classic pruning tutorial model."""
    return keras.Sequential(
        [
            keras.layers.Input(input_shape, name="input"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense1"),
            keras.layers.Dense(64, activation="relu", name="dense2"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="mlp",
    )


def cnn(input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Two 3x3 convolutions, one pooling, a dense head."""
    if len(input_shape) != 3:
        raise UsageError(
            f"model.builder: cnn needs image input (height, width, channels), got shape "
            f"{input_shape}; use builder: mlp"
        )
    return keras.Sequential(
        [
            keras.layers.Input(input_shape, name="input"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(64, activation="relu", name="dense1"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="cnn",
    )


BUILTIN: dict[str, Builder] = {"mlp": mlp, "cnn": cnn}


def build_model(builder: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Call the named builder and check it returned a tf-keras model with one output of
    `num_classes` logits (or probabilities).

    >>> build_model("mlp", (8, 8, 1), 10).output_shape
    (None, 10)
    """
    model = resolve_builder(builder)(input_shape, num_classes)
    _check_is_tf_keras(model, builder)
    _check_output(model, builder, num_classes)
    return model


def check_builder(builder: str, input_shape: tuple[int, ...], num_classes: int, rules: PruneConfig) -> None:
    """Build the model once before a study writes anything, so a misfit builder, or one
    with nothing to prune, is a one-line `UsageError`. (In a trial, the builder's own
    exception fails the trial.)"""
    from sweep.pruning import check_prunable

    try:
        check_prunable(build_model(builder, input_shape, num_classes), rules, f"model.builder {builder}")
    except SweepError:
        raise
    except Exception as error:  # the user's code: any exception is theirs to fix
        raise UsageError(
            f"model.builder: {builder} raised {brief(error, 160)} when called with "
            f"{(input_shape, num_classes)}; fix the builder"
        ) from error


def _check_is_tf_keras(model: object, builder: str) -> None:
    if not isinstance(model, keras.Model):
        hint = (
            " (a Keras 3 model: build it with `import tf_keras as keras`, tfmot needs Keras 2)"
            if type(model).__module__.startswith("keras")
            else ""
        )
        raise UsageError(
            f"model.builder: {builder} returned {type(model).__name__}{hint}; "
            f"it must return an uncompiled tf_keras.Model"
        )


def _check_output(model: keras.Model, builder: str, num_classes: int) -> None:
    """Training uses sparse categorical cross-entropy on integer labels: one output of
    shape (batch, num_classes). Too few units fail in training, too many train silently."""
    if not model.outputs:  # only subclassed models lack them, and tfmot cannot prune those
        raise UsageError(
            f"model.builder: {builder} returned a subclassed {type(model).__name__} model "
            f"without defined outputs; build a Sequential or functional model "
            f"(tfmot prunes only those)"
        )
    if len(model.outputs) != 1:
        raise UsageError(
            f"model.builder: {builder} returned a model with {len(model.outputs)} outputs; sweep "
            f"trains a classifier with one output of {num_classes} logits"
        )
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] != num_classes:
        raise UsageError(
            f"model.builder: {builder} returns outputs of shape {shape}, but the dataset's "
            f"{num_classes} classes need (batch, {num_classes}); "
            f"end the model with Dense(num_classes)"
        )


def resolve_builder(builder: str) -> Builder:
    if builder in BUILTIN:
        return BUILTIN[builder]
    target, _, name = builder.rpartition(":")
    try:
        if target.endswith(".py"):
            module_name = f"sweep_user_builder_{abs(hash(target))}"
            module = sys.modules.get(module_name)
            if module is None:
                spec = importlib.util.spec_from_file_location(module_name, Path(target))
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                sys.modules[module_name] = module
        else:
            module = importlib.import_module(target)
    except Exception as error:
        raise UsageError(f"model.builder: importing {target} failed: {error!r}") from error
    function = getattr(module, name, None)
    if not callable(function):
        raise UsageError(f"model.builder: {target} has no function {name!r}")
    return function
