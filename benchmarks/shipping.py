"""What measuring the shipped model costs, and how steady its latency is (issue 12).

    .venv/bin/python benchmarks/shipping.py      # about 3 minutes on 2 cores

1. The quickstart study (20 trials), run by the real `sweep run` in a temporary folder:
   the time each trial spends on the int8 file and the latencies (`timings` phases
   `latency`, `int8_convert`, `int8_evaluate`) against the rest of the trial, and how far
   int8 accuracy falls from float accuracy on the Pareto front.
2. The front's most accurate trial, rerun and exported: its `model.tflite` and
   `model_int8.tflite` timed 10 times in a row, as `sweep` times them (`sweep.modeling.tflite.Runner`).
3. The same study with `--jobs 2` (two workers on the 2 cores): the trials' latencies, by
   kind of file (float; int8 run by XNNPack; int8 stored sparse), against the `--jobs 1` run's.
Prints JSON; benchmarks/README.md quotes it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import yaml

HERE = Path(__file__).resolve().parent
NEW_PHASES = ("latency", "int8_convert", "int8_evaluate")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        study = yaml.safe_load((HERE.parent / "studies" / "quickstart.yaml").read_text())
        (work / "q.yaml").write_text(yaml.safe_dump(study))
        (work / "jobs").mkdir()
        (work / "jobs" / "q.yaml").write_text(yaml.safe_dump(study))
        for command, folder in ((["run", "q.yaml"], work), (["rerun", "q.yaml", "--best", "--output", "export"], work),
                                (["run", "q.yaml", "--jobs", "2"], work / "jobs")):
            subprocess.run([sys.executable, "-m", "sweep", *command], cwd=folder, check=True, capture_output=True)
        loaded = optuna.load_study(study_name=study["name"], storage=f"sqlite:///{work}/sweep.db")
        trials = [t for t in loaded.trials if t.state.name == "COMPLETE"]
        added = [sum(t.user_attrs["timings"][p] for p in NEW_PHASES) for t in trials]
        walls = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
        rest = [w - a for w, a in zip(walls, added, strict=True)]
        front = loaded.best_trials
        drops = [t.user_attrs["metrics"]["val_accuracy"] - t.user_attrs["metrics"]["int8_val_accuracy"] for t in front]

        from sweep.config import DataConfig
        from sweep.data.datasets import load_dataset
        from sweep.modeling.tflite import Runner

        example = load_dataset(DataConfig()).test.first_inputs(1)[0]
        spread = {}
        for name in ("model.tflite", "model_int8.tflite"):
            runner = Runner((work / "export" / name).read_bytes())
            medians = [runner.latency_ms(example)[0] for _ in range(10)]
            spread[name] = {"xnnpack": runner.xnnpack, "medians_ms": medians,
                            "min_ms": min(medians), "max_ms": max(medians), "median_ms": statistics.median(medians)}
        by_jobs = {}
        for jobs, folder in (("1", work), ("2", work / "jobs")):
            done = [t.user_attrs["metrics"] for t in optuna.load_study(
                study_name=study["name"], storage=f"sqlite:///{folder}/sweep.db").trials if t.state.name == "COMPLETE"]
            kinds = {"float": [m["latency_ms"] for m in done],
                     "int8 on XNNPack": [m["int8_latency_ms"] for m in done if m["int8_xnnpack"]],
                     "int8 stored sparse": [m["int8_latency_ms"] for m in done if not m["int8_xnnpack"]]}
            by_jobs[jobs] = {kind: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v), "n": len(v)}
                             for kind, v in kinds.items() if v}
    print(json.dumps({
        "trials": len(trials),
        "median_added_seconds": statistics.median(added),
        "median_rest_of_trial_seconds": statistics.median(rest),
        "added_fraction": statistics.median(added) / statistics.median(rest),
        "front_int8_accuracy_drop": {"max": max(drops), "median": statistics.median(drops), "n": len(drops)},
        "latency_10_times": spread,
        "latency_by_jobs": by_jobs,
    }, indent=2))


if __name__ == "__main__":
    main()
