"""Running trials: the worker loop, its stopping rules, and parallel worker processes.

A worker runs one trial at a time (Optuna's `study.optimize(n_trials=1)`, which keeps
its heartbeat thread and stale-trial detection) until the study has `target` finished
trials (complete, or stopped early), the deadline passes, too many trials fail, or it is
interrupted. With `--measure-aside` it trains one while the one before is measured
(`sweep.study.measured_aside`, which asks and tells the trials itself).

Many workers (processes here, or `sweep run` on other machines sharing the storage)
reach exactly `target` finished trials: a worker starts a trial only while
`finished + running < target`, waits while running trials may still fail, and a trial
that finds `target` trials ahead of it once it exists (two workers started together)
is recorded FAIL as "skipped" before any training, and does not count as a failure.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep import interrupts
from sweep.errors import StoreFailed, StudyAborted
from sweep.stores import records
from sweep.stores.optuna_storage import experimental_api
from sweep.stores.urls import error_summary

if TYPE_CHECKING:
    from sweep.study.measured_aside import AsideTrials

POLL_SECONDS = 1.0
# Trials that count toward `n_trials`: complete, and stopped early (sweep.search.early_stopping).
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Goal:
    """When this run stops (the same for every worker of the run)."""

    target: int  # finished trials (complete or stopped early) the study must have
    started: datetime  # failures after this count against max_failures
    max_failures: int  # more failed trials than this aborts the run
    deadline: float | None = None  # time.time() after which no trial starts

    def failures(self, trials: list[FrozenTrial]) -> list[FrozenTrial]:
        return [
            t for t in trials
            if t.state == TrialState.FAIL
            and not records.is_skipped(t)
            and t.datetime_start is not None
            and t.datetime_start >= self.started
        ]


def max_failures_allowed(value: str, trials_wanted: int) -> int:
    """`--max-failures`: a fraction of the trials this run wants (0.5) or a count (3)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not math.isfinite(number) or number < 0 or (number >= 1 and not number.is_integer()):
        from sweep.errors import UsageError

        raise UsageError(f"--max-failures: give a fraction below 1 (0.5) or a whole count (3), got {value[:20]!r}")
    return int(number) if number >= 1 else int(number * trials_wanted)


class TrialSkipped(Exception):
    """Raised inside a trial that two racing workers started one too many of."""


def check_not_surplus(trial: optuna.Trial, goal: Goal) -> None:
    """Called first thing in a trial: fail it as skipped if `target` trials are ahead."""
    ahead = [
        t for t in trial.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        if t.number < trial.number
    ]
    if len(ahead) >= goal.target:
        records.mark_skipped(trial)
        raise TrialSkipped(f"skipped: the study already has {goal.target} trials finished or running")


def work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    goal: Goal,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = (),  # type: ignore[assignment]
    aside: AsideTrials | None = None,
) -> None:
    """Run trials until `goal` says stop, each measured beside the next one's training with
    `aside` (`sweep.study.measured_aside`, which has the callbacks); raises `StudyAborted` on
    too many failures and `StoreFailed` when the storage fails."""
    with _one_line_thread_errors():
        try:
            _work(study, objective, goal, callbacks, aside)
        except Exception as error:  # the objective's own errors are caught by Optuna
            if not _from_storage(error):
                raise
            raise StoreFailed(
                f"the Optuna storage failed: {_root_cause(error)}; fix it (disk space, database "
                f"server) and run `sweep run` again: the trial in flight is retried"
            ) from error


@contextlib.contextmanager
def _one_line_thread_errors() -> Iterator[None]:
    """Optuna's heartbeat thread dies with a traceback when the storage fails; the worker
    reports that failure itself (`StoreFailed`), so the thread's is one line."""
    previous = threading.excepthook

    def one_line(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            print(f"warning: {args.thread.name if args.thread else 'a thread'} stopped: "
                  f"{_root_cause(args.exc_value)}", file=sys.stderr)

    threading.excepthook = one_line
    try:
        yield
    finally:
        threading.excepthook = previous


def _work(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Sequence[float]],
    goal: Goal,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]],
    aside: AsideTrials | None,
) -> None:
    while goal.deadline is None or time.time() < goal.deadline:
        interrupts.stop_if_requested()
        if aside is not None:
            aside.collect()
        # Every pass, waiting ones included. (`study.optimize` does this too, but only when a
        # new trial may start.)
        fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        failures = goal.failures(trials)
        if len(failures) > goal.max_failures:
            last = records.trial_error(failures[-1], "no reason recorded")
            raise StudyAborted(
                f"stopped: {len(failures)} trials failed in this run, more than --max-failures "
                f"allows ({goal.max_failures}); last error: {last}"
            )
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= goal.target:
            return
        if finished + running >= goal.target:  # enough in flight; wait in case one fails
            if aside is not None and aside.measuring is not None:
                aside.collect(wait=True)
            else:
                time.sleep(POLL_SECONDS)
            continue
        if aside is not None:
            aside.run_one()
        else:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=list(callbacks))
    if aside is not None:  # the deadline passed: the trial being measured is told first
        aside.collect(wait=True)


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials whose worker died (heartbeat stale), calling the storage's callback
    (`objective.StaleTrials`: run KILLED, retry queued). A no-op without heartbeats."""
    with experimental_api():
        optuna.storages.fail_stale_trials(study)


def _chain(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from or during, first to last."""
    current: BaseException | None = error
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


def _from_storage(error: BaseException) -> bool:
    """Whether a database error is in the chain (Optuna's own assertion may wrap it)."""
    from sqlalchemy.exc import SQLAlchemyError

    return any(isinstance(e, SQLAlchemyError | optuna.exceptions.StorageInternalError) for e in _chain(error))


def _root_cause(error: BaseException) -> str:
    """The first error of a chain (Optuna's "Should not reach" assertion hides the
    storage's own error in `__context__`), on one line."""
    *_, first = _chain(error)
    return error_summary(first)[:300]


def cpu_threads_per_worker(jobs: int) -> int:
    """Cores for each of `jobs` workers on this machine (at least one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // jobs)
