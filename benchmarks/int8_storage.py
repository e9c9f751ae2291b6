"""How the int8 file is stored, measured (issue 24): the quickstart CNN trained and pruned as a
trial is (8 epochs, constant schedule) to 50%, 80% and 95%, its `model_int8.tflite` stored
dense (the default) and sparse (`export.int8_storage: sparse`). For each: raw and gzip bytes,
one-example latency (one thread; XNNPack runs the dense file, LiteRT's built-in kernels the
sparse one, which XNNPack refuses), median of ROUNDS interleaved rounds, and the time the
sparse encoding takes. Writes JSON to stdout:

    .venv/bin/python benchmarks/int8_storage.py > benchmarks/int8_storage.json   # ~2 min
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import QUICKSTART, machine

SPARSITIES = (0.5, 0.8, 0.95)
ROUNDS = 7


def main() -> None:
    from sweep.config import parse_study_config
    from sweep.data.datasets import load_dataset
    from sweep.modeling.measure import gzip_size
    from sweep.modeling.metrics import ALL_GROUPS
    from sweep.modeling.tflite import Runner, sparse_encoded
    from sweep.modeling.train_and_measure import train_and_measure
    from sweep.search.trial_plan import trial_plan

    results = []
    for sparsity in SPARSITIES:
        config = parse_study_config({**QUICKSTART, "search": {"schedule": "constant", "final_sparsity": sparsity}})
        dataset = load_dataset(config.data)
        params, plan = trial_plan(optuna.create_study().ask(), config.search, dataset.total_steps(config.train))
        files: dict[str, bytes] = {}
        metrics = train_and_measure(dataset, config, 0, groups=ALL_GROUPS, params=params, plan=plan, files=files).metrics
        dense = files["model_int8.tflite"]
        encode_seconds = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            sparse = sparse_encoded(dense)
            encode_seconds.append(time.perf_counter() - started)
        runners = {"dense": Runner(dense), "sparse": Runner(sparse)}
        example = dataset.test.first_inputs(1)[0]
        latencies: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(ROUNDS):  # interleaved: the VM's speed drifts between spells
            for name, runner in runners.items():
                latencies[name].append(runner.latency_ms(example)[0] * 1000)
        results.append({
            "final_sparsity": sparsity,
            "sparsity": metrics["sparsity"],
            "int8_val_accuracy": {name: runner.accuracy(dataset.val) for name, runner in runners.items()},
            "bytes": {"dense": len(dense), "sparse": len(sparse)},
            "gzip_bytes": {"dense": gzip_size(dense), "sparse": gzip_size(sparse)},
            "xnnpack": {name: runner.xnnpack for name, runner in runners.items()},
            "latency_us_median": {name: statistics.median(values) for name, values in latencies.items()},
            "latency_us_rounds": latencies,
            "sparse_encoding_seconds_median": statistics.median(encode_seconds),
        })
    print(json.dumps({"machine": machine(), "rounds": ROUNDS, "results": results}, indent=2))


if __name__ == "__main__":
    main()
