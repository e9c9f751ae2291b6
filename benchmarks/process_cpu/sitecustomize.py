"""Logs every Python process's CPU time when it exits, one JSON line each, to the file
$SWEEP_PROCESS_CPU_LOG names: put this folder on PYTHONPATH for a test run, then summarise the
log with benchmarks/process_cpu.py. Processes killed by a signal (or ended by os._exit) log nothing."""

import atexit
import json
import os
import sys


def _log() -> None:
    times = os.times()
    line = {"argv": sys.argv[:3], "tensorflow": "tensorflow" in sys.modules, "cpu": times.user + times.system,
            "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]}
    with open(os.environ["SWEEP_PROCESS_CPU_LOG"], "a") as log:
        log.write(json.dumps(line) + "\n")


if os.environ.get("SWEEP_PROCESS_CPU_LOG"):
    atexit.register(_log)
