"""Sparsity structure, measured: size and latency of each pattern at equal sparsity, and
whether per-layer targets beat one sparsity for all layers. Writes JSON to stdout:

    .venv/bin/python benchmarks/structure.py > benchmarks/structure.json
    .venv/bin/python benchmarks/structure.py --only patterns    # the first part alone (~3 min)

1. patterns: the quickstart CNN (trained 8 epochs on digits, pruned along a constant
   schedule) and a wider MobileNet-style network (random weights, 96x96x3 input, with the
   stem tfmot's XNNPack policy needs), each pruned to 50% (what 2:4 gives) as unstructured,
   2:4, 1x4, 4x1 and, for the wide net, the XNNPack policy (1x1 convolutions only). For each:
   the float and int8 TFLite files stored dense and sparse, and the one-example latency of
   each file (one thread, LiteRT; XNNPack where it takes the file), the median of 3
   interleaved rounds;
2. per_layer: the quickstart study (20 trials) with `per_layer: false` and `true`, seeds 0,
   1 and 2 interleaved: hypervolume of accuracy vs compressed size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import QUICKSTART, load, machine, study_file, sweep

SPARSITY = 0.5
ROUNDS = 3


def wide_net() -> Any:
    """MobileNet v1-style: a stride-2 stem after ZeroPadding2D, then depthwise 3x3 and
    pointwise 1x1 blocks (32 to 256 channels), global average pooling, a Dense head."""
    from sweep._tf import keras

    layers = keras.layers
    inputs = keras.Input((96, 96, 3))
    x = layers.ZeroPadding2D(((1, 1), (1, 1)))(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(32, 3, strides=2, padding="valid")(x)))
    for filters, stride in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1)]:
        if stride == 2:
            x = layers.ZeroPadding2D(((1, 1), (1, 1)))(x)
        x = layers.DepthwiseConv2D(3, strides=stride, padding="valid" if stride == 2 else "same")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(filters, 1)(x)))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def prune(model: Any, structure: Any, x: np.ndarray, y: np.ndarray, steps: int) -> tuple[Any, dict]:
    """`model` pruned to SPARSITY with `structure` over `steps` batches of (x, y): the
    stripped model and what each layer got."""
    from sweep._tf import keras, tfmot
    from sweep.config import PruneConfig
    from sweep.modeling.pruning import wrap_for_pruning
    from sweep.search.trial_plan import SchedulePlan

    plan = SchedulePlan("constant", steps, 0, steps - 1, 1, SPARSITY)
    wrapped, layers = wrap_for_pruning(model, PruneConfig(), plan, structure)
    wrapped.compile(optimizer=keras.optimizers.Adam(1e-4),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    wrapped.fit(x, y, batch_size=len(x) // steps, epochs=1, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    return tfmot.sparsity.keras.strip_pruning(wrapped), {n: (h.pattern, h.target) for n, h in layers.items()}


def files(model: Any, train: Any) -> dict[str, bytes]:
    from sweep.modeling.tflite import float_tflite, int8_tflite, sparse_encoded

    dense, quantized = float_tflite(model), int8_tflite(model, train)
    return {"float": dense, "float_sparse": sparse_encoded(dense), "int8": quantized, "int8_sparse": sparse_encoded(quantized)}


def patterns() -> dict:
    from sweep._tf import keras
    from sweep.config import parse_study_config
    from sweep.data.datasets import load_dataset
    from sweep.data.splits import Split
    from sweep.modeling.measure import accuracy, sparsity
    from sweep.modeling.tflite import Runner
    from sweep.modeling.training import train
    from sweep.search.structure import Structure

    config = parse_study_config({**QUICKSTART, "name": "bench"}, source="quickstart")
    digits = load_dataset(config.data)
    dense_cnn = train(digits, config, seed=0).model
    rng = np.random.default_rng(0)
    wide_x = rng.random((64, 96, 96, 3), dtype=np.float32)
    wide_y = rng.integers(0, 10, 64)
    variants = {"unstructured": Structure(), "2:4": Structure("2:4"), "1x4": Structure("1x4"), "4x1": Structure("4x1"),
                "xnnpack policy": Structure(policy="xnnpack")}
    models: dict[str, dict[str, Any]] = {"quickstart CNN": {}, "MobileNet-style": {}}
    for name, structure in variants.items():
        keras.utils.set_random_seed(0)
        if name != "xnnpack policy":  # the CNN has no stem for that policy
            start = keras.models.clone_model(dense_cnn)  # new variables: give them the trained weights
            start.set_weights(dense_cnn.get_weights())
            pruned, layers = prune(start, structure, digits.train.x, digits.train.y, 8)
            models["quickstart CNN"][name] = (pruned, layers, digits.train, digits.test.first_inputs(1)[0],
                                              accuracy(pruned, digits.test))
        keras.utils.set_random_seed(0)
        pruned, layers = prune(wide_net(), structure, wide_x, wide_y, 2)
        models["MobileNet-style"][name] = (pruned, layers, Split.arrays(wide_x, wide_y), wide_x[0], None)

    results: dict[str, dict[str, dict]] = {}
    encoded: dict[tuple[str, str], dict[str, bytes]] = {}
    for model_name, by_variant in models.items():
        for variant, (model, layers, split, _, test_accuracy) in by_variant.items():
            encoded[model_name, variant] = contents = files(model, split)
            results.setdefault(model_name, {})[variant] = {
                "sparsity": sparsity(model)["sparsity"],
                "layers": {p: sum(1 for pattern, _ in layers.values() if pattern == p) for p in {p for p, _ in layers.values()}},
                "test_accuracy": test_accuracy,
                "bytes": {kind: len(content) for kind, content in contents.items()},
                "xnnpack": {kind: Runner(content).xnnpack for kind, content in contents.items()},
                "latency_ms": {kind: [] for kind in contents},
            }
    for _ in range(ROUNDS):  # interleaved: this VM's speed drifts between spells
        for (model_name, variant), contents in encoded.items():
            example = models[model_name][variant][3]
            for kind, content in contents.items():
                results[model_name][variant]["latency_ms"][kind].append(Runner(content).latency_ms(example)[0])
    for by_variant in results.values():
        for row in by_variant.values():
            row["latency_ms"] = {kind: statistics.median(times) for kind, times in row["latency_ms"].items()}
    return results


def per_layer(seeds: list[int], trials: int) -> dict:
    from optuna.trial import TrialState

    from sweep.results.pareto import hypervolume, trial_table

    raw: dict[str, list[float]] = {"uniform": [], "per_layer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for variant in ("uniform", "per_layer"):
                folder = Path(tmp) / f"{variant}-{seed}"
                folder.mkdir()
                name = f"{variant}-{seed}"
                search = {**QUICKSTART["search"], "per_layer": variant == "per_layer"}
                path = study_file(folder, name, n_trials=trials, seed=seed, search=search,
                                  model={"builder": "cnn"})  # start: baseline, the default
                sweep("run", str(path), cwd=folder)
                study = load(folder, name)
                done = [t for t in study.trials if t.state == TrialState.COMPLETE]
                raw[variant].append(hypervolume(trial_table(done), QUICKSTART["objectives"], study.user_attrs["baseline"]))
                print(f"{name}: {raw[variant][-1]:.4f}", file=sys.stderr, flush=True)
    return {"seeds": seeds, "trials": trials, "hypervolume": raw,
            "median": {variant: statistics.median(values) for variant, values in raw.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["patterns", "per_layer"])
    args = parser.parse_args()
    out: dict[str, Any] = {"machine": machine()}
    if args.only in (None, "patterns"):
        out["patterns"] = patterns()
    if args.only in (None, "per_layer"):
        out["per_layer"] = per_layer([0, 1, 2], 20)
    json.dump(out, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
