"""Dataset loaders, including the download loaders fed with files we make."""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sweep.config import DataConfig
from sweep.data import load_dataset
from sweep.errors import UsageError


def test_digits_is_offline_split_and_scaled() -> None:
    data = load_dataset(DataConfig())
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797
    assert len(data.x_val) == round(0.2 * (len(data.x_train) + len(data.x_val)))
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert data.x_train.dtype == np.float32
    assert load_dataset(DataConfig()) is data  # loaded once per process


def test_validation_split_is_fixed_across_calls() -> None:
    a = load_dataset(DataConfig(validation_split=0.3))
    load_dataset.cache_clear()
    b = load_dataset(DataConfig(validation_split=0.3))
    np.testing.assert_array_equal(a.y_val, b.y_val)


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
    assert data.input_shape == (6, 6, 1) and len(data.x_val) == 10 and len(data.x_train) == 40
    assert data.x_train.max() <= 1.0 and data.num_classes == 3


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(4, int), x_test=np.zeros((2, 2))), "no array 'y_test'"),
        (dict(x_train=np.zeros((4, 2)), y_train=np.zeros(3, int), x_test=np.zeros((2, 2)), y_test=np.zeros(2, int)), "differ in length"),
        (dict(x_train=np.zeros((4, 2)), y_train=np.full(4, 0.5), x_test=np.zeros((2, 2)), y_test=np.zeros(2, int)), "y_train must be a 1-D array of non-negative integer"),
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


def test_mnist_reads_the_cached_keras_file(keras_home: Path) -> None:
    rng = np.random.default_rng(1)
    np.savez(keras_home / "datasets" / "mnist.npz",
             x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), y_train=rng.integers(0, 10, 30),
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8), y_test=np.arange(5))
    data = load_dataset(DataConfig(dataset="mnist", validation_split=0.1))
    assert data.input_shape == (28, 28, 1) and len(data.x_val) == 3 and len(data.x_test) == 5


def test_fashion_mnist_reads_idx_files(keras_home: Path) -> None:
    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir()
    idx_gz(folder / "train-labels-idx1-ubyte.gz", np.arange(20) % 10, 8)
    idx_gz(folder / "train-images-idx3-ubyte.gz", np.full((20, 28, 28), 255), 16)
    idx_gz(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4), 8)
    idx_gz(folder / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 16)
    data = load_dataset(DataConfig(dataset="fashion_mnist"))
    assert data.input_shape == (28, 28, 1) and data.x_train.max() == 1.0 and data.num_classes == 10
    np.testing.assert_array_equal(data.y_test, np.arange(4))


def test_cifar10_reads_the_pickled_batches(keras_home: Path) -> None:
    def batch(n: int) -> bytes:
        return pickle.dumps({b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))})

    with tarfile.open(keras_home / "datasets" / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name, payload in [*((f"data_batch_{i}", batch(4)) for i in range(1, 6)), ("test_batch", batch(3))]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    data = load_dataset(DataConfig(dataset="cifar10", validation_split=0.25))
    assert data.input_shape == (32, 32, 3) and len(data.x_train) == 15 and len(data.x_test) == 3


def test_download_without_internet_names_the_fix(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sweep.data.KERAS_DATASETS", "http://127.0.0.1:9/")  # nothing listens
    with pytest.raises(UsageError, match="cannot download .* place the file at .*mnist.npz"):
        load_dataset(DataConfig(dataset="mnist"))
    assert not list((keras_home / "datasets").iterdir())  # no partial file left
