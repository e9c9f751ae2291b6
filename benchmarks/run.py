"""Measure sweep's performance on this machine and write benchmarks/README.md.

    .venv/bin/python benchmarks/run.py            # everything (about 25 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # a smoke run with few trials (not for figures)

Run it on an otherwise idle machine: every figure is wall time. Each section runs the
real `sweep` command in a temporary folder and reads the results back from the Optuna
storage, like a user would. Sections:

1. overhead: per-trial wall time of `sweep run` vs benchmarks/bare_tfmot.py on the
   same configurations, data, epochs and seeds;
2. where the time goes inside a trial (the `timings` every trial records);
3. worker scaling: trials per minute with --jobs 1 and --jobs 2;
4. memory: a worker's resident memory after 5 and after 50 trials;
5. start-up: `sweep --help`, and `sweep run` until its first trial starts;
6. sample efficiency: hypervolume of the default sampler vs random search;
7. where trials start: `model.start: scratch` vs `baseline`.

Sections 1-6 were measured with trials training from scratch (the default before
`model.start` existed) and pin `start: scratch`, so they stay comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
SWEEP = [sys.executable, "-m", "sweep"]
QUICKSTART = yaml.safe_load((HERE.parent / "studies" / "quickstart.yaml").read_text())
QUICKSTART["model"] = {**QUICKSTART.get("model", {}), "start": "scratch"}  # sections 1-6: see above


def sweep(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    full_env.update(env or {})
    result = subprocess.run([*SWEEP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sweep {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


def study_file(folder: Path, name: str, **overrides: object) -> Path:
    study = {**QUICKSTART, "name": name, **overrides}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def load(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'sweep.db'}")


def wall(trial: optuna.trial.FrozenTrial) -> float:
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def spread(values: list[float]) -> str:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return f"median {statistics.median(values):.2f} s (IQR {q[0]:.2f}-{q[2]:.2f}, min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


# --- 1 and 2: overhead against bare tfmot, and where the time goes ---------------------


def overhead(work: Path, trials: int, rounds: int = 3) -> dict:
    """`rounds` x (a `sweep run` of `trials`, then bare tfmot on the same configurations):
    alternating blocks, so a slow spell of the machine does not land on one side only."""
    done: list[optuna.trial.FrozenTrial] = []
    bare_rows: list[dict] = []
    for round_ in range(rounds):
        name = f"overhead-{round_}"
        path = study_file(work, name, n_trials=trials, seed=round_,
                          search={**QUICKSTART["search"], "schedule": ["polynomial", "constant"]})
        sweep("run", str(path), cwd=work)
        these = sorted((t for t in load(work, name).trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
        (work / "configs.json").write_text(json.dumps(replay_configs(these)))
        bare = subprocess.run([sys.executable, str(HERE / "bare_tfmot.py"), str(work / "configs.json")],
                              capture_output=True, text=True, check=True)
        done += these
        bare_rows += [json.loads(line) for line in bare.stdout.splitlines()]
    sweep_times, bare_times = [wall(t) for t in done], [row["seconds"] for row in bare_rows]
    same = sum(
        abs(row["sparsity"] - t.user_attrs["metrics"]["sparsity"]) < 1e-9 and row["compressed_bytes"] == t.user_attrs["metrics"]["compressed_bytes"]
        for row, t in zip(bare_rows, done)
    )
    phases: dict[str, list[float]] = {}
    for t in done:
        timings = dict(t.user_attrs["timings"])
        timings["optuna and other"] = wall(t) - sum(timings.values())
        for phase, seconds in timings.items():
            phases.setdefault(phase, []).append(seconds)
    return {
        "sweep": sweep_times, "bare": bare_times, "rounds": rounds,
        "ratio": statistics.median(sweep_times) / statistics.median(bare_times),
        "identical_results": same, "trials": len(done),
        "phases": {k: statistics.median(v) for k, v in phases.items()},
    }


# --- 3: worker scaling -----------------------------------------------------------------


def scaling(work: Path, trials: int) -> dict:
    rates = {}
    for jobs in (1, 2):
        folder = work / f"jobs{jobs}"
        folder.mkdir()
        path = study_file(folder, f"scaling-{jobs}", n_trials=trials)
        sweep("run", str(path), "--jobs", str(jobs), cwd=folder)
        done = [t for t in load(folder, f"scaling-{jobs}").trials if t.state == TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        rates[jobs] = len(done) / span * 60
    return {"per_minute": rates, "speedup": rates[2] / rates[1]}


# --- 4: memory ------------------------------------------------------------------------


def memory(work: Path, trials: int) -> dict:
    """sweep's worker, and the bare tfmot script on the same configurations for comparison."""
    path = study_file(work, "memory", n_trials=trials, train={**QUICKSTART["train"], "epochs": 2},
                      search={**QUICKSTART["search"], "schedule": ["polynomial", "constant"]})
    sweep("run", str(path), cwd=work)
    done = sorted((t for t in load(work, "memory").trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
    rss = [t.user_attrs["worker_rss_mb"] for t in done]
    (work / "configs.json").write_text(json.dumps(replay_configs(done)))
    bare = subprocess.run([sys.executable, str(HERE / "bare_tfmot.py"), str(work / "configs.json"), "--epochs", "2"],
                          capture_output=True, text=True, check=True)
    bare_rss = [json.loads(line)["rss_mb"] for line in bare.stdout.splitlines()]
    early, bare_early = rss[min(4, len(rss) - 1)], bare_rss[min(4, len(bare_rss) - 1)]
    return {"after_5": early, "after_last": rss[-1], "trials": len(rss), "growth": rss[-1] / early - 1,
            "bare_after_5": bare_early, "bare_after_last": bare_rss[-1], "bare_growth": bare_rss[-1] / bare_early - 1}


def replay_configs(done: list[optuna.trial.FrozenTrial]) -> list[dict]:
    """The trials' configurations, with absolute steps, for bare_tfmot.py."""
    return [
        {**{k: t.params.get(k) for k in ("schedule", "final_sparsity", "initial_sparsity", "power", "weight_decay")},
         "begin_step": t.user_attrs["plan"]["begin_step"], "end_step": t.user_attrs["plan"]["end_step"],
         "frequency": t.user_attrs["plan"]["frequency"], "seed": t.user_attrs["seed"]}
        for t in done
    ]


# --- 5: start-up ----------------------------------------------------------------------


def startup(work: Path) -> dict:
    helps = []
    for _ in range(10):
        started = time.perf_counter()
        subprocess.run([*SWEEP, "--help"], capture_output=True, check=True)
        helps.append(time.perf_counter() - started)
    path = study_file(work, "startup", n_trials=1)
    launched = datetime.now()
    sweep("run", str(path), cwd=work)
    study = load(work, "startup")
    first = study.trials[0].datetime_start
    baseline = study.user_attrs["baseline"]["train_seconds"]
    return {"help": statistics.median(helps), "to_first_trial": (first - launched).total_seconds(),
            "baseline_train": baseline}


# --- 6: sample efficiency ---------------------------------------------------------------


def sample_efficiency(work: Path, seeds: list[int], trials: int) -> dict:
    from sweep.results.pareto import hypervolume, trial_table

    results: dict[str, dict[int, list[float]]] = {}
    for sampler in ("tpe", "random"):
        for seed in seeds:
            folder = work / f"{sampler}-{seed}"
            folder.mkdir()
            name = f"efficiency-{sampler}-{seed}"
            path = study_file(folder, name, n_trials=trials, seed=seed, sampler=sampler)
            sweep("run", str(path), cwd=folder)
            study = load(folder, name)
            done = sorted((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.number)
            for budget in (trials // 2, trials):
                volume = hypervolume(trial_table(done[:budget]), QUICKSTART["objectives"], study.user_attrs["baseline"])
                results.setdefault(sampler, {}).setdefault(budget, []).append(volume)
    return {s: {b: statistics.median(v) for b, v in by.items()} for s, by in results.items()} | {"raw": results}


# --- 7: where trials start: newly initialised weights, or the trained baseline ------------


def start_comparison(work: Path, seeds: list[int], trials: int) -> dict:
    """The quickstart study with `model.start: scratch` and `baseline`, seeds interleaved:
    hypervolume, the best test accuracy within 1/3 and 1/6 of the dense model's size, and
    the whole run's wall time (the baseline's training included)."""
    from sweep.results.pareto import hypervolume, trial_table

    results: dict[str, dict[str, list[float]]] = {}
    for seed in seeds:
        for start in ("scratch", "baseline"):
            folder = work / f"{start}-{seed}"
            folder.mkdir()
            name = f"start-{start}-{seed}"
            path = study_file(folder, name, n_trials=trials, seed=seed, model={"builder": "cnn", "start": start})
            clock = time.perf_counter()
            sweep("run", str(path), cwd=folder)
            seconds = time.perf_counter() - clock
            study = load(folder, name)
            baseline = study.user_attrs["baseline"]
            done = [t for t in study.trials if t.state == TrialState.COMPLETE]

            def best_within(fraction: float, done: list = done, baseline: dict = baseline) -> float:
                fitting = [t.user_attrs["metrics"]["test_accuracy"] for t in done
                           if t.user_attrs["metrics"]["compressed_bytes"] <= baseline["compressed_bytes"] * fraction]
                return max(fitting, default=0.0)

            row = results.setdefault(start, {})
            row.setdefault("hypervolume", []).append(hypervolume(trial_table(done), QUICKSTART["objectives"], baseline))
            row.setdefault("test_accuracy_at_third", []).append(best_within(1 / 3))
            row.setdefault("test_accuracy_at_sixth", []).append(best_within(1 / 6))
            row.setdefault("run_seconds", []).append(seconds)
            row.setdefault("baseline_train_seconds", []).append(baseline["train_seconds"])
            row.setdefault("baseline_test_accuracy", []).append(baseline["test_accuracy"])
    return {"seeds": seeds, "trials": trials, "raw": results,
            "median": {start: {k: statistics.median(v) for k, v in row.items()} for start, row in results.items()}}


# --- report ---------------------------------------------------------------------------


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import tensorflow as tf

    return (f"{len(os.sched_getaffinity(0))} cores ({cpu}), {memory_gib:.0f} GiB RAM, no GPU; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Optuna {optuna.__version__}, "
            f"{platform.system()} {platform.release()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few trials: checks the script, not the figures")
    parser.add_argument("--only", help="rerun one section (startup, overhead, scaling, memory, efficiency, start; "
                                       "none: just rewrite README.md) "
                                       "and update results.json and README.md with it")
    parser.add_argument("--keep-readme", action="store_true",
                        help="update results.json only (README.md's sections 7 on are written by hand)")
    args = parser.parse_args()
    n = (lambda full, quick: quick if args.quick else full)
    results_path = HERE / ("results-quick.json" if args.quick else "results.json")
    figures: dict[str, object] = json.loads(results_path.read_text()) if args.only else {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for section, run in [
            ("startup", lambda: startup(work / "startup")),
            ("overhead", lambda: overhead(work / "overhead", n(12, 2))),
            ("scaling", lambda: scaling(work / "scaling", n(16, 2))),
            ("memory", lambda: memory(work / "memory", n(50, 6))),
            ("efficiency", lambda: sample_efficiency(work / "efficiency", n([0, 1, 2], [0]), n(40, 4))),
            ("start", lambda: start_comparison(work / "start", n([0, 1, 2], [0]), n(20, 3))),
        ]:
            if args.only and section != args.only:
                continue
            (work / section).mkdir()
            started = time.perf_counter()
            figures[section] = run()
            print(f"{section}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    figures["machine"] = machine()
    figures["date"] = datetime.now(UTC).strftime("%Y-%m-%d")
    figures = json.loads(json.dumps(figures, default=str))  # the same (string) keys as a reloaded file
    results_path.write_text(json.dumps(figures, indent=2))
    if not args.quick and not args.keep_readme:
        (HERE / "README.md").write_text(report(figures))
    print(json.dumps(figures, indent=2, default=str))


def report(f: dict) -> str:
    o, s, m, st, e = f["overhead"], f["scaling"], f["memory"], f["startup"], f["efficiency"]
    met = lambda ok: "**met**" if ok else "**not met**"
    phases = "\n".join(f"| {phase} | {seconds:.3f} |" for phase, seconds in sorted(o["phases"].items(), key=lambda kv: -kv[1]))
    tpe20, random40 = e["tpe"]["20"], e["random"]["40"]
    return f"""# Benchmarks

Measured on {f['date']} on {f['machine']}, by

```bash
.venv/bin/python benchmarks/run.py     # writes this file and benchmarks/results.json
```

on an otherwise idle machine (raw values in `results.json`). After the last change to a worker's
garbage collection, the timing and memory sections were rerun alone with
`benchmarks/run.py --only overhead` (then `memory`, `scaling`, `startup`); section 6 does not
depend on timing. `benchmarks/samplers.py` (section 6) writes `samplers.json`.

| figure | result | target |
| --- | --- | --- |
| overhead ratio, sweep / bare tfmot per-trial wall time (medians) | {o['ratio']:.3f} | <= 1.05: {met(o['ratio'] <= 1.05)} |
| worker scaling, trials/min --jobs 2 vs --jobs 1 | {s['speedup']:.2f}x ({s['per_minute']['1']:.1f} -> {s['per_minute']['2']:.1f}) | >= 1.6x: {met(s['speedup'] >= 1.6)} |
| memory growth of a worker, trial 5 -> trial {m['trials']} | {m['growth'] * 100:+.1f}% ({m['after_5']:.0f} -> {m['after_last']:.0f} MB) | < 10%: {met(m['growth'] < 0.10)} |
| `sweep --help` wall time (median of 10) | {st['help']:.2f} s | < 0.5 s: {met(st['help'] < 0.5)} |
| `sweep run` start to first trial | {st['to_first_trial']:.1f} s (of which dense baseline training {st['baseline_train']:.1f} s) | (reported) |
| hypervolume, default sampler (Latin-hypercube start, then TPE) at 20 trials vs random search at 40 (median of seeds 0, 1, 2) | {tpe20:.4f} vs {random40:.4f} | TPE@20 >= random@40: {met(tpe20 >= random40)} |

## 1. Overhead against a bare tfmot script

`benchmarks/bare_tfmot.py` is what a user writes by hand with tfmot alone: same digits split,
same CNN, 8 epochs, same seeds, and the same measurements (accuracy, achieved sparsity, gzip of
the H5, gzip of the TFLite flatbuffer). It replays the configurations `sweep run` sampled
(polynomial and constant schedules, tfmot's own), one after another in one process. The two
alternate in {o['rounds']} rounds (study seeds 0-{o['rounds'] - 1}; each round a `sweep run` of
{o['trials'] // o['rounds']} trials, then the bare script on the same configurations), {o['trials']} trials each
in all: trial times on this virtual machine jump between two levels (about 1.7 s and 2.2 s for
the same training) for spells of several trials, and alternating puts those spells on both sides.
{o['identical_results']} of {o['trials']} trials gave bit-identical sparsity and compressed size in both.

* sweep, per-trial wall time (Optuna's trial start to completion): {spread(o['sweep'])}
* bare tfmot, per-trial wall time: {spread(o['bare'])}

## 2. Where a trial's time goes

Median seconds per phase over the same trials (each trial records them in
`user_attrs["timings"]`; "optuna and other" is wall time minus the phases: sampling, storage
writes and the tell):

| phase | seconds |
| --- | --- |
{phases}

The data set is loaded once per worker (cached), not per trial.

## 3. Worker scaling

The quickstart study with 16 trials, `--jobs 1` then `--jobs 2`, counting complete trials
per minute from the first trial's start to the last trial's end (start-up and the dense baseline
excluded): {s['per_minute']['1']:.1f} vs {s['per_minute']['2']:.1f} trials/min, {s['speedup']:.2f}x.
Each of the 2 workers runs TensorFlow with 1 intra-op thread (cores / jobs).

## 4. Memory

Resident memory of one worker after each trial (`user_attrs["worker_rss_mb"]`), {m['trials']}
short trials (2 epochs) in one `sweep run`: {m['after_5']:.0f} MB after trial 5,
{m['after_last']:.0f} MB after trial {m['trials']} ({m['growth'] * 100:+.1f}%).

The bare tfmot script, training the same {m['trials']} configurations in one process with
`tf_keras.backend.clear_session()` before each, grows: {m['bare_after_5']:.0f} MB after trial 5,
{m['bare_after_last']:.0f} MB after trial {m['trials']} ({m['bare_growth'] * 100:+.1f}%, about
{(m['bare_after_last'] - m['bare_after_5']) / (m['trials'] - 5):.0f} MB per trial). The cause, found
with `gc.get_referrers` chains: tf_keras's optimizer all-reduces gradients across replicas through
`tf.custom_gradient`, which registers a gradient function per trace in TensorFlow's global gradient
registry and never removes it; that function's closure holds the traced training graph, so every
`fit` of a new model pins its whole graph and `clear_session()` cannot free it. sweep trains on one
device, where that all-reduce is the identity, and skips it (`sweep/modeling/training.py`, `_single_device`;
trial results are unchanged, see section 1). A worker also turns Python's automatic garbage
collection off and collects once at the end of each trial (the "gc" phase in section 2): a trial's
only cyclic garbage is its model and graphs (24,689 objects for the quickstart CNN after 2, 8 and 32
epochs alike, in a check while investigating: `gc.collect()`'s count after a fit with collection
off), and the worker's long-lived objects are frozen (`gc.freeze()`), so that one collection
scans only the trial's own. `tests/test_runner.py` guards this: no trial's training graph
outlives it, and the median memory of trials 8-10 stays within 50 MB of trials 3-5.

## 5. Start-up

`sweep --help` takes {st['help']:.2f} s (median of 10 runs) and imports no TensorFlow (a test
checks that). `sweep run` takes {st['to_first_trial']:.1f} s from launch to its first trial:
TensorFlow's import, loading data, checking the model, creating the stores and training the
dense baseline once per study ({st['baseline_train']:.1f} s of it).

## 6. Sample efficiency

Hypervolume (accuracy x compressed size, normalised, reference point: accuracy 0 and the dense
baseline's size) of the quickstart study after 20 and 40 trials, median over seeds 0, 1, 2:

| sampler | after 20 trials | after 40 trials |
| --- | --- | --- |
| tpe (default: 10 Latin-hypercube start-up trials, then TPE) | {e['tpe']['20']:.4f} | {e['tpe']['40']:.4f} |
| random | {e['random']['20']:.4f} | {e['random']['40']:.4f} |

Per seed (0, 1, 2): the default after 20 trials {', '.join(f'{v:.4f}' for v in e['raw']['tpe']['20'])};
random search after 40 trials {', '.join(f'{v:.4f}' for v in e['raw']['random']['40'])}.
{sampler_notes(e)}
{start_notes(f.get("start"))}
{shipping_notes()}
{structure_notes()}
{early_stopping_notes()}"""


def start_notes(r: dict | None) -> str:
    if r is None:
        return ""
    rows = []
    for key, label in [("hypervolume", "hypervolume (higher is better)"),
                       ("test_accuracy_at_third", "best test accuracy within 1/3 of the dense size"),
                       ("test_accuracy_at_sixth", "best test accuracy within 1/6 of the dense size"),
                       ("run_seconds", "wall time of the whole `sweep run` (s)"),
                       ("baseline_train_seconds", "of which training the baseline (s)")]:
        cells = " | ".join(f"{r['median'][start][key]:.4g} ({', '.join(f'{v:.4g}' for v in r['raw'][start][key])})"
                           for start in ("scratch", "baseline"))
        rows.append(f"| {label} | {cells} |")
    table = "\n".join(rows)
    return f"""
## 7. Where trials start: `model.start: scratch` vs `baseline`

The quickstart study ({r['trials']} trials, 8 epochs each) with trials training newly initialised
weights (`scratch`) or fine-tuning the trained dense baseline (`baseline`), seeds {', '.join(map(str, r['seeds']))}
run interleaved; median (per seed). Both train the baseline once (scratch needs it as the reference);
the dense model's test accuracy is {', '.join(f'{v:.4f}' for v in r['raw']['baseline']['baseline_test_accuracy'])}.

```bash
.venv/bin/python benchmarks/run.py --only start
```

| figure | scratch | baseline |
| --- | --- | --- |
{table}
"""


def shipping_notes() -> str:
    """What measuring the shipped files costs and how steady latency is (benchmarks/shipping.py)."""
    path = HERE / "shipping.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    rows = "\n".join(
        f"| `{name}` | {'yes' if v['xnnpack'] else 'no (stored sparse: built-in kernels)'} | {v['median_ms'] * 1000:.2f} "
        f"| {v['min_ms'] * 1000:.2f}-{v['max_ms'] * 1000:.2f} |"
        for name, v in r["latency_10_times"].items())
    drop = r["front_int8_accuracy_drop"]
    return f"""
## 8. What measuring the shipped files costs, and latency's spread

```bash
.venv/bin/python benchmarks/shipping.py > benchmarks/shipping.json
```

In the quickstart study ({r['trials']} trials), the int8 conversion, the int8 file's accuracy runs and
both latencies took a median {r['median_added_seconds']:.2f} s per trial, against {r['median_rest_of_trial_seconds']:.2f} s
for the rest of the trial: **{r['added_fraction']:.0%} added** (the target is at most 15%). Nearly all of it is the
int8 conversion; the interpreter runs take milliseconds. On the study's Pareto front ({drop['n']} trials) the
int8 file's validation accuracy was at most {drop['max'] * 100:.2f} points below the float model's (median
{drop['median'] * 100:.2f}), so pruning-preserving quantization-aware training is not needed here.

The most accurate front trial's exported files, timed 10 times in a row in one process (median of
each timing's median; one thread; µs):

| file | XNNPack | median | range over 10 |
| --- | --- | --- | --- |
{rows}

The same file varies by well under 1% within a process; across processes this VM's speed jumps
between levels about 30% apart (section 1: 1.7 s and 2.2 s for the same training), so `sweep rerun`
compares latency within 50%.

The trials' latencies (µs) by kind of file, with one worker and with `--jobs 2` sharing the 2 cores
(median, range, trials):

| kind | `--jobs 1` | `--jobs 2` |
| --- | --- | --- |
{jobs_rows(r.get("latency_by_jobs", {}))}
"""


def structure_notes() -> str:
    """Patterns at equal sparsity, and per-layer targets vs one sparsity (benchmarks/structure.py)."""
    path = HERE / "structure.json"
    if not path.exists():
        return ""
    r = json.loads(path.read_text())
    tables = []
    for model, variants in r["patterns"].items():
        rows = []
        for variant, v in variants.items():
            layers = ", ".join(f"{count} {pattern}" for pattern, count in sorted(v["layers"].items()))
            accuracy = "" if v["test_accuracy"] is None else f"{v['test_accuracy']:.4f}"
            kb = {kind: f"{size / 1000:.0f}" for kind, size in v["bytes"].items()}
            us = {kind: f"{ms * 1000:.1f}" + ("" if v["xnnpack"][kind] else "*") for kind, ms in v["latency_ms"].items()}
            rows.append(f"| {variant} | {layers} | {v['sparsity']:.3f} | {accuracy} | {kb['float']} / {kb['float_sparse']} "
                        f"| {kb['int8']} / {kb['int8_sparse']} | {us['float']} / {us['float_sparse']} | {us['int8']} / {us['int8_sparse']} |")
        tables.append(f"""**{model}**

| pattern | layers | sparsity | test accuracy | float KB (dense / sparse) | int8 KB (dense / sparse) | float µs (dense / sparse) | int8 µs (dense / sparse) |
| --- | --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows))
    p = r["per_layer"]
    per_seed = ", ".join(f"seed {seed}: {u:.4f} vs {q:.4f}"
                         for seed, u, q in zip(p["seeds"], p["hypervolume"]["uniform"], p["hypervolume"]["per_layer"], strict=True))
    return f"""
## 9. Sparsity structure: patterns at equal sparsity, and per-layer targets

```bash
.venv/bin/python benchmarks/structure.py > benchmarks/structure.json
```

Measured on {r['machine']}. Each model pruned to 50% (what 2:4 gives) with each pattern; the quickstart CNN fine-tuned 8
batches from its trained weights, the MobileNet-style network (96x96x3, random weights, the stem
tfmot's XNNPack policy needs) 2 batches of random data. "layers" counts which pattern each pruned
layer got (a pattern that does not fit a layer leaves it unstructured). Sizes are the raw TFLite
files, stored dense and with the converter's sparse encoding; latency is one example, one thread,
median of 3 interleaved rounds; * marks a file XNNPack refuses (run on LiteRT's built-in kernels).
The blocks are named input x output: TFLite keeps a Dense kernel as (output, input), so its
1x4 blocks along the input are sweep's `4x1`.

{(chr(10) * 2).join(tables)}

Per-layer targets against one sparsity for all layers: the quickstart study ({p['trials']} trials,
`start: baseline`) with `per_layer: false` and `true`, hypervolume of accuracy vs compressed size
(higher is better), {per_seed}; median {p['median']['uniform']:.4f} vs {p['median']['per_layer']:.4f}.
"""


def early_stopping_notes() -> str:
    """Early stopping off vs on (benchmarks/early_stopping.py), and start-up (benchmarks/startup.py)."""
    runs = [json.loads(p.read_text()) for p in sorted(HERE.glob("early_stopping*.json"))]
    if not runs:
        return ""
    rows = []
    for r in runs:
        off, on = r["median"]["off"], r["median"]["on"]
        search = r.get("search", {}).get("end_step")
        epochs = r.get("train", QUICKSTART["train"])["epochs"]
        budget = r["n_trials"] * epochs  # epochs trained without early stopping
        trained = statistics.median(budget - sum(epochs - e for e in on_row["stopped_after_epoch"])
                                    for on_row in r["raw"]["on"]) / budget
        rows.append(f"| {r['study']} ({epochs} epochs{f', end_step {search}' if search else ''}) | {len(r['seeds'])} | "
                    f"{off['trials_seconds']:.1f} / {on['trials_seconds']:.1f} ({on['trials_seconds'] / off['trials_seconds']:.0%}) | "
                    f"{off['hypervolume']:.4f} / {on['hypervolume']:.4f} | {off['hypervolume_at_on_time']:.4f} | {on['stopped']:.1f} of {r['n_trials']} | "
                    f"{trained:.0%} |")
    rerun_note = "".join(
        f" The {r['study']} study ran while test runs at low priority (`nice -n 19`) shared the machine, so its "
        f"wall times are less steady than its epochs; its seed {', '.join(map(str, r['rerun_seeds']))} was run "
        f"again alone (`--seeds`, merged with `--merge`): a longer test run overlapped its first run, which took "
        f"478 s with early stopping against 380 s without."
        for r in runs if r.get("rerun_seeds"))
    start = json.loads((HERE / "startup.json").read_text()) if (HERE / "startup.json").exists() else None
    startup = "" if start is None else f"""
Start-up of `sweep run` (`.venv/bin/python benchmarks/startup.py --before {start['before']} > benchmarks/startup.json`;
{start['rounds']} interleaved rounds, medians, seconds): from launch to the first trial's start, less the dense
baseline's training. The floor is importing TensorFlow with tf_keras and tfmot in a fresh process.

| | TensorFlow import (floor) | fresh folder | existing stores |
| --- | --- | --- | --- |
| before ({start['before']}) | {start['median']['before']['import']:.2f} | {start['median']['before']['fresh']:.2f} | {start['median']['before']['existing']:.2f} |
| after (a new MLflow store created aside while TensorFlow imports) | {start['median']['after']['import']:.2f} | {start['median']['after']['fresh']:.2f} | {start['median']['after']['existing']:.2f} |
"""
    return f"""
## 10. Early stopping, and start-up

```bash
.venv/bin/python benchmarks/early_stopping.py --study quickstart > benchmarks/early_stopping.json
.venv/bin/python benchmarks/early_stopping.py --study recovery > benchmarks/early_stopping-recovery.json
.venv/bin/python benchmarks/early_stopping.py --study heavy > first.json
.venv/bin/python benchmarks/early_stopping.py --study heavy --seeds 5 > rerun.json
.venv/bin/python benchmarks/early_stopping.py --merge first.json rerun.json > benchmarks/early_stopping-heavy.json
```

Each study run with `early_stopping: false` and `true`, seeds interleaved, medians over the seeds.
Wall time is from the first trial's start to the last trial's end (the `--jobs 1` worker's trials);
hypervolume is of accuracy vs compressed size. "at equal time" is the hypervolume the run without
early stopping had reached by the time the run with it ended. "epochs trained" is the epochs the
trials trained with early stopping, as a share of those without it (n_trials x epochs): the compute
saved, in a measure this VM's drifting speed does not blur (a complete trial also converts and
measures its model, 13% of a quickstart trial in section 8; a stopped one does not).{rerun_note}

| study | seeds | wall time s, off / on | hypervolume, off / on | off at equal time | trials stopped | epochs trained, on |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
{startup}"""


def jobs_rows(by_jobs: dict) -> str:
    def cell(v: dict | None) -> str:
        return "" if v is None else f"{v['median_ms'] * 1000:.2f} ({v['min_ms'] * 1000:.2f}-{v['max_ms'] * 1000:.2f}, n={v['n']})"

    kinds = sorted({kind for runs in by_jobs.values() for kind in runs})
    return "\n".join(f"| {kind} | {cell(by_jobs.get('1', {}).get(kind))} | {cell(by_jobs.get('2', {}).get(kind))} |"
                     for kind in kinds)


def sampler_row(r: dict) -> str:
    seeds = sorted(r["hypervolume"])
    command = (f"benchmarks/samplers.py {r['variant']}" + (f" --seeds {' '.join(seeds)}" if seeds != ["0", "1", "2"] else "")
               + (f" --trials {r['trials']}" if r["trials"] != 20 else ""))
    medians = " | ".join(f"{r['median'][n]:.4f}" if n in r["median"] else "" for n in ("10", "20", "40"))
    return f"| `{r['settings']}` | {', '.join(seeds)} | {medians} | `.venv/bin/python {command}` |"


def sampler_notes(e: dict) -> str:
    """Every sampler setting tried against the target (benchmarks/samplers.py, samplers.json),
    and the default against random search on seeds that were not used to choose it."""
    path = HERE / "samplers.json"
    if not path.exists():
        return ""
    results = json.loads(path.read_text())
    rows = "\n".join(sampler_row(r) for r in sorted(results, key=lambda r: -r["median"]["20"]))

    def per_seed(variant: str, budget: int) -> dict[str, float]:
        found = {}
        for r in results:
            if r["variant"] == variant and budget in r["budgets"]:
                found.update({seed: v[r["budgets"].index(budget)] for seed, v in r["hypervolume"].items()})
        return found

    lhs20, tpe20, random40 = per_seed("tpe-lhs", 20), per_seed("tpe", 20), per_seed("random", 40)
    random40 |= {str(i): v for i, v in enumerate(e["raw"]["random"]["40"])}
    fresh = [seed for seed in ("3", "4", "5") if seed in lhs20 and seed in random40 and seed in tpe20]
    median = statistics.median
    fresh_met = median([lhs20[s] for s in fresh]) >= median([random40[s] for s in fresh])
    six_met = median(list(lhs20.values())) >= median(list(random40.values()))
    return f"""
How the default was chosen: `benchmarks/samplers.py` runs the quickstart study with one
sampler setting for a list of seeds; every setting tried, sorted by the median after 20 trials:

| sampler | seeds | after 10 trials | after 20 trials | after 40 trials | command |
| --- | --- | --- | --- | --- | --- |
{rows}

Settings without a start design share their first random trials for a given seed, so their
10-trial column repeats unless they model sooner (`n_startup_trials=5`). On seeds 0-2 the
Latin-hypercube start had the highest median after 10 and after 20 trials. After 20 trials, other TPE settings
(multivariate, a wider "good" quantile, fewer start-up trials) and NSGA-II with a population of 10
did worse than plain TPE; `GPSampler` did a little better than plain TPE but not as well as the
Latin-hypercube start, and as a default it would make every user install PyTorch (by default a
CUDA build of several GB on Linux). The Latin-hypercube start is now the default
(`sweep/search/space.py`, `start_points`; `tests/test_space.py` checks it fills every stratum).

Checked on seeds {', '.join(fresh)}, which were not used to choose it (samplers.py seeds the design from
the study name there, the default from `seed`; the same design otherwise): after 20 trials the
Latin-hypercube start reached a median of {median([lhs20[s] for s in fresh]):.4f}, plain TPE
{median([tpe20[s] for s in fresh]):.4f}, and random search after 40 trials {median([random40[s] for s in fresh]):.4f}.
Over all six seeds 0-5: Latin-hypercube start at 20 trials {median(list(lhs20.values())):.4f},
plain TPE at 20 {median(list(tpe20.values())):.4f}, random search at 40 {median(list(random40.values())):.4f}.

**What bounds it:** the hypervolume of one sampler differs by up to
{max(max(random40.values()) - min(random40.values()), max(lhs20.values()) - min(lhs20.values())):.3f} between seeds
(random search at 40 trials: {min(random40.values()):.3f} to {max(random40.values()):.3f}), several times the
differences between the better settings, so a three-seed median decides the target by chance
as much as by the sampler. The Latin-hypercube start {"meets" if fresh_met else "misses"} the target on seeds
3-5 and {"meets" if six_met else "misses"} it over six seeds; on seeds 0-2, through `sweep run`, the table at
the top says {"met" if e['tpe']['20'] >= e['random']['40'] else "not met"}.
"""


if __name__ == "__main__":
    main()
