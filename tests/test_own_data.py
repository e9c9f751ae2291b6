"""Your own data: a loader returning arrays or tf.data datasets (also of unknown length),
an image folder, and the bad inputs each gives one line for, before anything is written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from sweep.config import parse_study_config
from sweep.data import load_dataset
from sweep.errors import UsageError

pytestmark = pytest.mark.integration  # TensorFlow in this process

DIGITS_LOADER = '''
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

digits = load_digits()
x = digits.images[..., None].astype("float32") / 16
y = digits.target


def generator():
    """Unknown length: sweep must count it."""
    def examples():
        for i in range(1500):
            yield x[i], y[i]
    spec = (tf.TensorSpec((8, 8, 1), tf.float32), tf.TensorSpec((), tf.int64))
    train = tf.data.Dataset.from_generator(examples, output_signature=spec)
    return {"train": train, "test": tf.data.Dataset.from_tensor_slices((x[1500:], y[1500:]))}


def arrays():
    return {"train": (x[:1500], y[:1500]), "test": (x[1500:], y[1500:])}
'''


def study(folder: Path, data: dict, **sections: object):  # type: ignore[no-untyped-def]
    (folder / "data.py").write_text(DIGITS_LOADER)
    raw = {"name": "own", "data": data, "model": {"builder": "mlp"}, "train": {"epochs": 2, "batch_size": 64}}
    raw.update(sections)
    return parse_study_config(raw, base_dir=folder)


def test_a_generator_of_unknown_length_is_counted_and_the_schedule_reaches_its_end(tmp_path: Path) -> None:
    import optuna

    from sweep._tf import tf
    from sweep.measure import sparsity
    from sweep.schedule_plan import plan_schedule
    from sweep.space import suggest_params
    from sweep.training import train

    config = study(tmp_path, {"loader": "data.py:generator"}, train={"epochs": 2, "batch_size": 60},
                   search={"schedule": "polynomial", "final_sparsity": 0.8, "initial_sparsity": 0.0,
                           "begin_step": 0.0, "end_step": 1.0, "frequency": 5, "power": 3.0, "weight_decay": 0.0})
    dataset = load_dataset(config.data)
    assert dataset.train.stream.cardinality() == tf.data.UNKNOWN_CARDINALITY
    assert (dataset.train.size, dataset.val.size, dataset.test.size) == (1200, 300, 297)
    assert dataset.num_classes == 10 and dataset.input_shape == (8, 8, 1)
    steps = dataset.total_steps(config.train)
    assert steps == 2 * math.ceil(1200 / 60)
    params = suggest_params(optuna.create_study().ask(), config.search)  # every value is fixed
    plan = plan_schedule(params, steps)
    assert plan.end_step == steps
    trained = train(dataset, config, 0, plan=plan)
    # a polynomial schedule reaches its final sparsity only at its end step
    assert sparsity(trained.model)["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert trained.history["val_accuracy"][-1] > 0.25  # learning (chance: 0.1): labels match their images


def test_a_stream_is_split_like_arrays_are_and_the_same_every_time(tmp_path: Path) -> None:
    streamed = load_dataset(study(tmp_path, {"loader": "data.py:generator"}).data)
    load_dataset.cache_clear()
    again = load_dataset(study(tmp_path, {"loader": "data.py:generator"}).data)
    in_memory = load_dataset(study(tmp_path, {"loader": "data.py:arrays"}).data)
    assert streamed.fingerprint == again.fingerprint != in_memory.fingerprint
    def rows(split) -> np.ndarray:  # type: ignore[no-untyped-def]  # its examples, in a fixed order
        flat = np.concatenate([np.concatenate([x.reshape(len(x), -1), y[:, None]], 1) for x, y in split.batches(100)])
        return flat[np.lexsort(flat.T[::-1])]

    np.testing.assert_array_equal(rows(streamed.val), rows(in_memory.val))  # the same examples held out
    assert streamed.train.size == in_memory.train.size == 1200


def test_an_image_folder_of_class_folders(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    from sweep._tf import tf
    from sweep.training import train

    digits = load_digits()
    for index in range(300):
        folder = tmp_path / "images" / f"digit_{digits.target[index]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (digits.images[index] * 15).astype(np.uint8)[..., None]
        (folder / f"{index:04d}.png").write_bytes(tf.io.encode_png(pixels).numpy())
    config = parse_study_config({"name": "folder", "model": {"builder": "mlp"}, "train": {"epochs": 1},
                                 "data": {"dataset": "directory", "path": "images", "image_size": [8, 8],
                                          "color_mode": "grayscale"}}, base_dir=tmp_path)
    dataset = load_dataset(config.data)
    assert dataset.num_classes == 10 and dataset.input_shape == (8, 8, 1)
    assert (dataset.test.size, dataset.val.size, dataset.train.size) == (60, 48, 192)
    x, y = next(dataset.test.batches(60))
    assert x.max() > 200 and y.dtype.kind == "i"  # pixel values as read: the model rescales
    assert train(dataset, config, 0).history["accuracy"]


def loader_file(folder: Path, body: str) -> str:
    (folder / "bad.py").write_text("import numpy as np\nimport tensorflow as tf\n\n\ndef load():\n" + body)
    return "bad.py:load"


X = "np.zeros((40, 8, 8, 1), 'float32')"
CASES = [
    ("loader raises", "    raise OSError('bucket gone')\n", {},
     "data.loader: {folder}/bad.py:load raised OSError('bucket gone'); fix the loader"),
    ("wrong keys", f"    return {{'training': ({X}, np.zeros(40, int))}}\n", {},
     "returned keys ['training']; return a dict with 'train' and 'test' (and optionally 'validation')"),
    ("x and y differ", f"    return {{'train': ({X}, np.zeros(39, int)), 'test': ({X}, np.zeros(40, int))}}\n", {},
     "data.loader: train x and y differ in length (40 vs 39)"),
    ("label out of range", f"    return {{'train': ({X}, np.arange(40) % 12), 'test': ({X}, np.zeros(40, int))}}\n",
     {"num_classes": 10}, "data: train has label 11, out of range for num_classes: 10"),
    ("batched stream", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.zeros(40, int))).batch(8)\n"
                        "    return {'train': d, 'test': d}\n"), {},
     "data.loader: train labels have shape (8,); give one integer label per example (is the dataset batched?"),
    ("no (x, y) pairs", f"    d = tf.data.Dataset.from_tensor_slices({X})\n    return {{'train': d, 'test': d}}\n", {},
     "data.loader: train yields TensorSpec("),
    ("shuffled in the loader", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.arange(40) % 3))\n"
                                "    return {'train': d.shuffle(40, seed=1), 'test': d}\n"), {},
     "data.loader: the training data comes in a different order on each pass (shuffled in the loader?)"),
    ("repeats forever", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.zeros(40, int)))\n"
                         "    return {'train': d.repeat(), 'test': d}\n"), {},
     "data.loader: train repeats forever; remove .repeat()"),
    ("ragged arrays", "    return {'train': ([np.zeros(3), np.zeros(4)], [0, 1]), 'test': ([np.zeros(3)], [0])}\n", {},
     "data.loader: train is not a pair of arrays ("),
]


@pytest.mark.parametrize(("body", "data", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_bad_loader_is_one_line_before_any_write(tmp_path: Path, body: str, data: dict, message: str) -> None:
    from sweep.runner import RunRequest, run_study

    config = parse_study_config({"name": "bad", "model": {"builder": "mlp"},
                                 "data": {"loader": loader_file(tmp_path, body), **data}}, base_dir=tmp_path)
    with pytest.raises(UsageError) as caught:
        run_study(RunRequest(config, f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db"))
    text = str(caught.value)
    assert message.format(folder=tmp_path) in text and "\n" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]  # nothing written


def test_a_pretrained_model_with_nothing_to_prune_is_refused_before_any_write(tmp_path: Path) -> None:
    from sweep._tf import keras
    from sweep.runner import RunRequest, run_study

    keras.Sequential([keras.Input((10,)), keras.layers.Rescaling(2.0)]).save(tmp_path / "model.keras")
    loader = loader_file(tmp_path, "    x = np.eye(10, dtype='float32')\n    return {'train': (x, np.arange(10)), "
                                   "'test': (x, np.arange(10))}\n")
    config = parse_study_config({"name": "bad", "model": {"pretrained": "model.keras"},
                                 "data": {"loader": loader, "validation_split": 0.3}}, base_dir=tmp_path)
    with pytest.raises(UsageError, match="model: no layer of model.pretrained .* can be pruned: it has no layer tfmot"):
        run_study(RunRequest(config, f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py", "model.keras"]


@pytest.mark.parametrize(("model", "message"), [
    ({"builder": "mlp", "pretrained": "model.keras"}, "model.builder: give either builder or pretrained, not both"),
    ({"pretrained": "missing.keras"}, "model.pretrained: no such file or SavedModel folder:"),
    ({"pretrained": "model.keras", "start": "scratch"}, "model.start: a pretrained model always starts from its own"),
    ({"builder": "mlp", "custom_objects": "custom.py"}, "model.custom_objects: only used with pretrained"),
    ({"builder": None}, "model.builder: give a builder (mlp, cnn, 'file.py:function') or a pretrained model file"),
])
def test_model_keys_that_cannot_stand_together(tmp_path: Path, model: dict, message: str) -> None:
    from sweep.errors import ConfigError

    (tmp_path / "model.keras").write_bytes(b"")
    (tmp_path / "custom.py").write_text("")
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_study_config({"name": "x", "model": model}, base_dir=tmp_path)


def test_image_folder_keys_belong_to_image_folders() -> None:
    from sweep.errors import ConfigError

    with pytest.raises(ConfigError, match="data.color_mode: only used with dataset 'directory', not 'digits'"):
        parse_study_config({"name": "x", "data": {"color_mode": "grayscale"}})
