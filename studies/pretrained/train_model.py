"""Train and save the model you already have: a small digits CNN with its own
preprocessing (`Rescaling`) and a BatchNorm layer, neither of which tfmot can prune.

    python studies/pretrained/train_model.py   # writes studies/pretrained/model.keras
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tfmot needs Keras 2: tf_keras

import tf_keras as keras  # noqa: E402

from loader import load  # noqa: E402

HERE = Path(__file__).resolve().parent


def build() -> keras.Model:
    return keras.Sequential(
        [
            keras.layers.Input((8, 8, 1), name="input"),
            keras.layers.Rescaling(1 / 16, name="rescale"),
            keras.layers.Conv2D(32, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(name="bn1"),
            keras.layers.ReLU(name="relu1"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense1"),
            keras.layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def main() -> None:
    keras.utils.set_random_seed(0)
    data = load()
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(0.001),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(data["train"].shuffle(2000, seed=0).batch(32), validation_data=data["validation"].batch(256),
              epochs=15, verbose=2)
    _, accuracy = model.evaluate(data["test"].batch(256), verbose=0)
    model.save(HERE / "model.keras")
    print(f"saved {HERE / 'model.keras'}: test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
