"""Sampler settings against the sample-efficiency target: hypervolume of the quickstart
study after 10 and 20 trials for one TPE variant, seeds 0, 1, 2 (compare with run.py's
random search at 40 trials). Appends its result to benchmarks/samplers.json.

    .venv/bin/python benchmarks/samplers.py multivariate      # TPE(multivariate=True, group=True)
    .venv/bin/python benchmarks/samplers.py startup5          # TPE(n_startup_trials=5, multivariate, group)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import optuna
import yaml

import sweep.runner as runner
from sweep.config import parse_study_config
from sweep.pareto import hypervolume

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent
VARIANTS = {
    "multivariate": dict(multivariate=True, group=True),
    "startup5": dict(multivariate=True, group=True, n_startup_trials=5),
}


def main() -> None:
    variant = sys.argv[1]

    def make_sampler(name: str, seed: int, offset: int = 0, worker: int = 0) -> optuna.samplers.BaseSampler:
        sampler_seed = int(np.random.SeedSequence([seed, offset, worker]).generate_state(1)[0])
        return optuna.samplers.TPESampler(seed=sampler_seed, **VARIANTS[variant])

    runner.make_sampler = make_sampler
    quickstart = yaml.safe_load((HERE.parent / "studies" / "quickstart.yaml").read_text())
    volumes = {}
    for seed in (0, 1, 2):
        with tempfile.TemporaryDirectory() as folder:
            config = parse_study_config({**quickstart, "name": f"sampler-{seed}", "seed": seed, "n_trials": 20})
            study = runner.run_study(runner.RunRequest(config, f"sqlite:///{folder}/sweep.db", f"sqlite:///{folder}/mlflow.db"))
            done = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
            volumes[seed] = [hypervolume(done[:n], config.objectives, study.user_attrs["baseline"]) for n in (10, 20)]
    result = {"variant": variant, "settings": VARIANTS[variant], "hypervolume_at_10_20": volumes,
              "median_at_20": statistics.median(v[1] for v in volumes.values())}
    path = HERE / "samplers.json"
    results = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([r for r in results if r["variant"] != variant] + [result], indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
