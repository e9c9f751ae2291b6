"""Budget-scaled schedules, measured before anything is built: how well a trial trained for
fewer epochs, its pruning schedule scaled with them (begin, end and frequency are fractions
of training), ranks against the same trial trained in full. Writes JSON to stdout:

    .venv/bin/python benchmarks/scaled_budgets.py runs/quickstart --seeds 0 1 2 --budgets 1 3

For each recorded full search (`early_stopping.py --arms off --keep`; the trials' own seeds
and starting weights, read from the stores) every complete trial is trained again with
`train.epochs` set to each budget, through `train_and_measure` as `sweep rerun` does. Kendall's
tau-b between the budget's and the full run's non-domination ranks by (val_accuracy,
compressed_bytes), and between their accuracies alone. Successive halving over budgets (b in
docs/design/early-judgement.md) only pays if these beat the rung's agreement at equal epochs
(`early_judgement.py`); `halving` replays it on these trainings. `--again OUTPUT` summarises an
earlier output's trainings again, without training.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from scipy.stats import kendalltau

from sweep.optuna_private import domination_ranks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_judgement import load, volume


def budget_metrics(folder: Path, budgets: list[int]) -> dict[str, Any]:
    import optuna
    from optuna.trial import TrialState

    from sweep.config import parse_study_config
    from sweep.data.datasets import load_dataset
    from sweep.modeling.metrics import trial_groups
    from sweep.modeling.train_and_measure import train_and_measure
    from sweep.modeling.training import configure_tensorflow
    from sweep.search.trial_plan import trial_plan
    from sweep.stores import records
    from sweep.stores.tracking import Tracker
    from sweep.study.baseline import start_weights

    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{folder / 'sweep.db'}")[0],
                              storage=f"sqlite:///{folder / 'sweep.db'}")
    config = parse_study_config(records.stored_config(study), base_dir=folder)
    configure_tensorflow(1)
    dataset = load_dataset(config.data)
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}", study.study_name)
    rows = []
    with tempfile.TemporaryDirectory() as downloads:
        weights = start_weights(study, tracker, config, downloads)
        for trial in study.get_trials(states=(TrialState.COMPLETE,)):
            row = {"number": trial.number, "full": {k: records.trial_metrics(trial)[k]
                                                    for k in ("val_accuracy", "compressed_bytes")}}
            for budget in budgets:
                scaled = config.model_copy(update={"train": config.train.model_copy(update={"epochs": budget})})
                params, plan = trial_plan(optuna.trial.FixedTrial(trial.params), scaled.search,
                                          dataset.total_steps(scaled.train))
                metrics = train_and_measure(dataset, scaled, records.seed(trial), groups=trial_groups(scaled),
                                            params=params, plan=plan, baseline=records.baseline(study),
                                            start_weights=weights).metrics
                row[str(budget)] = {k: metrics[k] for k in ("val_accuracy", "compressed_bytes")}
            rows.append(row)
            print(f"{folder.name} trial {trial.number}", file=sys.stderr, flush=True)
    return {"epochs": config.train.epochs, "trials": rows}


def halving(folder: Path, rows: list[dict[str, Any]], budget: str, eta: int = 3) -> dict[str, float]:
    """Successive halving over budgets, replayed: every configuration at `budget` epochs, the
    best 1/`eta` by non-domination rank of (accuracy there, planned sparsity; the rank at the
    cutoff goes on whole, as at a rung) again in full. Epochs as a share of the full search's,
    and the kept trials' hypervolume less the full search's."""
    data, trials, epochs = load(folder)
    by_number = {t.number: t for t in trials}
    ranks = domination_ranks([[-r[budget]["val_accuracy"], -by_number[r["number"]].planned] for r in rows])
    cutoff = sorted(ranks)[math.ceil(len(ranks) / eta) - 1]
    kept = [by_number[r["number"]] for r, rank in zip(rows, ranks, strict=True) if rank <= cutoff]
    return {"epochs_share": (len(rows) * int(budget) + len(kept) * epochs) / (len(trials) * epochs),
            "hv_gap": volume(kept, data) - volume(trials, data), "kept": len(kept)}


def taus(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    ranks = [domination_ranks([[-r[k]["val_accuracy"], r[k]["compressed_bytes"]] for r in rows]) for k in (key, "full")]
    return {"tau_rank": kendalltau(*ranks).statistic,
            "tau_accuracy": kendalltau([r[key]["val_accuracy"] for r in rows],
                                       [r["full"]["val_accuracy"] for r in rows]).statistic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="a --keep folder of early_stopping.py")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--again", type=Path, help="summarise this earlier output's trainings again")
    args = parser.parse_args()
    if args.again:
        seeds = {int(seed): row for seed, row in json.loads(args.again.read_text())["raw"].items()}
    else:
        seeds = {seed: budget_metrics(args.study / f"off-{seed}", args.budgets) for seed in args.seeds}
    agreement = {str(b): {key: statistics.median(taus(s["trials"], str(b))[key] for s in seeds.values())
                          for key in ("tau_rank", "tau_accuracy")} for b in args.budgets}
    halved = {str(b): {seed: halving(args.study / f"off-{seed}", s["trials"], str(b)) for seed, s in seeds.items()}
              for b in args.budgets}
    json.dump({"study": args.study.name, "seeds": list(seeds), "median": agreement, "halving": halved, "raw": seeds},
              sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
