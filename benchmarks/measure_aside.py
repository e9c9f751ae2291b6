"""What `sweep run --measure-aside` gains or costs on this machine (2 cores, no GPU): the
set-up of `trial_cost.py` (MobileNetV2 alpha 0.35 as `model.pretrained`, 1 fine-tuning epoch
per trial, objectives `[int8_accuracy, int8_size]`), run with and without the flag in
interleaved rounds. Writes JSON to stdout:

    .venv/bin/python benchmarks/measure_aside.py > benchmarks/measure_aside.json

Per run: the seconds from the first trial's start to the last trial's completion, per trial
(start-up and the front's later measurement left out), and each trial's training and
measuring seconds (`user_attrs["timings"]`: in the worker, or `aside_*` in the measuring
process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
from trial_cost import LOADER, MEASURING, OBJECTIVES, TRAIN, study

WAYS = {"in the worker": [], "--measure-aside": ["--measure-aside"]}


def run(folder: Path, name: str, flags: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    subprocess.run([sys.executable, "-m", "sweep", "run", "study.yaml", *flags], cwd=folder, env=env,
                   capture_output=True, text=True, check=True)
    trials = [t for t in optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'sweep.db'}").trials
              if t.state.name == "COMPLETE"]
    span = max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)
    timings = [t.user_attrs["timings"] for t in trials]
    return {
        "seconds_per_trial": span.total_seconds() / len(trials),
        "train": [t["train"] for t in timings],
        "measure": [sum(v for k, v in t.items() if k in MEASURING or k.startswith("aside_")) for t in timings],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="measure-aside-"))
    (work / "loader.py").write_text(LOADER)
    subprocess.run([sys.executable, "-c", TRAIN], cwd=work, capture_output=True, text=True, check=True)
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for round_ in range(args.rounds):
        for way, flags in WAYS.items():
            name = f"{'aside' if flags else 'worker'}-{round_}"
            runs[way].append(run(study(work, name, OBJECTIVES["int8"], args.trials, "freeze"), name, flags))
    summary = {way: {
        "seconds_per_trial_median": statistics.median(r["seconds_per_trial"] for r in done),
        "train_median": statistics.median(v for r in done for v in r["train"]),
        "measure_median": statistics.median(v for r in done for v in r["measure"]),
    } for way, done in runs.items()}
    json.dump({"summary": summary, "raw": runs}, sys.stdout, indent=2)


if __name__ == "__main__":
    main()
