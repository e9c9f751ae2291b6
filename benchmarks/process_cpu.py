"""Where a test run's CPU goes, by command and by test, from the log that
benchmarks/process_cpu/sitecustomize.py writes:

    PYTHONPATH=benchmarks/process_cpu SWEEP_PROCESS_CPU_LOG=/tmp/cpu.jsonl .venv/bin/pytest -n 2 -m "not docker"
    .venv/bin/python benchmarks/process_cpu.py /tmp/cpu.jsonl
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path


def command(argv: list[str]) -> str:
    """`sweep run`, `mlflow ...`, or the script a process ran."""
    script = Path(argv[0]).name if argv else "?"
    if script == "__main__.py" and len(argv) > 1:
        return f"{Path(argv[0]).parent.name} {argv[1]}"
    return script


def main(log: Path) -> None:
    processes = [json.loads(line) for line in log.read_text().splitlines()]
    seconds: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for process in processes:
        key = command(process["argv"]) + (" (TensorFlow)" if process["tensorflow"] else "")
        seconds[key] += process["cpu"]
        counts[key] += 1
    print(f"{len(processes)} processes, {sum(seconds.values()):.0f} s of CPU\n\nby command:")
    for key, total in seconds.most_common(20):
        print(f"{total:8.1f} s {counts[key]:4d}  {key}")
    by_test: collections.Counter[str] = collections.Counter()
    for process in processes:
        by_test[process["test"] or "(the test processes themselves)"] += process["cpu"]
    print("\nby test:")
    for test, total in by_test.most_common(20):
        print(f"{total:8.1f} s  {test}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
