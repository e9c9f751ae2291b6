"""Early stopping, measured: a study's wall time and hypervolume with `early_stopping` off
and on, seeds interleaved. Writes JSON to stdout:

    .venv/bin/python benchmarks/early_stopping.py > benchmarks/early_stopping.json
    .venv/bin/python benchmarks/early_stopping.py --study heavy --seeds 0 1 2 3 4 5
    .venv/bin/python benchmarks/early_stopping.py --study pretrained --arms off --keep runs/pretrained
    .venv/bin/python benchmarks/early_stopping.py --study pretrained --arms on --rule planned --keep runs/pretrained

Studies: `quickstart` (studies/quickstart.yaml, 20 trials of 8 epochs), `heavy` (the
same CNN, 12 epochs, 30 trials), `recovery` (the quickstart with `end_step: [0.35,
0.7]`, so pruning ends before the last 30% of training) and `pretrained`
(studies/pretrained/study.yaml: the user's own model, 12 trials of 4 epochs).
`--keep DIR` keeps each arm's stores and writes its `trials.json` there: every trial's
state, params, plan, metrics and per-epoch curves (from MLflow, stopped trials too), what
`early_judgement.py` replays. For each seed and arm: the whole `sweep run`'s wall
time, the hypervolume of accuracy vs compressed size at the end, the trials stopped, and
the hypervolume of the trials finished by each point in time (from the trials' own end
times), so the two arms can be compared at equal wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import HERE, QUICKSTART, load, machine, study_file, sweep

STUDIES = {
    "quickstart": {"n_trials": 20},
    "heavy": {"n_trials": 30, "train": {**QUICKSTART["train"], "epochs": 12}},
    # pruning ends by 70% of training, leaving recovery epochs (and earlier rungs)
    "recovery": {"n_trials": 20, "search": {**QUICKSTART["search"], "end_step": [0.35, 0.7]}},
    "pretrained": {"n_trials": 12},
}
PRETRAINED = HERE.parent / "studies" / "pretrained"
CURVES = ("val_accuracy", "mask_sparsity")


def write_study(folder: Path, study: str, name: str, seed: int, early: bool | str) -> Path:
    if study != "pretrained":
        return study_file(folder, name, seed=seed, early_stopping=early, model={"builder": "cnn"}, **STUDIES[study])
    for file in ("loader.py", "train_model.py"):
        shutil.copy(PRETRAINED / file, folder)
    subprocess.run([sys.executable, str(folder / "train_model.py")], cwd=folder, check=True, capture_output=True)
    config = yaml.safe_load((PRETRAINED / "study.yaml").read_text())
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**config, "name": name, "seed": seed, "early_stopping": early}, sort_keys=False))
    return path


def trial_records(folder: Path, optuna_study: Any) -> list[dict[str, Any]]:
    """Each trial as the replay needs it, with its curves read back from MLflow."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    rows = []
    for trial in optuna_study.trials:
        run_id = trial.user_attrs.get("mlflow_run_id")
        history = {key: sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
                   for key in CURVES} if run_id else {}
        # one value per epoch trained; a complete trial also logs its final val_accuracy at step `epochs`
        epochs = len(history.get("mask_sparsity", []))
        curves = {key: [m.value for m in metrics if m.step < epochs] for key, metrics in history.items()}
        rows.append({"number": trial.number, "state": trial.state.name, "params": trial.params,
                     "plan": trial.user_attrs.get("plan"), "metrics": trial.user_attrs.get("metrics"),
                     "early_stopped": trial.user_attrs.get("early_stopped"), "curves": curves})
    return rows


def run_arm(folder: Path, study: str, seed: int, early: bool | str) -> dict[str, Any]:
    from optuna.trial import TrialState

    from sweep.results.pareto import hypervolume, trial_table

    name = f"{study}-{'on' if early else 'off'}-{seed}"
    path = write_study(folder, study, name, seed, early)
    clock = time.perf_counter()
    sweep("run", str(path), cwd=folder)
    seconds = time.perf_counter() - clock
    optuna_study = load(folder, name)
    baseline = optuna_study.user_attrs["baseline"]
    objectives = optuna_study.user_attrs["objectives"]
    records = trial_records(folder, optuna_study)
    (folder / "trials.json").write_text(json.dumps({"baseline": baseline, "objectives": objectives,
                                                    "trials": records}))
    trials = optuna_study.trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    started = min(t.datetime_start for t in trials)
    by_time = []  # (seconds since the first trial started, hypervolume of the trials complete by then)
    for trial in sorted(complete, key=lambda t: t.datetime_complete):
        done = [t for t in complete if t.datetime_complete <= trial.datetime_complete]
        by_time.append(((trial.datetime_complete - started).total_seconds(),
                        hypervolume(trial_table(done), objectives, baseline)))
    return {
        "run_seconds": seconds,
        "trials_seconds": (max(t.datetime_complete for t in trials) - started).total_seconds(),
        "hypervolume": by_time[-1][1] if by_time else 0.0,
        "stopped": sum(t.state == TrialState.PRUNED for t in trials),
        "stopped_after_epoch": sorted(t.user_attrs.get("early_stopped", 0) for t in trials if t.state == TrialState.PRUNED),
        "hypervolume_by_time": by_time,
        "epochs": sum(len(row["curves"].get("mask_sparsity", [])) for row in records),
    }


def at_time(curve: list[list[float]], seconds: float) -> float:
    """The hypervolume reached by `seconds` after the first trial started."""
    return max((hv for t, hv in curve if t <= seconds), default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", choices=list(STUDIES), default="quickstart")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--arms", choices=["off", "on"], nargs="+", default=["off", "on"])
    parser.add_argument("--rule", choices=["pruned", "planned"], default="pruned",
                        help="the on arm's early_stopping rule (default pruned, what true means)")
    parser.add_argument("--keep", type=Path, help="keep each arm's stores and trials.json in DIR/<arm>-<seed>")
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
    raw: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for arm in args.arms:  # interleaved: this VM's speed drifts between spells
                folder = (args.keep or Path(tmp)) / f"{arm}-{seed}"
                folder.mkdir(parents=True)
                raw[arm].append(run_arm(folder, args.study, seed, args.rule if arm == "on" else False))
                row = raw[arm][-1]
                print(f"seed {seed} {arm}: {row['trials_seconds']:.0f} s, hypervolume {row['hypervolume']:.4f}, "
                      f"{row['stopped']} stopped", file=sys.stderr, flush=True)
    summarise(args.study, args.seeds, raw)


def summarise(study: str, seeds: list[int], raw: dict[str, list[dict]], **notes: object) -> None:
    """Medians over the seeds, as JSON on stdout."""
    # equal wall time: the hypervolume early stopping reached by the end, and what the run
    # without it had reached by the same time
    equal_time = [at_time(off["hypervolume_by_time"], on["trials_seconds"])
                  for off, on in zip(raw["off"], raw["on"], strict=True)] if len(raw) == 2 else []
    summary = {
        arm: {key: statistics.median(row[key] for row in rows)
              for key in ("run_seconds", "trials_seconds", "hypervolume", "stopped", "epochs")}
        for arm, rows in raw.items()
    }
    if equal_time:
        summary["off"]["hypervolume_at_on_time"] = statistics.median(equal_time)
    json.dump({"machine": machine(), "study": study, "seeds": seeds, **STUDIES[study], **notes,
               "median": summary, "raw": raw, "off_hypervolume_at_on_time": equal_time}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
