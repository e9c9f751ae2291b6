"""Early stopping, measured: a study's wall time and hypervolume with `early_stopping` off
and on, seeds interleaved. Writes JSON to stdout:

    .venv/bin/python benchmarks/early_stopping.py > benchmarks/early_stopping.json
    .venv/bin/python benchmarks/early_stopping.py --study heavy --seeds 0 1 2 3 4 5

Studies: `quickstart` (studies/quickstart.yaml, 20 trials of 8 epochs), `heavy` (the
same CNN, 12 epochs, 30 trials) and `recovery` (the quickstart with `end_step: [0.35,
0.7]`, so pruning ends before the last 30% of training). For each seed and arm: the whole `sweep run`'s wall
time, the hypervolume of accuracy vs compressed size at the end, the trials stopped, and
the hypervolume of the trials finished by each point in time (from the trials' own end
times), so the two arms can be compared at equal wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import QUICKSTART, load, machine, study_file, sweep

STUDIES = {
    "quickstart": {"n_trials": 20},
    "heavy": {"n_trials": 30, "train": {**QUICKSTART["train"], "epochs": 12}},
    # pruning ends by 70% of training, leaving recovery epochs (and earlier rungs)
    "recovery": {"n_trials": 20, "search": {**QUICKSTART["search"], "end_step": [0.35, 0.7]}},
}


def run_arm(folder: Path, study: str, seed: int, early: bool) -> dict[str, Any]:
    from optuna.trial import TrialState

    from sweep.results.pareto import hypervolume, trial_table

    name = f"{study}-{'on' if early else 'off'}-{seed}"
    path = study_file(folder, name, seed=seed, early_stopping=early, model={"builder": "cnn"}, **STUDIES[study])
    clock = time.perf_counter()
    sweep("run", str(path), cwd=folder)
    seconds = time.perf_counter() - clock
    optuna_study = load(folder, name)
    baseline = optuna_study.user_attrs["baseline"]
    trials = optuna_study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    started = min(t.datetime_start for t in trials)
    by_time = []  # (seconds since the first trial started, hypervolume of the trials complete by then)
    for trial in sorted(complete, key=lambda t: t.datetime_complete):
        done = [t for t in complete if t.datetime_complete <= trial.datetime_complete]
        by_time.append(((trial.datetime_complete - started).total_seconds(),
                        hypervolume(trial_table(done), QUICKSTART["objectives"], baseline)))
    return {
        "run_seconds": seconds,
        "trials_seconds": (max(t.datetime_complete for t in trials) - started).total_seconds(),
        "hypervolume": by_time[-1][1] if by_time else 0.0,
        "stopped": sum(t.state == TrialState.PRUNED for t in trials),
        "stopped_after_epoch": sorted(t.user_attrs.get("early_stopped", 0) for t in trials if t.state == TrialState.PRUNED),
        "hypervolume_by_time": by_time,
    }


def at_time(curve: list[list[float]], seconds: float) -> float:
    """The hypervolume reached by `seconds` after the first trial started."""
    return max((hv for t, hv in curve if t <= seconds), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=list(STUDIES), default="quickstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--merge", nargs=2, metavar=("RUN", "RERUN"),
                        help="write RUN's results with the seeds RERUN ran (alone, --seeds) in place of its own")
    args = parser.parse_args()
    if args.merge:
        run, rerun = (json.loads(Path(path).read_text()) for path in args.merge)
        for arm in ("off", "on"):
            for seed, row in zip(rerun["seeds"], rerun["raw"][arm], strict=True):
                run["raw"][arm][run["seeds"].index(seed)] = row
        summarise(run["study"], run["seeds"], run["raw"], rerun_seeds=rerun["seeds"])
        return
    raw: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm in ("off", "on"):  # interleaved: this VM's speed drifts between spells
                folder = Path(tmp) / f"{arm}-{seed}"
                folder.mkdir()
                raw[arm].append(run_arm(folder, args.study, seed, arm == "on"))
                row = raw[arm][-1]
                print(f"seed {seed} {arm}: {row['trials_seconds']:.0f} s, hypervolume {row['hypervolume']:.4f}, "
                      f"{row['stopped']} stopped", file=sys.stderr, flush=True)
    summarise(args.study, args.seeds, raw)


def summarise(study: str, seeds: list[int], raw: dict[str, list[dict]], **notes: object) -> None:
    """Medians over the seeds, as JSON on stdout."""
    # equal wall time: the hypervolume early stopping reached by the end, and what the run
    # without it had reached by the same time
    equal_time = [at_time(off["hypervolume_by_time"], on["trials_seconds"]) for off, on in zip(raw["off"], raw["on"], strict=True)]
    summary = {
        arm: {key: statistics.median(row[key] for row in rows)
              for key in ("run_seconds", "trials_seconds", "hypervolume", "stopped")}
        for arm, rows in raw.items()
    }
    summary["off"]["hypervolume_at_on_time"] = statistics.median(equal_time)
    json.dump({"machine": machine(), "study": study, "seeds": seeds, **STUDIES[study], **notes,
               "median": summary, "raw": raw, "off_hypervolume_at_on_time": equal_time}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
