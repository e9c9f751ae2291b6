"""Whether two runs of one study gave the same trials: a refactoring that must change no
behaviour is checked by running the quickstart on the code before and after it.

    git worktree add /tmp/before <commit>           # the code before
    (cd /tmp/a && cp <repo>/studies/quickstart.yaml . && PYTHONPATH=/tmp/before python -m sweep run quickstart.yaml)
    (cd /tmp/b && cp <repo>/studies/quickstart.yaml . && python -m sweep run quickstart.yaml)
    .venv/bin/python benchmarks/compare_studies.py /tmp/a/sweep.db /tmp/b/sweep.db digits-quickstart

Compares every trial's state, params, objective values and metrics, and the dense
baseline's metrics; wall times and latencies (which vary run to run) are left out.
Exits 1 and names the differences if there are any.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import optuna

VARYING = ("seconds", "latency")  # metric names holding these are timings


def _steady(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not any(word in k for word in VARYING)}


def outcomes(path: str, name: str) -> tuple[dict[int, Any], dict[str, Any]]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{path}")
    trials = {t.number: (t.state.name, t.params, t.values, _steady(t.user_attrs.get("metrics", {})))
              for t in study.trials}
    return trials, _steady(study.user_attrs["baseline"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("study")
    args = parser.parse_args()
    (trials_a, baseline_a), (trials_b, baseline_b) = outcomes(args.before, args.study), outcomes(args.after, args.study)
    differing = sorted(n for n in trials_a.keys() | trials_b.keys() if trials_a.get(n) != trials_b.get(n))
    print(f"{len(trials_a)} vs {len(trials_b)} trials; {len(differing)} differ {differing}; "
          f"baseline {'same' if baseline_a == baseline_b else 'differs'}")
    sys.exit(1 if differing or baseline_a != baseline_b else 0)


if __name__ == "__main__":
    main()
