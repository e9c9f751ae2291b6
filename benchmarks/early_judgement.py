"""Judging trials early, replayed offline on recorded full searches (no TensorFlow, seconds):

    .venv/bin/python benchmarks/early_stopping.py --study quickstart --arms off --keep runs/quickstart
    .venv/bin/python benchmarks/early_judgement.py runs/quickstart runs/heavy runs/pretrained

Training is deterministic, so a full trial's first e epochs are what it would have shown had
it been stopped after e: replaying a stopping rule over a full search (`--jobs 1`, trials in
number order, each judged against the earlier trials' records at the same epoch) gives each
trial's fate as the live rule would, with two simplifications: the planned sparsity is the
trial's final mask sparsity (the plan, to tfmot's rounding), and no `min_accuracy` floor (the
recorded studies have none). What a replay cannot show is the sampler's reaction to stopped
trials (the live arms, `early_stopping.py --arms on`, do: `live` below).

For each recorded study and rule: the epochs trained as a share of the full search's, the
hypervolume of the trials kept to the end against the full search's, and the full search's
hypervolume at equal epochs (its first trials); medians over the seeds. Rank agreement: for
each epoch, Kendall's tau-b between the non-domination ranks by (val_accuracy so far, planned
sparsity) and by the final (val_accuracy, compressed_bytes), and between the accuracy so far
and the final accuracy (the honest one: both rankings share the size axis).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import kendalltau

from sweep.optuna_private import domination_ranks
from sweep.results.pareto import hypervolume
from sweep.search import early_stopping


@dataclass(frozen=True)
class Rule:
    """R0 (`size="mask"`): today's rule, judged from the end of a trial's pruning window.
    Otherwise judged after the epochs `rungs` (fractions of training) by accuracy so far and
    the planned sparsity, with the pruning progress as a third loss (`progress`) or only
    once it reached `min_progress`."""

    size: str = "planned"
    rungs: tuple[float, ...] = (0.25,)
    eta: int = 3
    min_trials: int = 6
    progress: bool = False
    min_progress: float = 0.0
    then_pruned: bool = False  # judged by R0's rungs too, once the window has ended

    def name(self) -> str:
        if self.size == "mask":
            return f"R0 eta{self.eta} min{self.min_trials}"
        extra = " +progress" if self.progress else f" progress>={self.min_progress}" if self.min_progress else ""
        extra += " then R0" if self.then_pruned else ""
        return f"rungs {'/'.join(f'{r:.3g}' for r in self.rungs)} eta{self.eta} min{self.min_trials}{extra}"


@dataclass(frozen=True)
class Trial:
    number: int
    accuracy: list[float]  # val_accuracy after each epoch
    mask: list[float]  # mask sparsity after each epoch
    final_epoch: int  # the epoch in which its pruning window ends
    metrics: dict[str, float]
    steps_per_epoch: int
    end_step: int

    def logs(self, epoch: int) -> dict[str, float]:
        """What training's logs held after `epoch` (`planned_sparsity`: the final masks')."""
        return {"val_accuracy": self.accuracy[epoch - 1], "mask_sparsity": self.mask[epoch - 1],
                "planned_sparsity": self.planned}

    @property
    def planned(self) -> float:
        return self.mask[-1]

    def record(self, rule: Rule, epoch: int) -> list[float]:
        size = self.mask[epoch - 1] if rule.size == "mask" else self.planned
        losses = [-self.accuracy[epoch - 1], -size]
        if rule.progress:
            losses.append(-self.progress(epoch))
        return losses

    def progress(self, epoch: int) -> float:
        return self.mask[epoch - 1] / self.planned if self.planned else 1.0

    def rungs(self, rule: Rule, epochs: int) -> tuple[int, ...]:
        if rule.size == "mask":  # sweep's `pruned` rule
            return early_stopping.rung_epochs(early_stopping.recorded_epochs(epochs, self.steps_per_epoch,
                                                                             self.end_step))
        planned = {min(max(1, round(f * epochs)), epochs - 1) for f in rule.rungs}
        return tuple(sorted(planned | (set(self.rungs(Rule("mask"), epochs)) if rule.then_pruned else set())))

    def recorded(self, rule: Rule, epochs: int) -> range:
        return range(max(1, self.final_epoch) if rule.size == "mask" else 1, epochs)


def load(folder: Path) -> tuple[dict[str, Any], list[Trial], int]:
    data = json.loads((folder / "trials.json").read_text())
    trials = []
    for row in data["trials"]:
        if row["state"] != "COMPLETE":
            continue
        plan = row["plan"]
        epochs = len(row["curves"]["mask_sparsity"])
        steps_per_epoch = plan["total_steps"] / epochs
        trials.append(Trial(row["number"], row["curves"]["val_accuracy"], row["curves"]["mask_sparsity"],
                            math.ceil(plan["end_step"] / steps_per_epoch), row["metrics"], int(steps_per_epoch),
                            plan["end_step"]))
    return data, trials, epochs


def replay(trials: list[Trial], rule: Rule, epochs: int) -> dict[int, int]:
    """Each trial's epochs trained under `rule` (`epochs` when it completes)."""
    trained: dict[int, int] = {}
    records: dict[int, dict[int, list[float]]] = {}  # trial -> epoch -> losses
    for trial in trials:
        records[trial.number] = {}
        trained[trial.number] = epochs
        rungs = trial.rungs(rule, epochs)
        for epoch in trial.recorded(rule, epochs):
            # a combined rule judges at the window's end (and after) as R0 does, by the masks
            at = Rule("mask") if rule.then_pruned and epoch >= trial.final_epoch else rule
            record = trial.record(at, epoch)
            records[trial.number][epoch] = record
            if epoch not in rungs or trial.progress(epoch) < rule.min_progress:
                continue
            peers = [r[epoch] for n, r in records.items() if n != trial.number and epoch in r
                     and len(r[epoch]) == len(record)]
            if len(peers) + 1 < rule.min_trials:
                continue
            ranks = domination_ranks([record, *peers])
            cutoff = sorted(ranks)[math.ceil(len(ranks) / rule.eta) - 1]
            if ranks[0] > cutoff:
                trained[trial.number] = epoch
                break
    return trained


def replay_sweep(trials: list[Trial], rule: str, epochs: int, objectives: list[str],
                 planned_rung: float = early_stopping.PLANNED_RUNG,
                 planned_min_trials: int = early_stopping.PLANNED_MIN_TRIALS) -> dict[int, int]:
    """`replay` of sweep's own rule (`early_stopping: pruned | planned`), by the functions a
    live trial calls, in the order `sweep.study.objective` calls them."""
    trained: dict[int, int] = {}
    records: dict[int, dict[bool, dict[str, Any]]] = {}  # trial -> planned? -> epoch -> record
    for trial in trials:
        records[trial.number] = {True: {}, False: {}}
        trained[trial.number] = epochs
        recorded = early_stopping.recorded_epochs(epochs, trial.steps_per_epoch, trial.end_step)
        rungs = {False: early_stopping.rung_epochs(recorded),
                 True: early_stopping.planned_rung_epochs(epochs, planned_rung) if rule == "planned" else ()}
        for epoch in range(1, epochs):
            for planned in (True, False):
                if epoch not in (rungs[True] if planned else recorded):
                    continue
                logs = trial.logs(epoch)
                record = {"losses": early_stopping.rung_losses(objectives, logs, planned),
                          "val_accuracy": logs["val_accuracy"]}
                records[trial.number][planned][str(epoch)] = record
                if epoch not in rungs[planned]:
                    continue
                peers = [early_stopping.Peer(r[planned], None) for n, r in records.items() if n != trial.number]
                minimum = planned_min_trials if planned else early_stopping.MIN_TRIALS
                if early_stopping.judge(epoch, record, peers, None, minimum) is not None:
                    trained[trial.number] = epoch
                    break
            if trained[trial.number] < epochs:
                break
    return trained


def volume(trials: list[Trial], data: dict[str, Any]) -> float:
    table = pd.DataFrame([{**t.metrics, "trial": t.number, "feasible": True} for t in trials])
    return hypervolume(table, data["objectives"], data["baseline"])


def evaluate(folder: Path, rule: Rule | str, **constants: Any) -> dict[str, float]:
    """`rule`: one of the grid's, or sweep's own by name."""
    data, trials, epochs = load(folder)
    trained = (replay(trials, rule, epochs) if isinstance(rule, Rule)
               else replay_sweep(trials, rule, epochs, data["objectives"], **constants))
    kept = [t for t in trials if trained[t.number] == epochs]
    spent = sum(trained.values())
    full = volume(trials, data)
    equal = volume(trials[: spent // epochs], data)
    front = front_numbers(trials, data)
    ends = sorted(t.final_epoch for t in trials)
    late = [t for t in trials if t.final_epoch > ends[len(ends) // 2]]  # the half whose window ends later
    return {
        "epochs_share": spent / (len(trials) * epochs),
        "hv": volume(kept, data), "hv_full": full, "hv_full_at_equal_epochs": equal,
        "kept": len(kept), "trials": len(trials),
        "front_recall": len(front & {t.number for t in kept}) / len(front),
        "late_stop_rate": sum(trained[t.number] < epochs for t in late) / max(1, len(late)),
        "early_stop_rate": sum(trained[t.number] < epochs for t in trials if t not in late)
                           / max(1, len(trials) - len(late)),
    }


def front_numbers(trials: list[Trial], data: dict[str, Any]) -> set[int]:
    ranks = domination_ranks([[-t.metrics["val_accuracy"], t.metrics["compressed_bytes"]] for t in trials])
    return {t.number for t, r in zip(trials, ranks, strict=True) if r == 0}


def agreement(folder: Path) -> dict[int, dict[str, float]]:
    """By epoch: Kendall's tau-b of the early ranking against the final one."""
    _, trials, epochs = load(folder)
    final = domination_ranks([[-t.metrics["val_accuracy"], t.metrics["compressed_bytes"]] for t in trials])
    out = {}
    for epoch in range(1, epochs):
        early = domination_ranks([[-t.accuracy[epoch - 1], -t.planned] for t in trials])
        out[epoch] = {
            "tau_rank": kendalltau(early, final).statistic,
            "tau_accuracy": kendalltau([t.accuracy[epoch - 1] for t in trials],
                                       [t.metrics["val_accuracy"] for t in trials]).statistic,
        }
    return out


def oracle(folder: Path) -> float:
    """The best hypervolume of any half of the full search's trials, less the full search's:
    the least gap a rule that keeps half of them can have."""
    data, trials, _ = load(folder)
    front = [t for t in trials if t.number in front_numbers(trials, data)]
    best = (volume(front, data) if len(front) <= len(trials) // 2 else
            max(volume(list(subset), data) for subset in itertools.combinations(front, len(trials) // 2)))
    return best - volume(trials, data)


# sweep's rules, then `planned` with other constants: (rule, {"planned_rung": f, "planned_min_trials": m})
SWEEP_RULES = [("pruned", {}), ("planned", {}),
               *(("planned", {"planned_rung": f, "planned_min_trials": m}) for f in (1 / 8, 1 / 4) for m in (3, 6))]


def live(study: Path) -> dict[str, Any] | None:
    """The live on arms (`early_stopping.py --arms on --keep`) against the recorded off arms,
    seed by seed: epochs trained, hypervolume, and the off arm's at equal epochs."""
    rows = []
    for on in sorted(study.glob("on-*/trials.json")):
        off = study / on.parent.name.replace("on-", "off-")
        data, full, epochs = load(off)
        kept = json.loads(on.read_text())["trials"]
        spent = sum(len(row["curves"].get("mask_sparsity", [])) for row in kept)
        complete = load(on.parent)[1]
        rows.append({
            "seed": on.parent.name, "epochs_share": spent / (len(full) * epochs),
            "hv": volume(complete, data), "hv_full": volume(full, data),
            "hv_full_at_equal_epochs": volume(full[: spent // epochs], data),
            "stopped": sum(row["state"] == "PRUNED" for row in kept), "complete": len(complete),
            # the arms agree until a first trial is stopped: the same seed trains the same way
            "first_trial_same": all(complete[0].metrics[key] == full[0].metrics[key]
                                    for key in ("val_accuracy", "compressed_bytes")),
        })
    if not rows:
        return None
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0] if key not in ("seed", "first_trial_same")}
    median["hv_gap"] = statistics.median(row["hv"] - row["hv_full"] for row in rows)
    median["hv_gain_at_equal_epochs"] = statistics.median(row["hv"] - row["hv_full_at_equal_epochs"] for row in rows)
    return {"median": median, "seeds": rows}


def rules() -> list[Rule]:
    grid = [Rule(size="mask", eta=eta, min_trials=m) for eta in (3,) for m in (6, 3)]
    for rungs, eta, minimum in itertools.product([(0.125,), (0.25,), (1 / 3,), (0.5,), (0.125, 1 / 3), (0.25, 0.5)],
                                                 (2, 3, 4), (3, 4, 6)):
        grid.append(Rule(rungs=rungs, eta=eta, min_trials=minimum))
        grid.append(Rule(rungs=rungs, eta=eta, min_trials=minimum, progress=True))
        grid.append(Rule(rungs=rungs, eta=eta, min_trials=minimum, min_progress=0.5))
        grid.append(Rule(rungs=rungs, eta=eta, min_trials=minimum, progress=True, then_pruned=True))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", type=Path, nargs="+", help="--keep folders of early_stopping.py (off arms)")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    for study in args.studies:
        seeds = sorted(p.parent for p in study.glob("off-*/trials.json"))
        taus = [agreement(seed) for seed in seeds]
        by_rule = {}
        for rule in [*SWEEP_RULES, *rules()]:
            rows = [evaluate(seed, rule[0], **rule[1]) if isinstance(rule, tuple) else evaluate(seed, rule)
                    for seed in seeds]
            by_rule[f"sweep {rule[0]} {rule[1] or ''}" if isinstance(rule, tuple) else rule.name()] = {
                **{key: statistics.median(row[key] for row in rows) for key in rows[0]},
                "hv_gap": statistics.median(row["hv"] - row["hv_full"] for row in rows),
                "hv_gain_at_equal_epochs": statistics.median(row["hv"] - row["hv_full_at_equal_epochs"] for row in rows),
            }
        report[study.name] = {
            "seeds": len(seeds),
            "oracle_half_gap": statistics.median(oracle(seed) for seed in seeds),
            "kendall_tau": {epoch: {key: statistics.median(t[epoch][key] for t in taus) for key in taus[0][epoch]}
                            for epoch in taus[0]},
            "rules": by_rule,
            "live": live(study),
        }
        print(f"{study.name}: {len(seeds)} seeds", file=sys.stderr)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
