"""Your own data: a loader returning arrays or tf.data datasets (also of unknown length),
an image folder, and the bad inputs each gives one line for, before anything is written."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from sweep.config import parse_study_config
from sweep.data.datasets import load_dataset
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
    from sweep.modeling.measure import sparsity
    from sweep.modeling.training import train
    from sweep.search.space import suggest_params
    from sweep.search.trial_plan import plan_schedule

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
    from sweep.modeling.training import train

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
    ("batched stream", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.arange(40) % 2)).batch(16)\n"
                        "    return {'train': d, 'test': d}\n"), {},
     ("data.loader: train is batched (examples of shape (None, 8, 8, 1), labels (None,)); give unbatched (x, y) "
     "pairs: call .unbatch() on it (sweep batches by train.batch_size)")),
    ("batched generator of unknown shapes", (
        "    def batches():\n"
        "        for n in (16, 16, 8):\n"
        "            yield np.zeros((n, 8, 8, 1), 'float32'), np.arange(n) % 2\n"
        "    spec = (tf.TensorSpec(None, tf.float32), tf.TensorSpec(None, tf.int64))\n"
        "    d = tf.data.Dataset.from_generator(batches, output_signature=spec)\n"
        "    return {'train': d, 'test': d}\n"), {},
     ("data.loader: reading train failed (Cannot batch tensors with different shapes in component 0. First element "
     "had shape [16,8,8,1] and element 2 had shape [8,8,8,1].); it looks batched: call .unbatch() on it")),
    ("generator raises", (
        "    def examples():\n"
        "        yield np.zeros((8, 8, 1), 'float32'), 1\n"
        "        raise ValueError('row 3 is broken')\n"
        "    spec = (tf.TensorSpec((8, 8, 1), tf.float32), tf.TensorSpec((), tf.int64))\n"
        "    d = tf.data.Dataset.from_generator(examples, output_signature=spec)\n"
        "    return {'train': d, 'test': d}\n"), {},
     "data.loader: reading train failed (ValueError: row 3 is broken); fix the dataset"),
    ("one-hot arrays", f"    return {{'train': ({X}, np.eye(4)[np.arange(40) % 4]), 'test': ({X}, np.arange(40) % 4)}}\n",
     {}, "data: train y labels look one-hot (shape (40, 4)); pass integer labels: y.argmax(axis=1)"),
    ("one-hot stream", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.eye(4, dtype='float32')[np.arange(40) % 4]))\n"
                        "    return {'train': d, 'test': d}\n"), {},
     ("data.loader: train labels look one-hot (shape (4,) per example); pass integer labels: "
     "train.map(lambda x, y: (x, tf.argmax(y)))")),
    ("one class", f"    return {{'train': ({X}, np.zeros(40, int)), 'test': ({X}, np.zeros(40, int))}}\n", {},
     "data: train has one class (label 0); a classifier needs two or more: add examples of another class"),
    ("one class stream", (f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.full(40, 3)))\n"
                          "    return {'train': d, 'test': d}\n"), {"num_classes": 5},
     "data: train has one class (label 3); a classifier needs two or more: add examples of another class"),
    ("validation labels training never has",
     f"    return {{'train': ({X}, np.arange(40) % 2), 'validation': ({X}, np.arange(40) % 3), 'test': ({X}, np.arange(40) % 2)}}\n",
     {}, "data: validation has label 2 that train never has; add training examples of it, or remove it from validation"),
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
    from sweep.study.runner import RunRequest, run_study

    config = parse_study_config({"name": "bad", "model": {"builder": "mlp"}, "n_trials": 1, "train": {"epochs": 1},
                                 "data": {"loader": loader_file(tmp_path, body), **data}}, base_dir=tmp_path)
    with pytest.raises(UsageError) as caught:
        run_study(RunRequest(config, f"sqlite:///{tmp_path}/sweep.db", f"sqlite:///{tmp_path}/mlflow.db"))
    text = str(caught.value)
    assert message.format(folder=tmp_path) in text and "\n" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py"]  # nothing written


def test_a_pretrained_model_with_nothing_to_prune_is_refused_before_any_write(tmp_path: Path) -> None:
    from sweep._tf import keras
    from sweep.study.runner import RunRequest, run_study

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


# --- image folders that cannot be a data set: the file and TensorFlow's reason, in one line ---


def write_images(folder: Path, counts: dict[str, int]) -> None:
    """`counts[name]` real 8x8 grey PNGs in each class folder `name` (an empty folder for 0)."""
    from sweep._tf import tf

    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (8, 8, 1), dtype=np.uint8)
            (folder / name / f"{index:03d}.png").write_bytes(tf.io.encode_png(pixels).numpy())


def truncated_png(images: Path) -> None:
    whole = (images / "a" / "005.png").read_bytes()
    (images / "a" / "005.png").write_bytes(whole[: len(whole) // 2])


def text_as_jpg(images: Path) -> None:
    (images / "b" / "notes.jpg").write_text("not an image, whatever its name says\n")


def one_class_folder(images: Path) -> None:
    for path in (images / "b").iterdir():
        path.unlink()
    (images / "b").rmdir()


FOLDER_DATA = {"dataset": "directory", "path": "images", "image_size": [8, 8], "color_mode": "grayscale"}
BAD_FOLDERS = [
    ("truncated png", truncated_png, "data.path: cannot decode {folder}/images/a/005.png (Invalid PNG data, size "),
    ("text saved as jpg", text_as_jpg, ("data.path: cannot decode {folder}/images/b/notes.jpg (Unknown image file "
                                       "format. One of JPEG, ")),
    ("one class folder", one_class_folder, ("data.path: {folder}/images has one class folder (a); a classifier needs "
                                           "two or more: add a folder of images per class")),
]


@pytest.mark.parametrize(("spoil", "message"), [c[1:] for c in BAD_FOLDERS], ids=[c[0] for c in BAD_FOLDERS])
def test_a_bad_image_folder_is_one_line_exit_2_before_any_write(tmp_path: Path, spoil, message: str) -> None:  # type: ignore[no-untyped-def]
    from conftest import run_sweep, write_study

    write_images(tmp_path / "images", {"a": 12, "b": 12})
    spoil(tmp_path / "images")
    write_study(tmp_path, name="folder", n_trials=1, data=FOLDER_DATA)
    result = run_sweep("run", "folder.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith("error: " + message.format(folder=tmp_path)), result.stderr
    assert "fix or remove the file" in result.stderr or "one class folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.yaml", "images"]  # no store written


def test_a_batched_loader_is_one_line_exit_2_before_any_write(tmp_path: Path) -> None:
    """The batch that does not fill up (40 examples in 16s) made TensorFlow's batching fail, and the hint was lost."""
    from conftest import run_sweep, write_study

    loader = loader_file(tmp_path, f"    d = tf.data.Dataset.from_tensor_slices(({X}, np.arange(40) % 2)).batch(16)\n"
                                   "    return {'train': d, 'test': d}\n")
    write_study(tmp_path, name="batched", n_trials=1, data={"loader": loader})
    result = run_sweep("run", "batched.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "error: data.loader: train is batched (examples of shape (None, 8, 8, 1), labels (None,)); give unbatched "
        "(x, y) pairs: call .unbatch() on it (sweep batches by train.batch_size)"), result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.py", "batched.yaml"]


def test_an_empty_class_folder_is_one_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_images(tmp_path / "images", {"a": 10, "b": 10, "c": 0})
    config = parse_study_config({"name": "folder", "data": FOLDER_DATA}, base_dir=tmp_path)
    assert load_dataset(config.data).train.size > 0
    assert capsys.readouterr().err.splitlines() == [
        (f"warning: data.path: class folder {tmp_path}/images/c holds no images, so nothing is trained or tested "
        f"on that class; add images or remove the folder")]


def test_a_test_folder_with_a_class_training_never_has_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path / "images" / "train", {"a": 10, "b": 10, "c": 0})
    write_images(tmp_path / "images" / "test", {"a": 3, "b": 3, "c": 3})
    config = parse_study_config({"name": "folder", "data": FOLDER_DATA}, base_dir=tmp_path)
    with pytest.raises(UsageError, match=r"^data: test has label 2 \(class folder c\) that train never has; add training examples of "
                                         r"it, or remove it from test$"):
        load_dataset(config.data)
