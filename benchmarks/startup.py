"""Start-up of `sweep run`, measured against TensorFlow's import (the floor) and against an
older version of sweep. Writes JSON to stdout:

    .venv/bin/python benchmarks/startup.py --before <commit> > benchmarks/startup.json

For each round (interleaved: this VM's speed drifts), in fresh processes:

* `tensorflow`: `python -c "import tensorflow, tf_keras, tensorflow_model_optimization"` (with
  TF_USE_LEGACY_KERAS=1, as `sweep._tf` sets it): the same code for both versions, the floor;
* `import`: `python -c "import sweep._tf"`, TensorFlow as sweep imports it;
* `fresh`: `sweep run` of the quickstart cut to 1 trial in an empty folder, from launch to
  the first trial's start, minus the dense baseline's training (stores, study, parent run
  created; TensorFlow imported; data loaded; model checked);
* `existing`: `sweep run --n-trials 1` again in that folder, from launch to the trial's
  start (stores and baseline found);

each with this checkout and with `--before` (a `git worktree` of that commit, run with the
same virtualenv). Before the rounds, `help`: `python -m sweep --help`, `--help-runs` times
each, interleaved (its median is what `/usr/bin/time -f %e .venv/bin/sweep --help` shows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
QUICKSTART = yaml.safe_load((REPO / "studies" / "quickstart.yaml").read_text())


def sweep_run(code: Path, folder: Path, *args: str) -> datetime:
    env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = str(code)
    launched = datetime.now()
    subprocess.run([sys.executable, "-m", "sweep", "run", "startup.yaml", *args], cwd=folder, env=env,
                   check=True, capture_output=True)
    return launched


def seconds(code: Path, *args: str, **env: str) -> float:
    clock = time.perf_counter()
    subprocess.run([sys.executable, *args], env={**os.environ, "PYTHONPATH": str(code), **env},
                   check=True, capture_output=True)
    return time.perf_counter() - clock


def measure(code: Path, work: Path) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(dir=work))
    (folder / "startup.yaml").write_text(yaml.safe_dump({**QUICKSTART, "name": "startup", "n_trials": 1}))
    tensorflow = seconds(code, "-c", "import tensorflow, tf_keras, tensorflow_model_optimization",
                         TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    floor = seconds(code, "-c", "import sweep._tf")
    launched = sweep_run(code, folder)
    study = optuna.load_study(study_name="startup", storage=f"sqlite:///{folder / 'sweep.db'}")
    fresh = (study.trials[0].datetime_start - launched).total_seconds() - study.user_attrs["baseline"]["train_seconds"]
    launched = sweep_run(code, folder, "--n-trials", "1")
    study = optuna.load_study(study_name="startup", storage=f"sqlite:///{folder / 'sweep.db'}")
    existing = (study.trials[-1].datetime_start - launched).total_seconds()
    return {"tensorflow": tensorflow, "import": floor, "fresh": fresh, "existing": existing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--help-runs", type=int, default=10)
    args = parser.parse_args()
    raw: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    helps: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = work / "before"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(before), args.before],
                       check=True, capture_output=True)
        try:
            for _ in range(args.help_runs):
                for version, code in (("before", before), ("after", REPO)):
                    helps[version].append(seconds(code, "-m", "sweep", "--help"))
            print("help", {version: statistics.median(runs) for version, runs in helps.items()}, file=sys.stderr)
            for _ in range(args.rounds):
                for version, code in (("before", before), ("after", REPO)):
                    raw[version].append(measure(code, work))
                    print(version, raw[version][-1], file=sys.stderr, flush=True)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], check=False)
    median = {version: {"help": statistics.median(helps[version]),
                        **{key: statistics.median(r[key] for r in rows) for key in rows[0]}}
              for version, rows in raw.items()}
    json.dump({"before": args.before, "rounds": args.rounds, "help_runs": args.help_runs, "median": median,
               "raw": raw, "help": helps}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
