"""Layer-by-layer pruning: models with layers tfmot cannot wrap, nested models, and
include/exclude, with real (short) training on digits."""

from __future__ import annotations

import numpy as np
import pytest

from sweep._tf import PruneLowMagnitude, keras, tfmot
from sweep.config import PruneConfig, SearchConfig, parse_study_config
from sweep.data.datasets import load_dataset
from sweep.errors import UsageError
from sweep.modeling.measure import measure
from sweep.modeling.metrics import ALL_GROUPS
from sweep.modeling.pruning import check_prunable, layer_shapes, wrap_for_pruning
from sweep.modeling.schedules import build_schedule
from sweep.modeling.training import train
from sweep.search.structure import Structure
from sweep.search.trial_plan import SchedulePlan

pytestmark = pytest.mark.integration  # TensorFlow in this process

BUILDERS = '''
import tf_keras as keras


def with_preprocessing(input_shape, num_classes):
    """Rescaling and BatchNorm (tfmot cannot wrap them) and a nested Sequential block."""
    block = keras.Sequential([keras.layers.Conv2D(8, 3, padding="same", name="inner_conv"),
                              keras.layers.BatchNormalization(name="inner_bn")], name="block")
    inputs = keras.Input(input_shape)
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = block(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, name="logits")(x))


def odd_channels(input_shape, num_classes):
    """No kernel has input channels a multiple of 4: conv1 takes 1, conv2 and logits 6."""
    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(6, 3, name="conv1"),
                             keras.layers.Conv2D(6, 3, name="conv2"), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(num_classes, name="logits")])


def reshaped_head(input_shape, num_classes):
    """Every channel of conv1 feeds a Reshape: none can be removed."""
    return keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(4, 3, name="conv1"),
                             keras.layers.Reshape((-1,), name="head_reshape"),
                             keras.layers.Dense(num_classes, name="logits")])


def nothing_to_prune(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Rescaling(1.0), keras.layers.Flatten(),
                             keras.layers.Lambda(lambda x: x[:, :num_classes])])
'''


@pytest.fixture
def builders(tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = tmp_path / "builders.py"
    path.write_text(BUILDERS)
    return str(path)


def plan(total_steps: int, sparsity: float = 0.5) -> SchedulePlan:
    return SchedulePlan(family="constant", total_steps=total_steps, begin_step=0, end_step=total_steps - 1,
                        frequency=1, final_sparsity=sparsity)


def study(builder: str, epochs: int = 2, **prune: str) -> object:
    return parse_study_config({"name": "p", "model": {"builder": builder, "prune": prune},
                               "train": {"epochs": epochs, "batch_size": 64}})


def test_a_model_with_layers_tfmot_cannot_wrap_is_pruned_where_it_can_be(builders: str) -> None:
    config = study(f"{builders}:with_preprocessing")
    data = load_dataset(config.data)
    steps = data.total_steps(config.train)
    trained = train(data, config, seed=1, plan=plan(steps))
    assert trained.pruned_layers == ["inner_conv", "hidden", "logits"]
    names = [layer.name for layer in trained.model.layers]
    assert "rescale" in names and not any(isinstance(layer, PruneLowMagnitude) for layer in trained.model.layers)
    metrics = measure(trained.model, data, ALL_GROUPS)
    for layer in ("inner_conv", "hidden", "logits"):  # the nested conv is pruned too
        assert metrics[f"sparsity/{layer}"] == pytest.approx(0.5, abs=0.01)
    assert metrics["val_accuracy"] > 0.5
    exported = keras.models.clone_model(trained.model)  # plain tf_keras, no tfmot scope needed
    assert isinstance(exported.get_layer("rescale"), keras.layers.Rescaling)


def test_include_and_exclude_narrow_the_pruned_layers(builders: str) -> None:
    from sweep.modeling.models import build_model

    built = build_model(f"{builders}:with_preprocessing", (8, 8, 1), 10)
    assert list(layer_shapes(built, PruneConfig(include="^(hidden|logits)$"))) == ["hidden", "logits"]
    assert list(layer_shapes(built, PruneConfig(exclude="logits"))) == ["inner_conv", "hidden"]
    wrapped, layers = wrap_for_pruning(built, PruneConfig(exclude="conv"), plan(10), Structure())
    assert list(layers) == list(layer_shapes(built, PruneConfig(exclude="conv")))
    inner = wrapped.get_layer("block")
    assert not any(isinstance(layer, PruneLowMagnitude) for layer in inner.layers)
    assert isinstance(wrapped.get_layer("prune_low_magnitude_hidden"), PruneLowMagnitude)


def test_a_model_with_nothing_to_prune_is_bad_input(builders: str) -> None:
    from sweep.config import ModelConfig
    from sweep.modeling.models import build_model, check_model

    with pytest.raises(UsageError, match="no layer of model.builder .* can be pruned: it has no layer tfmot can prune"):
        check_model(ModelConfig(builder=f"{builders}:nothing_to_prune"), SearchConfig(), (8, 8, 1), 10)
    with pytest.raises(UsageError, match="model.prune.include/exclude leave none of its prunable layers"):
        check_prunable(build_model("mlp", (8, 8, 1), 10), PruneConfig(include="^nothing$"), SearchConfig(),
                       "model.builder mlp")


@pytest.mark.parametrize("builder", ["mlp", "cnn"])
def test_layer_by_layer_wrapping_trains_exactly_like_tfmot_whole_model_wrapping(
    builder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Studies and reruns made before layer-by-layer wrapping replay bit for bit."""
    import sweep.modeling.training

    config = study(builder, epochs=1)
    data = load_dataset(config.data)
    steps = data.steps_per_epoch(config.train.batch_size)
    ours = train(data, config, seed=3, plan=plan(steps, 0.7))
    monkeypatch.setattr(sweep.modeling.training, "wrap_for_pruning",
                        lambda model, rules, plan, structure: (tfmot.sparsity.keras.prune_low_magnitude(
                            model, pruning_schedule=build_schedule(plan)), ours.layers))
    whole = train(data, config, seed=3, plan=plan(steps, 0.7))
    for mine, theirs in zip(ours.model.get_weights(), whole.model.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)


REFUSED = 'search.pattern: "{pattern}" fits no layer that model.builder {builders}:odd_channels prunes: it needs '
M_OF_N = "a Dense or Conv2D kernel whose input channels are a multiple of 4 (conv1 1, conv2 6, logits 6)"
FIX = "; remove it from search.pattern, or prune layers it fits"


@pytest.mark.parametrize(("pattern", "prune", "message"), [
    ("2:4", {}, REFUSED + M_OF_N + FIX),
    (["unstructured", "2:4"], {}, REFUSED + M_OF_N + FIX),
    ("4x1", {}, REFUSED + ("a Dense kernel whose inputs are a multiple of 4 and outputs a multiple of 1 "
                           "(conv1 (3, 3, 1, 6), conv2 (3, 3, 6, 6), logits (6, 10))") + FIX),
    ("2:4", {"exclude": "conv2|logits"}, REFUSED + "a Dense or Conv2D kernel whose input channels are a multiple "
                                         "of 4 (conv1 1)" + FIX),
], ids=["M:N", "M:N among others", "block", "the layers it fits excluded"])
def test_a_pattern_that_fits_no_pruned_layer_is_refused_before_any_write(
    builders: str, tmp_path, pattern: object, prune: dict, message: str  # type: ignore[no-untyped-def]
) -> None:
    """Every trial with it would be unstructured while its params say otherwise."""
    from sweep.study.runner import RunRequest, run_study

    config = parse_study_config({"name": "odd", "model": {"builder": f"{builders}:odd_channels", "prune": prune},
                                 "search": {"pattern": pattern}, "n_trials": 1, "train": {"epochs": 1}},  # short if not refused
                                base_dir=tmp_path)
    with pytest.raises(UsageError) as caught:
        run_study(RunRequest(config, f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db"))
    expected = message.format(builders=builders, pattern=pattern if isinstance(pattern, str) else "2:4")
    assert str(caught.value) == expected, str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builders.py"]  # nothing written


def test_channels_with_no_channel_to_remove_or_one_group_per_layer_are_refused_with_the_pins(builders: str) -> None:
    from sweep.config import ModelConfig
    from sweep.modeling.models import check_model

    with pytest.raises(UsageError) as caught:
        check_model(ModelConfig(builder=f"{builders}:reshaped_head"), SearchConfig.model_validate(
            {"pattern": ["unstructured", "channels"]}), (8, 8, 1), 10)
    assert str(caught.value) == (
        f'search.pattern: "channels" finds no channel of model.builder {builders}:reshaped_head that can be '
        f"removed (head_reshape (Reshape): no channel rule for this layer; the model's input; the model's "
        f"output); remove channels from search.pattern")
    with pytest.raises(UsageError, match=r"search.per_layer: model.builder mlp has one channel group \(dense1\)"):
        check_model(ModelConfig(builder="mlp", prune=PruneConfig(exclude="dense2")), SearchConfig.model_validate(
            {"pattern": "channels", "per_layer": True}), (8, 8, 1), 10)
    assert check_model(ModelConfig(builder=f"{builders}:odd_channels"), SearchConfig.model_validate(
        {"pattern": "channels", "per_layer": True}), (8, 8, 1), 10) == (
            "channels: up to 10 of 12 channels in 2 groups can be removed (one of each group stays)")


def test_a_pattern_that_fits_some_pruned_layer_is_accepted(builders: str) -> None:
    from sweep.config import ModelConfig
    from sweep.modeling.models import check_model

    # 2x2 blocks tile logits (6, 10) only; 2:4 fits every layer of mlp
    check_model(ModelConfig(builder=f"{builders}:odd_channels"), SearchConfig.model_validate({"pattern": "2x2"}),
                (8, 8, 1), 10)
    check_model(ModelConfig(builder="mlp"), SearchConfig.model_validate({"pattern": ["unstructured", "2:4"]}),
                (8, 8, 1), 10)
