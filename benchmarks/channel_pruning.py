"""Issue 28: what removing whole channels buys on LiteRT's XNNPack, measured on Keras
Applications' MobileNetV2 (alpha 0.35, 10 classes), the model of `trial_cost.py`. Writes JSON
to stdout; one mode per run:

    .venv/bin/python benchmarks/channel_pruning.py --widths --size 32 96 > benchmarks/channel_widths.json
    .venv/bin/python benchmarks/channel_pruning.py --arms --epochs 3 > benchmarks/channel_arms.json

`--arms`: the trained model fine-tuned by sweep's own trial code in each arm (see `arms`).

`--widths` (step 0 of docs/design/channel-pruning.md, section 6, before any channel-pruning
code): the dense model and narrower copies of it, made by editing `get_config()`: every Conv2D
and Dense layer but `predictions` keeps `filters * fraction` of its filters, rounded up (or to
the nearest) multiple of 1 or 8 (`WIDTHS`). Every producer shrinks by the same rule, so the
residual `Add`s stay consistent, and depthwise convs and BatchNorm follow their input; the
model's input (3 channels) and `predictions` (10) stay whole. Weights are random: latency does
not depend on their values. For each variant: parameters, MACs of one inference, the float and
int8 files' bytes (`sweep.modeling.tflite`'s default `freeze` path; int8 calibrated on the
digits of `trial_cost.LOADER`, upsampled to the input size), and their latency
(`Runner.latency_ms`'s median, one example, one thread, XNNPack), the median of `ROUNDS`
interleaved rounds.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import machine
from trial_cost import LOADER, TRAIN

from sweep._tf import keras, tf
from sweep.config import parse_study_config
from sweep.data.datasets import load_dataset
from sweep.data.splits import Split
from sweep.modeling.channel_graph import describe
from sweep.modeling.measure import measure
from sweep.modeling.metrics import ALL_GROUPS
from sweep.modeling.models import starting_model
from sweep.modeling.pruning import layer_shapes
from sweep.modeling.tflite import Runner, converting
from sweep.modeling.train_and_measure import train_and_measure
from sweep.search import channel_groups
from sweep.search.channel_plan import plan_channels
from sweep.search.space import TrialParams
from sweep.search.structure import Structure
from sweep.search.trial_plan import plan_schedule

ROUNDS = 7  # interleaved: this VM's speed drifts between spells (benchmarks/README.md, section 11)
# name: (fraction of each layer's filters kept, rounded "up" or to the "nearest" multiple of this).
# half: the "half the channels"; _x8: in multiples of 8, as XNNPack packs channels in tiles
# (inferred); keep_0.71: 29% removed, where MACs would halve for exact fractions (design note,
# section 0); keep_0.71_near8: mostly fewer channels than keep_0.71, in multiples of 8;
# keep_0.645: what halves the MACs once each count is rounded up (measured here).
WIDTHS = {
    "dense": (1.0, 1, "up"),
    "half": (0.5, 1, "up"),
    "half_x8": (0.5, 8, "up"),
    "keep_0.71": (0.71, 1, "up"),
    "keep_0.71_x8": (0.71, 8, "up"),
    "keep_0.71_near8": (0.71, 8, "nearest"),
    "keep_0.645": (0.645, 1, "up"),
}
KEPT_WHOLE = ("predictions",)  # the 10 classes


def width(filters: int, fraction: float, multiple: int, rounding: str) -> int:
    """`filters * fraction` in multiples of `multiple`: at least one, at most `filters`."""
    multiples = (math.ceil if rounding == "up" else round)(filters * fraction / multiple)
    return min(filters, multiple * max(1, multiples))


def narrowed(config: dict[str, Any], fraction: float, multiple: int, rounding: str) -> keras.Model:
    """The model of `config` with every Conv2D's filters and Dense's units but the kept ones
    narrowed; DepthwiseConv2D (its own class, not a Conv2D in a config) follows its input."""
    config = copy.deepcopy(config)
    for layer in config["layers"]:
        key = {"Conv2D": "filters", "Dense": "units"}.get(layer["class_name"])
        if key and layer["config"]["name"] not in KEPT_WHOLE:
            layer["config"][key] = width(layer["config"][key], fraction, multiple, rounding)
    return keras.Model.from_config(config)


def macs(model: keras.Model) -> int:
    """sweep's `macs` metric: a (depthwise) conv's kernel once per output position, a Dense
    kernel once; BatchNorm, activations, Add and pooling count 0."""
    return channel_groups.macs(describe(model))


def channels(model: keras.Model) -> dict[str, int]:
    """Output channels of each Conv2D and Dense layer (depthwise convs follow their input)."""
    graph = describe(model)
    return {name: width for name, width in channel_groups.layer_widths(graph).items()
            if next(c.cls for c in graph.calls if c.layer == name) in channel_groups.PRODUCERS}


def digits(size: int) -> tuple[Split, np.ndarray]:
    """The digits' training split (int8 calibration) and one test example, at `size`x`size`."""
    namespace: dict[str, Any] = {}
    exec(LOADER, namespace)  # noqa: S102 (trial_cost.py's own loader, as the studies run it)
    data = namespace["load"]()
    x, y = (np.stack(a) for a in zip(*data["train"].as_numpy_iterator(), strict=True))
    example = next(data["test"].as_numpy_iterator())[0]
    resize = lambda images: tf.image.resize(images, (size, size)).numpy()
    return Split.arrays(resize(x), y), resize(example[np.newaxis])[0]


def widths_at(size: int) -> dict[str, Any]:
    """Every `WIDTHS` variant at `size`x`size`: counts, file bytes and interleaved latency."""
    train, example = digits(size)
    base = keras.applications.MobileNetV2(
        alpha=0.35, weights=None, input_shape=(size, size, 3), classes=10
    )
    config = base.get_config()
    variants: dict[str, dict[str, Any]] = {}
    runners: dict[str, dict[str, Runner]] = {}
    for name, (fraction, multiple, rounding) in WIDTHS.items():
        model = narrowed(config, fraction, multiple, rounding)
        with converting(model) as convert:  # the default `freeze` path, as a trial converts
            float_file, int8_file = convert.float_file(), convert.int8_file(train)
        runners[name] = {"float": Runner(float_file), "int8": Runner(int8_file)}
        widths = channels(model)
        variants[name] = {
            "fraction": fraction,
            "multiple": multiple,
            "rounding": rounding,
            "params": model.count_params(),
            "macs": macs(model),
            "channels": sum(v for k, v in widths.items() if k not in KEPT_WHOLE),
            "float_bytes": len(float_file),
            "int8_bytes": len(int8_file),
            "xnnpack": {kind: runner.xnnpack for kind, runner in runners[name].items()},
            "widths": widths,
        }
        print(f"{size}: {name} converted", file=sys.stderr, flush=True)
    rounds, timing = interleaved(runners, example)
    dense = variants["dense"]
    for name, variant in variants.items():
        latency = {kind: statistics.median(values) for kind, values in rounds[name].items()}
        variant["latency_us"] = latency
        variant["latency_us_rounds"] = rounds[name]
        variant["share"] = {
            key: variant[key] / dense[key]
            for key in ("params", "macs", "channels", "float_bytes", "int8_bytes")
        }
    for variant in variants.values():
        variant["speedup"] = {
            kind: dense["latency_us"][kind] / variant["latency_us"][kind]
            for kind in ("float", "int8")
        }
    return {
        "input": [size, size, 3],
        "timing_seconds": timing["wall"],
        "other_cpu_seconds": timing["machine"] - timing["own"],
        "variants": variants,
    }


def interleaved(runners: dict[str, dict[str, Runner]], example: np.ndarray
                ) -> tuple[dict[str, dict[str, list[float]]], dict[str, float]]:
    """Each runner's latency in µs, `ROUNDS` times, every round timing every variant once and
    starting one variant later; and the wall, machine and own CPU seconds it took."""
    names = list(runners)
    rounds: dict[str, dict[str, list[float]]] = {name: {kind: [] for kind in runners[name]} for name in names}
    before = cpu_seconds()
    for round_ in range(ROUNDS):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            for kind, runner in runners[name].items():
                rounds[name][kind].append(runner.latency_ms(example)[0] * 1000)
    return rounds, {key: after - before[key] for key, after in cpu_seconds().items()}


def arms(seeds: list[int], epochs: int) -> dict[str, Any]:
    """The issue's benchmark: `trial_cost.py`'s MobileNetV2, trained dense on the digits, then
    fine-tuned by sweep's own trial code (`train_and_measure`) for `epochs` with a polynomial
    schedule (0 to the target over the first half, power 3) in each arm, for each seed: half
    of every group's channels removed, the channel share that halves the MACs, and
    unstructured pruning of the same share of the kernels' weights as the half-channel arm.
    The dense model is the trained one as it is (a pretrained study's baseline). Latency:
    the first seed's files, timed in interleaved rounds."""
    work = Path(tempfile.mkdtemp(prefix="channel-arms-"))
    (work / "loader.py").write_text(LOADER)
    subprocess.run([sys.executable, "-c", TRAIN], cwd=work, capture_output=True, text=True, check=True)
    config = parse_study_config({
        "name": "channel-arms", "data": {"loader": "loader.py:load"}, "model": {"pretrained": "model.keras"},
        "train": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.0005},
    }, base_dir=work)
    dataset = load_dataset(config.data)
    model = starting_model(config.model, dataset.input_shape, dataset.num_classes)
    kernels = layer_shapes(model, config.model.prune)
    graph = channel_groups.ChannelGraph.build(describe(model), selected=kernels)
    half = plan_channels(graph, kernels, 0.0).removed_share({g.name: len(g) // 2 for g in graph.groups})
    shares = {"channels_half": ("channels", half), "channels_half_macs": ("channels", half_macs_share(graph, kernels)),
              "unstructured_half": ("unstructured", half)}
    files: dict[str, dict[str, bytes]] = {"dense": {}}
    results: dict[str, list[dict[str, float]]] = {"dense": [measure(model, dataset, ALL_GROUPS, files=files["dense"])]}
    for seed in seeds:
        for arm, (pattern, share) in shares.items():
            params = TrialParams("polynomial", share, begin_step=0.0, end_step=0.5, frequency=10, weight_decay=0.0,
                                 initial_sparsity=0.0, power=3.0, structure=Structure(pattern))
            arm_files: dict[str, bytes] = {}
            evaluated = train_and_measure(dataset, config, seed, groups=ALL_GROUPS, params=params,
                                          plan=plan_schedule(params, dataset.total_steps(config.train)),
                                          files=arm_files)
            results.setdefault(arm, []).append({**evaluated.metrics, "final_sparsity": share})
            files.setdefault(arm, arm_files)
            print(f"{arm} seed {seed}: val {evaluated.metrics['val_accuracy']:.3f}", file=sys.stderr, flush=True)
    runners = {arm: {"float": Runner(f["model.tflite"]), "int8": Runner(f["model_int8.tflite"])}
               for arm, f in files.items()}
    rounds, timing = interleaved(runners, next(iter(dataset.test.batches(1)))[0][0])
    summary = {}
    for arm, runs in results.items():
        summary[arm] = {
            **{key: statistics.median(r.get(key, 0.0) for r in runs)
               for key in ("val_accuracy", "test_accuracy", "int8_val_accuracy", "int8_test_accuracy", "sparsity",
                           "params", "macs", "compressed_bytes", "tflite_bytes", "int8_bytes", "int8_gzip_bytes",
                           "train_seconds")},
            "xnnpack": {kind: runner.xnnpack for kind, runner in runners[arm].items()},
            "latency_us": {kind: statistics.median(values) for kind, values in rounds[arm].items()},
        }
    dense = summary["dense"]
    for values in summary.values():
        values["speedup"] = {kind: dense["latency_us"][kind] / values["latency_us"][kind] for kind in ("float", "int8")}
        values["share_of_dense"] = {key: values[key] / dense[key]
                                    for key in ("params", "macs", "tflite_bytes", "int8_bytes", "int8_gzip_bytes")}
    return {"seeds": seeds, "epochs": epochs, "rounds": ROUNDS, "timing_seconds": timing["wall"],
            "other_cpu_seconds": timing["machine"] - timing["own"], "summary": summary,
            "runs": results, "latency_us_rounds": rounds}


def half_macs_share(graph: channel_groups.ChannelGraph, kernels: dict[str, list[tuple[int, ...]]]) -> float:
    """The `final_sparsity` whose channel plan leaves half of the dense model's MACs."""
    dense = graph.macs()
    low, high = 0.0, 0.95
    for _ in range(30):
        middle = (low + high) / 2
        plan = plan_channels(graph, kernels, middle)
        left = graph.macs({name: range(n - plan.dropped[name]) for name, n in plan.channels.items()})
        low, high = (middle, high) if left > dense / 2 else (low, middle)
    return high


def cpu_seconds() -> dict[str, float]:
    """Wall time, the CPU time of every process on the machine (`/proc/stat` less idle and
    iowait) and this one's: over the timing, their difference says whether it was shared."""
    busy = sum(
        int(v) for i, v in enumerate(Path("/proc/stat").read_text().split()[1:9]) if i not in (3, 4)
    )
    return {
        "wall": time.perf_counter(),
        "machine": busy / os.sysconf("SC_CLK_TCK"),
        "own": time.process_time(),
    }


def provenance() -> dict[str, Any]:
    """The commit measured, whether its tracked files had local changes, when, and where."""
    git = lambda *args: (
        subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, check=True).stdout
    )
    return {
        "commit": git("rev-parse", "HEAD").strip(),
        "uncommitted_changes": sorted(
            line[3:] for line in git("status", "--porcelain").splitlines() if line[:2] != "??"
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--widths", action="store_true", help="step 0: narrower copies, untrained, timed"
    )
    mode.add_argument("--arms", action="store_true", help="fine-tuned arms through sweep's trial code")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="--arms: fine-tuning seeds")
    parser.add_argument("--epochs", type=int, default=3, help="--arms: fine-tuning epochs per arm")
    parser.add_argument(
        "--size", type=int, nargs="+", default=[32], help="input sizes (pixels a side)"
    )
    args = parser.parse_args()
    started = provenance()
    load = {"start": os.getloadavg()}
    if args.widths:
        result = {"rounds": ROUNDS, "sizes": {str(size): widths_at(size) for size in args.size}}
    else:
        result = arms(args.seeds, args.epochs)
    load["end"] = os.getloadavg()
    json.dump({**started, "load_average": load, **result}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
