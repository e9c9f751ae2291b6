"""The model a study prunes: built by a builder, or a trained model loaded from a file.

A builder is `build(input_shape, num_classes) -> uncompiled tf_keras.Model`.
`mlp` and `cnn` are small defaults sized for digits/MNIST; `model.builder` can name your
own function as "pkg.module:function" or "path/to/file.py:function". Layers get fixed
names, so metrics such as `sparsity/dense1` mean the same layer in every trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from sweep._tf import keras
from sweep.config import BUILTIN_BUILDERS, ModelConfig, SearchConfig
from sweep.errors import SweepError, UsageError, brief
from sweep.user_code import import_target, resolve_function

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


# What `model.builder` may name without a path (config.BUILTIN_BUILDERS): this module's
# functions of those names.
BUILTIN: dict[str, Builder] = {name: globals()[name] for name in BUILTIN_BUILDERS}


def build_model(builder: str, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Call the named builder and check it returned a tf-keras model with one output of
    `num_classes` logits (or probabilities).

    >>> build_model("mlp", (8, 8, 1), 10).output_shape
    (None, 10)
    """
    builder_function = BUILTIN.get(builder) or resolve_function(builder, "model.builder")
    model = builder_function(input_shape, num_classes)
    if not isinstance(model, keras.Model):
        raise UsageError(f"model.builder: {builder} returned {type(model).__name__}{_keras3_hint(model)}; "
                         f"it must return an uncompiled tf_keras.Model")
    _check_output(model, f"model.builder: {builder}'s model", num_classes)
    return model


def load_pretrained(config: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """The trained model `model.pretrained` names, after importing `model.custom_objects`,
    checked to fit the data. Always loaded anew: a trial must not see another's weights."""
    assert config.pretrained is not None
    what = f"model.pretrained: {config.pretrained}"
    if config.custom_objects is not None:
        import_target(config.custom_objects, "model.custom_objects")
    try:
        model = keras.models.load_model(config.pretrained, compile=False)
    except Exception as error:
        # A missing custom class shows as many different errors ("Unknown layer", "The added
        # layer must be an instance of class Layer", ...): name both fixes unless one is ruled out.
        fix = "save it with tf_keras (import tf_keras as keras) as .keras, .h5 or a SavedModel folder"
        if config.custom_objects is None:
            fix = (f"if it has custom layers, name the module that registers them (register_keras_serializable) "
                   f"in model.custom_objects; else {fix}")
        raise UsageError(f"{what}: cannot load it ({brief(error, 160)}); {fix}") from error
    if not isinstance(model, keras.Model):
        raise UsageError(f"{what} is a {type(model).__name__}, not a Keras model{_keras3_hint(model)}; "
                         f"save it with tf_keras model.save()")
    _check_output(model, what, num_classes)
    expected = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    if expected is None or len(expected) != len(input_shape) or any(
        want is not None and want != have for want, have in zip(expected, input_shape, strict=True)
    ):
        inputs = [tuple(i.shape) for i in model.inputs]
        raise UsageError(f"{what} takes inputs of shape {brief(inputs)}, but the data's examples have shape "
                         f"{input_shape}; give data of the shape the model was trained on")
    return model


def starting_model(
    config: ModelConfig, input_shape: tuple[int, ...], num_classes: int, start_weights: Path | None = None
) -> keras.Model:
    """The dense model a trial prunes, or the baseline measures: the pretrained model, or
    the builder's, newly initialised or with the weights `start_weights` holds."""
    if config.pretrained is not None:
        return load_pretrained(config, input_shape, num_classes)
    assert config.builder is not None  # guaranteed by ModelConfig
    model = build_model(config.builder, input_shape, num_classes)
    if start_weights is not None:
        model.load_weights(start_weights)
    return model


def rebuilt_model(
    config: ModelConfig, input_shape: tuple[int, ...], num_classes: int, weights: Path | None,
    channels: Mapping[str, int] | None = None,
) -> keras.Model:
    """A trained model again, from the weights it saved (`save_weights`): the starting
    model, built in a fresh session so its layers get the names the trained model's had,
    narrowed to a channel trial's `channels` (output channels per producer), with
    `weights` loaded (None: a pretrained model as it is)."""
    from sweep.modeling.channel_surgery import narrowed

    keras.backend.clear_session()
    model = starting_model(config, input_shape, num_classes)
    if channels:
        model = narrowed(model, channels)
    if weights is not None:
        model.load_weights(weights)
    return model


def check_model(config: ModelConfig, search: SearchConfig, input_shape: tuple[int, ...], num_classes: int
                ) -> str | None:
    """Build or load the model once before a study writes anything, so a misfit builder or
    file, or a model with nothing to prune (under every searched policy), is a one-line
    `UsageError`. (In a trial, the builder's own exception fails the trial.) Returns what
    channel trials can remove (`check_prunable`)."""
    from sweep.modeling.pruning import check_prunable

    what = f"model.pretrained {config.pretrained}" if config.pretrained else f"model.builder {config.builder}"
    try:
        return check_prunable(starting_model(config, input_shape, num_classes), config.prune, search, what)
    except SweepError:
        raise
    except Exception as error:  # the user's code: any exception is theirs to fix
        if config.pretrained is not None:
            raise UsageError(f"model.pretrained: {config.pretrained} raised {brief(error, 160)} when "
                             f"checked for layers to prune; check the model") from error
        raise UsageError(
            f"model.builder: {config.builder} raised {brief(error, 160)} when called with "
            f"{(input_shape, num_classes)}; fix the builder"
        ) from error


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether `model` ends in a softmax, so its loss must take probabilities, not logits:
    a `Softmax` or `Activation("softmax")` layer, a layer with a softmax activation, or
    `tf.nn.softmax` on the last layer, also at the end of a nested model or inside a
    pruning wrapper. Our builders output logits."""
    layer = _output_layer(model)
    if isinstance(layer, keras.layers.Softmax):
        return True
    function = getattr(layer, "activation", None) or getattr(layer, "function", None)  # TFOpLambda: tf.nn.softmax
    return getattr(function, "__name__", None) in SOFTMAX_NAMES


SOFTMAX_NAMES = ("softmax", "softmax_v2")  # keras.activations.softmax, tf.nn.softmax


def _output_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer that makes the model's (first) output: the last one of a nested model,
    the wrapped one of a pruning wrapper."""
    history = getattr(model.outputs[0], "_keras_history", None) if model.outputs else None
    layer = history.layer if history is not None else model.layers[-1]
    if isinstance(layer, keras.Model):
        return _output_layer(layer)
    return getattr(layer, "layer", layer)


def _keras3_hint(model: object) -> str:
    if type(model).__module__.startswith("keras"):
        return " (a Keras 3 model: build it with `import tf_keras as keras`, tfmot needs Keras 2)"
    return ""


def _check_output(model: keras.Model, what: str, num_classes: int) -> None:
    """Training uses sparse categorical cross-entropy on integer labels: one output of
    shape (batch, num_classes). Too few units fail in training, too many train silently."""
    if not model.outputs:  # only subclassed models lack them, and tfmot cannot prune those
        raise UsageError(
            f"{what} is a subclassed {type(model).__name__} model without defined outputs; "
            f"build a Sequential or functional model (tfmot prunes only those)"
        )
    if len(model.outputs) != 1:
        raise UsageError(
            f"{what} has {len(model.outputs)} outputs; sweep trains a classifier with one output "
            f"of {num_classes} logits"
        )
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[-1] != num_classes:
        raise UsageError(
            f"{what} has outputs of shape {shape}, but the dataset's {num_classes} classes need "
            f"(batch, {num_classes}); end the model with Dense(num_classes)"
        )
