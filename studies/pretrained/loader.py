"""Your data, as `data.loader: loader.py:load` gives it to sweep: unbatched tf.data
datasets of (image, label) pairs, split as the model was trained (train_model.py). Here the digits are raw pixel values (0..16); the
model's own `Rescaling` layer scales them, as a deployed model would."""

from __future__ import annotations

import numpy as np
import tf_keras  # noqa: F401  (sweep sets TF_USE_LEGACY_KERAS; this makes the script work alone)
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def load() -> dict[str, tf.data.Dataset]:
    digits = load_digits()
    images = digits.images[..., np.newaxis].astype(np.float32)  # (1797, 8, 8, 1), values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )

    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.2, stratify=y_train, random_state=0
    )

    def stream(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y))

    # Without "validation", sweep would hold out data.validation_split of "train" itself.
    return {"train": stream(x_train, y_train), "validation": stream(x_val, y_val), "test": stream(x_test, y_test)}
