"""Sampler settings against the sample-efficiency target: hypervolume of the quickstart
study after 10, 20 (and 40) trials, for one sampler variant and a list of seeds. Results
go to benchmarks/samplers.json (one entry per variant and trial budget); run.py's README
section lists them next to the default and random search.

    .venv/bin/python benchmarks/samplers.py VARIANT [--seeds 0 1 2] [--trials 20]

VARIANT is one of the names in VARIANTS below; `gp` needs PyTorch importable. Variants
without a start design begin with their sampler's own random trials ("tpe" is plain
TPESampler). "tpe-lhs" is the start design sweep now uses by default, with its points seeded
from the study name here; sweep seeds them from the study's `seed` (`sweep.search.space.start_points`),
and run.py measures that default through the command line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from sweep.config import StudyConfig, parse_study_config
from sweep.results.pareto import hypervolume, trial_table
from sweep.study import runner

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent


def _quarter(n: int) -> int:
    """TPE's split: the best quarter of the trials is "good" (Optuna's default: a tenth)."""
    return min(math.ceil(0.25 * n), 25)


Sampler = Callable[[int], optuna.samplers.BaseSampler]
VARIANTS: dict[str, tuple[str, Sampler]] = {
    "tpe": ("TPESampler()", lambda seed: optuna.samplers.TPESampler(seed=seed)),
    "random": ("RandomSampler()", lambda seed: optuna.samplers.RandomSampler(seed=seed)),
    "multivariate": ("TPESampler(multivariate=True, group=True)",
                     lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)),
    "startup5": ("TPESampler(multivariate=True, group=True, n_startup_trials=5)",
                 lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=5)),
    "tpe-startup5": ("TPESampler(n_startup_trials=5)",
                     lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)),
    "tpe-gamma25": ("TPESampler(gamma=25% of trials)",
                    lambda seed: optuna.samplers.TPESampler(seed=seed, gamma=_quarter)),
    "tpe-startup5-gamma25": ("TPESampler(n_startup_trials=5, gamma=25% of trials)",
                             lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=5, gamma=_quarter)),
    "gp-startup5": ("GPSampler(n_startup_trials=5)", lambda seed: optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)),
    "tpe-stratified": ("TPESampler() after 10 start-up trials stratified over final_sparsity and schedule",
                       lambda seed: optuna.samplers.TPESampler(seed=seed)),
    "tpe-lhs": ("TPESampler() after 10 Latin-hypercube start-up trials",
                lambda seed: optuna.samplers.TPESampler(seed=seed)),
    "tpe-lhs6": ("TPESampler(n_startup_trials=6) after 6 Latin-hypercube start-up trials",
                 lambda seed: optuna.samplers.TPESampler(seed=seed, n_startup_trials=6)),
    "tpe-lhs-multivariate": ("TPESampler(multivariate=True) after 10 Latin-hypercube start-up trials",
                             lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True)),
    "gp-stratified": ("GPSampler() after 10 start-up trials stratified over final_sparsity and schedule",
                      lambda seed: optuna.samplers.GPSampler(seed=seed)),
    "nsga2-pop10": ("NSGAIISampler(population_size=10)",
                    lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=10)),
    "gp": ("GPSampler()", lambda seed: optuna.samplers.GPSampler(seed=seed)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    settings, factory = VARIANTS[args.variant]


    def start(config: StudyConfig) -> list[dict[str, Any]]:  # each variant brings its own start (or none)
        if "stratified" in args.variant or "lhs" in args.variant:
            return start_points(args.variant, zlib.crc32(config.name.encode()), 6 if args.variant == "tpe-lhs6" else 10)
        return []
    quickstart = yaml.safe_load((HERE.parent / "studies" / "quickstart.yaml").read_text())
    quickstart["model"] = {**quickstart.get("model", {}), "start": "scratch"}  # as measured before model.start
    budgets = [n for n in (10, 20, 40) if n <= args.trials]
    volumes: dict[int, list[float]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as folder:
            config = parse_study_config({**quickstart, "name": f"sampler-{seed}", "seed": seed, "n_trials": args.trials})
            study = runner.run_study(runner.RunRequest(config, f"sqlite:///{folder}/sweep.db", f"sqlite:///{folder}/mlflow.db",
                                                       sampler=factory, start_points=start))
            done = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number)
            volumes[seed] = [hypervolume(trial_table(done[:n]), config.objectives, study.user_attrs["baseline"]) for n in budgets]
            print(args.variant, seed, volumes[seed], flush=True)
    result = {
        "variant": args.variant, "settings": settings, "trials": args.trials, "budgets": budgets,
        "hypervolume": {str(seed): v for seed, v in volumes.items()},
        "median": {str(n): statistics.median(v[i] for v in volumes.values()) for i, n in enumerate(budgets)},
    }
    path = HERE / "samplers.json"
    results = json.loads(path.read_text()) if path.exists() else []
    keep = [r for r in results if (r["variant"], r.get("trials", 20), sorted(r.get("hypervolume", {})))
            != (args.variant, args.trials, sorted(result["hypervolume"]))]
    path.write_text(json.dumps(keep + [result], indent=2))
    print(json.dumps(result))


def start_points(variant: str, seed: int, n: int = 10) -> list[dict[str, Any]]:
    """Start-up trials: final_sparsity in n strata and schedules in turn ("stratified"), or a
    Latin hypercube over every shared numeric parameter of the default search space ("lhs")."""
    from scipy.stats import qmc

    rng = np.random.default_rng(seed)
    schedules = ["polynomial", "constant", "step"]
    if "stratified" in variant:
        return [{"schedule": schedules[k % 3], "final_sparsity": 0.5 + 0.45 * (stratum + rng.random()) / n}
                for k, stratum in enumerate(rng.permutation(n))]
    unit = qmc.LatinHypercube(d=5, seed=rng).random(n)
    return [{"schedule": schedules[k % 3], "final_sparsity": 0.5 + 0.45 * u[0], "begin_step": 0.3 * u[1],
             "end_step": 0.5 + 0.5 * u[2], "frequency": int(5 + 46 * u[3]), "weight_decay": float(10 ** (-6 + 4 * u[4]))}
            for k, u in enumerate(unit)]


if __name__ == "__main__":
    main()
