"""Dataset loaders, including the download loaders fed with files we make."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import re
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from sweep.config import DataConfig
from sweep.data.datasets import PUBLISHED_SHA256, load_dataset
from sweep.errors import UsageError


def test_digits_is_offline_split_and_scaled() -> None:
    data = load_dataset(DataConfig())
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert len(data.train.x) + len(data.val.x) + len(data.test.x) == 1797
    assert len(data.val.x) == round(0.2 * (len(data.train.x) + len(data.val.x)))
    assert 0.0 <= data.train.x.min() and data.train.x.max() <= 1.0
    assert data.train.x.dtype == np.float32
    assert load_dataset(DataConfig()) is data  # loaded once per process


def test_validation_split_is_fixed_across_calls() -> None:
    a = load_dataset(DataConfig(validation_split=0.3))
    load_dataset.cache_clear()
    b = load_dataset(DataConfig(validation_split=0.3))
    np.testing.assert_array_equal(a.val.y, b.val.y)


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_greyscale_uint8_gets_a_channel_and_is_scaled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(
        tmp_path / "d.npz",
        x_train=rng.integers(0, 256, (50, 6, 6), dtype=np.uint8), y_train=rng.integers(0, 3, 50),
        x_test=rng.integers(0, 256, (10, 6, 6), dtype=np.uint8), y_test=rng.integers(0, 3, 10),
    )
    data = load_dataset(DataConfig(dataset="npz", path=str(path), validation_split=0.2))
    assert data.input_shape == (6, 6, 1) and len(data.val.x) == 10 and len(data.train.x) == 40
    assert data.train.x.max() <= 1.0 and data.num_classes == 3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(4, int), "x_test": np.zeros((2, 2))}, "no array 'y_test'"),
        ({"x_train": np.zeros((4, 2)), "y_train": np.zeros(3, int), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2, int)}, "differ in length"),
        ({"x_train": np.zeros((4, 2)), "y_train": np.full(4, 0.5), "x_test": np.zeros((2, 2)), "y_test": np.zeros(2, int)}, "y_train must be a 1-D array of non-negative integer"),
    ],
)
def test_bad_npz_files_are_usage_errors(tmp_path: Path, arrays: dict, message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **arrays)
    with pytest.raises(UsageError, match=message):
        load_dataset(DataConfig(dataset="npz", path=str(path)))


def test_not_an_npz_file(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("hello")
    with pytest.raises(UsageError, match="cannot read .* as .npz"):
        load_dataset(DataConfig(dataset="npz", path=str(path)))


def good_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {"x_train": rng.random((20, 4, 4)), "y_train": np.arange(20) % 3,
                "x_test": rng.random((5, 4, 4)), "y_test": np.arange(5) % 3}


def one_line_usage_error(path: Path) -> str:
    load_dataset.cache_clear()
    with pytest.raises(UsageError) as caught:
        load_dataset(DataConfig(dataset="npz", path=str(path)))
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x_test": np.zeros((5, 3, 3))}, r"x_test images have shape \(3, 3, 1\) but x_train images \(4, 4, 1\)"),
        ({"x_test": np.zeros((0, 4, 4)), "y_test": np.zeros(0, int)}, "x_test is empty"),
        ({"x_train": np.zeros((0, 4, 4)), "y_train": np.zeros(0, int)}, "x_train is empty"),
        ({"x_train": np.full((20, 4, 4), "pixel")}, "x_train must hold numbers"),
        ({"x_test": np.full((5, 4, 4), "1")}, "x_test must hold numbers"),  # numeric text is still text
        ({"x_train": np.arange(20.0)}, r"x_train must have one row per example .*got shape \(20,\)"),
        ({"y_train": np.eye(3)[np.arange(20) % 3]},
         r"^data: y_train labels look one-hot \(shape \(20, 3\)\); pass integer labels: y.argmax\(axis=1\)$"),
        ({"y_train": np.zeros(20, int), "y_test": np.zeros(5, int)},
         r"^data: y_train has one class \(label 0\); a classifier needs two or more: add examples of another class$"),
        ({"y_test": np.arange(5)}, (r"^data: y_test has labels \[3, 4\] that y_train never has; add training examples "
                                   r"of them, or remove them from y_test$")),
    ],
    ids=["test shape differs", "empty x_test", "empty x_train", "text images", "numeric text", "1-D x", "one-hot labels",
         "one class", "test labels training never has"],
)
def test_npz_with_unusable_arrays_is_one_line_usage_error(tmp_path: Path, change: dict, message: str) -> None:
    path = write_npz(tmp_path / "bad.npz", **{**good_arrays(), **change})
    text = one_line_usage_error(path)
    assert re.search(message, text), text


def test_npy_file_as_data_path_names_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with open(path, "wb") as file:  # np.save would append .npy to the name
        np.save(file, np.zeros((20, 4)))
    message = one_line_usage_error(path)
    assert "single .npy array, not an .npz archive" in message and "numpy.savez" in message


def damaged_copies(path: Path) -> dict[str, bytes]:
    """Ways a real .npz file arrives broken: cut short at various points, or bytes flipped."""
    data = path.read_bytes()
    copies = {f"cut at {n}": data[:n] for n in (0, 10, 100, len(data) // 2, len(data) - 22, len(data) - 1)}
    for start in (120, len(data) // 3, len(data) // 2):
        flipped = bytearray(data)
        flipped[start:start + 40] = bytes(b ^ 0xFF for b in flipped[start:start + 40])
        copies[f"flipped at {start}"] = bytes(flipped)
    return copies


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_damaged_npz_is_never_a_traceback(tmp_path: Path, compressed: bool) -> None:
    whole = tmp_path / "whole.npz"
    (np.savez_compressed if compressed else np.savez)(whole, **good_arrays())
    for name, data in damaged_copies(whole).items():
        path = tmp_path / "damaged.npz"
        path.write_bytes(data)
        load_dataset.cache_clear()
        try:
            load_dataset(DataConfig(dataset="npz", path=str(path)))
        except UsageError as error:
            assert "\n" not in str(error) and str(error).startswith("data"), (name, str(error))
        # some flips land in padding and leave a loadable file: that is fine too


def idx_gz(path: Path, array: np.ndarray, header: int) -> None:
    with gzip.open(path, "wb") as file:
        file.write(b"\0" * header + array.astype(np.uint8).tobytes())


@pytest.fixture
def keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    load_dataset.cache_clear()
    yield tmp_path
    load_dataset.cache_clear()


def publish(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make `path` count as the published file of its name, so tests can use files they make."""
    monkeypatch.setitem(PUBLISHED_SHA256, path.name, hashlib.sha256(path.read_bytes()).hexdigest())


def fake_mnist(keras_home: Path) -> Path:
    rng = np.random.default_rng(1)
    path = keras_home / "datasets" / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 30),
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=np.arange(5))
    return path


def test_mnist_reads_the_cached_keras_file(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(monkeypatch, fake_mnist(keras_home))
    data = load_dataset(DataConfig(dataset="mnist", validation_split=0.1))
    assert data.input_shape == (28, 28, 1) and len(data.val.x) == 3 and len(data.test.x) == 5


def test_mnist_cache_that_is_not_the_published_file_is_refused(keras_home: Path) -> None:
    path = fake_mnist(keras_home)
    with pytest.raises(UsageError, match=f"the file at {path} is not the published MNIST archive "
                                         r"\(checksum mismatch\); delete it .* or replace it"):
        load_dataset(DataConfig(dataset="mnist"))


def test_fashion_mnist_reads_idx_files(keras_home: Path) -> None:
    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir()
    idx_gz(folder / "train-labels-idx1-ubyte.gz", np.arange(20) % 10, 8)
    idx_gz(folder / "train-images-idx3-ubyte.gz", np.full((20, 28, 28), 255), 16)
    idx_gz(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4), 8)
    idx_gz(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 16)
    data = load_dataset(DataConfig(dataset="fashion_mnist"))
    assert data.input_shape == (28, 28, 1) and data.train.x.max() == 1.0 and data.num_classes == 10
    np.testing.assert_array_equal(data.test.y, np.arange(4))


def cifar_batch(n: int) -> bytes:
    return pickle.dumps({b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))})


def fake_cifar(keras_home: Path, test_batch: bytes | None = None) -> Path:
    path = keras_home / "datasets" / "cifar-10-python.tar.gz"
    batches = [*((f"data_batch_{i}", cifar_batch(4)) for i in range(1, 6)), ("test_batch", test_batch or cifar_batch(3))]
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in batches:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_cifar10_reads_the_pickled_batches(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publish(monkeypatch, fake_cifar(keras_home))
    data = load_dataset(DataConfig(dataset="cifar10", validation_split=0.25))
    assert data.input_shape == (32, 32, 3) and len(data.train.x) == 15 and len(data.test.x) == 3


class MakesMarker:
    """A pickle that, when loaded by plain `pickle.load`, creates the file `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str, int]]:
        return os.open, (str(self.marker), os.O_CREAT | os.O_WRONLY)


def test_crafted_cifar10_cache_is_refused_before_unpickling(keras_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = fake_cifar(keras_home, test_batch=pickle.dumps(MakesMarker(marker)))
    with pytest.raises(UsageError) as caught:
        load_dataset(DataConfig(dataset="cifar10"))
    assert str(caught.value) == (
        f"data.dataset: the file at {path} is not the published CIFAR-10 archive (checksum mismatch); "
        f"delete it to download it again, or replace it with the file from "
        f"https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    )
    assert not marker.exists()


def test_cifar10_batches_may_hold_only_numpy_arrays(keras_home: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: even a file that passes the checksum cannot run code."""
    marker = tmp_path / "pwned"
    publish(monkeypatch, fake_cifar(keras_home, test_batch=pickle.dumps(MakesMarker(marker))))
    with pytest.raises(UsageError, match=r"cannot read .*cifar-10-python.tar.gz .*may hold only numpy arrays"):
        load_dataset(DataConfig(dataset="cifar10"))
    assert not marker.exists()


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_damaged_cached_download_is_a_usage_error(keras_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                  dataset: str) -> None:
    """A cut-off file someone placed in the cache, published under that hash (as if Keras
    had listed a broken file): still one line, never a traceback."""
    whole = fake_mnist(keras_home) if dataset == "mnist" else fake_cifar(keras_home)
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    publish(monkeypatch, whole)
    with pytest.raises(UsageError, match=f"data.dataset: cannot read {whole} .*; delete it to download it again"):
        load_dataset(DataConfig(dataset=dataset))


def test_truncated_fashion_mnist_file_is_a_usage_error(keras_home: Path) -> None:
    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir()
    idx_gz(folder / "train-labels-idx1-ubyte.gz", np.arange(20) % 10, 8)
    idx_gz(folder / "train-images-idx3-ubyte.gz", np.full((20, 28, 27), 255), 16)  # not whole images
    idx_gz(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4), 8)
    idx_gz(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 16)
    with pytest.raises(UsageError, match="cannot read .*train-images-idx3-ubyte.gz"):
        load_dataset(DataConfig(dataset="fashion_mnist"))


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server for a folder; yields the folder and its URL."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    thread.join()


@pytest.mark.integration  # a local HTTP server
def test_download_is_checked_against_the_published_checksum(
    keras_home: Path, file_server: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = file_server
    monkeypatch.setattr("sweep.data.datasets.KERAS_DATASETS", url)
    fake_mnist(keras_home).rename(served / "mnist.npz")
    with pytest.raises(UsageError, match=f"the download from {url}mnist.npz is not the published MNIST "
                                         r"archive \(checksum mismatch\)"):
        load_dataset(DataConfig(dataset="mnist"))
    assert not list((keras_home / "datasets").iterdir())  # neither kept nor left half-written
    publish(monkeypatch, served / "mnist.npz")
    assert len(load_dataset(DataConfig(dataset="mnist")).test.x) == 5
    assert (keras_home / "datasets" / "mnist.npz").is_file()


def test_download_without_internet_names_the_fix(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sweep.data.datasets.KERAS_DATASETS", "http://127.0.0.1:9/")  # nothing listens
    with pytest.raises(UsageError, match="cannot download .* place the file at .*mnist.npz"):
        load_dataset(DataConfig(dataset="mnist"))
    assert not list((keras_home / "datasets").iterdir())  # no partial file left


# --- model builders: checked against the dataset before any trial ---------------------

BUILDERS = '''
import tf_keras as keras


def three_classes(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(3)])


def two_heads(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    flat = keras.layers.Flatten()(inputs)
    return keras.Model(inputs, [keras.layers.Dense(num_classes)(flat), keras.layers.Dense(1)(flat)])


def per_pixel(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_classes)])


class Subclassed(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.logits = keras.layers.Dense(num_classes)

    def call(self, x):
        return self.logits(x)


def subclassed(input_shape, num_classes):
    return Subclassed(num_classes)


def broken(input_shape, num_classes):
    raise RuntimeError("layer sizes\\nmust be positive: " + "x" * 5000)


def ends_in_softmax(input_shape, num_classes):
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                             keras.layers.Dense(num_classes, activation="softmax")])
'''


@pytest.fixture
def builders(tmp_path: Path) -> str:
    path = tmp_path / "builders.py"
    path.write_text(BUILDERS)
    return str(path)


@pytest.mark.integration  # TensorFlow in this process
@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("three_classes", (r"'s model has outputs of shape \(None, 3\), but the dataset's 10 classes need "
                          r"\(batch, 10\); end the model with Dense\(num_classes\)")),
        ("per_pixel", r"'s model has outputs of shape \(None, 8, 8, 10\), but the dataset's 10 classes need \(batch, 10\)"),
        ("two_heads", r"'s model has 2 outputs; sweep trains a classifier with one output of 10 logits"),
        ("subclassed", r"'s model is a subclassed Subclassed model .*build a Sequential or functional model"),
        ("broken", (r"builders.py:broken raised RuntimeError\('layer sizes\\nmust be positive: x+\.\.\.x+'\) "
                   r"when called with \(\(8, 8, 1\), 10\); fix the builder")),
    ],
)
def test_builder_that_does_not_fit_the_dataset_is_refused(builders: str, function: str, message: str) -> None:
    from sweep.config import ModelConfig, SearchConfig
    from sweep.modeling.models import check_model

    with pytest.raises(UsageError) as caught:
        check_model(ModelConfig(builder=f"{builders}:{function}"), SearchConfig(), (8, 8, 1), 10)
    text = str(caught.value)
    assert text.startswith("model.builder: ") and "\n" not in text and len(text) < 400, text
    assert re.search(message, text), text


@pytest.mark.integration  # TensorFlow in this process
@pytest.mark.parametrize("builder", ["mlp", "cnn", "ends_in_softmax"])
def test_builder_with_one_output_per_class_is_accepted(builders: str, builder: str) -> None:
    from sweep.modeling.models import build_model

    name = f"{builders}:{builder}" if builder == "ends_in_softmax" else builder
    assert build_model(name, (8, 8, 1), 10).output_shape == (None, 10)
