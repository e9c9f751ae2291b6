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
(`early_judgement.py`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from scipy.stats import kendalltau

from sweep.optuna_private import domination_ranks


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
    args = parser.parse_args()
    seeds = {seed: budget_metrics(args.study / f"off-{seed}", args.budgets) for seed in args.seeds}
    agreement = {str(b): {key: statistics.median(taus(s["trials"], str(b))[key] for s in seeds.values())
                          for key in ("tau_rank", "tau_accuracy")} for b in args.budgets}
    json.dump({"study": args.study.name, "seeds": args.seeds, "median": agreement, "raw": seeds}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
