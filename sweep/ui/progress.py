"""Progress of a running study on the terminal: a bar of trials and a line per trial."""

from __future__ import annotations

from types import TracebackType
from typing import Self

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from sweep.stores import records
from sweep.study.resume import RunPlan
from sweep.study.trial_loop import FINISHED


class StudyProgress:
    """Complete trials of this run, elapsed time and the Pareto front size, and a line per
    finished trial; an Optuna callback.

    Used as `with StudyProgress(plan, epochs) as progress: study.optimize(..., callbacks=[progress])`.
    """

    def __init__(self, plan: RunPlan, epochs: int, console: Console) -> None:
        self.epochs = epochs
        self.console = console
        self.console.print(f"[bold]sweep[/]: {plan.reason}")
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("front: {task.fields[front]}  {task.fields[status]}"),
            console=console,
            refresh_per_second=2,  # the refresh thread shares the GIL with training
        )
        self.task = self.progress.add_task("trials", total=plan.n_trials, front=0, status="")
        self.tracking_error: str | None = None  # the last one shown: each reason is said once

    def __enter__(self) -> Self:
        self.progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.progress.stop()

    def epoch(self, trial_number: int, done: int) -> None:
        self.progress.update(self.task, status=f"trial {trial_number}: epoch {done}/{self.epochs}")

    def waiting(self, running: int) -> None:
        self.progress.update(self.task, status=f"{running} running")

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if records.is_skipped(trial):
            return  # a parallel worker's surplus start, never trained
        finished = trial.state in FINISHED
        self.progress.update(self.task, advance=1 if finished else 0, front=len(study.best_trials), status="")
        tracking_error = records.tracking_error(trial)
        self.progress.console.print(describe_trial(trial, with_reason=tracking_error != self.tracking_error),
                                    highlight=False)
        if trial.state == TrialState.COMPLETE:  # the lines that say it
            self.tracking_error = tracking_error


def describe_trial(trial: FrozenTrial, with_reason: bool = True) -> str:
    """A finished trial on one line; `with_reason=False` leaves out why MLflow failed it
    (said on an earlier line)."""
    if trial.state == TrialState.PRUNED:
        return f"trial {trial.number} [yellow]{escape(str(records.trial_error(trial, 'stopped early')))}[/]"
    if trial.state != TrialState.COMPLETE:
        reason = escape(str(records.trial_error(trial, trial.state.name.lower())))  # may hold [brackets]
        return f"trial {trial.number} [red]{trial.state.name.lower()}[/]: {reason}"
    m = records.trial_metrics(trial)
    line = (
        f"trial {trial.number} {trial.params['schedule']:<10} "
        f"val_accuracy {m['val_accuracy']:.4f}  sparsity {m['sparsity']:.3f}  "
        f"{m['compressed_bytes'] / 1024:.1f} KiB ({m['compression_ratio']:.2f}x)  "
        + (f"int8 {m['int8_val_accuracy']:.4f} {m['int8_gzip_bytes'] / 1024:.1f} KiB gzip  "
           if "int8_gzip_bytes" in m else "")
        + (f"int8 {m['int8_latency_ms'] * 1000:.0f} µs  " if "int8_latency_ms" in m else "")
        + (f"float {m['latency_ms'] * 1000:.0f} µs  " if "latency_ms" in m else "")
        + f"{m['trial_seconds']:.1f} s"
    )
    if (tracking_error := records.tracking_error(trial)) is not None:
        line += "  [yellow]kept in Optuna only[/]"
        if with_reason:
            line += (f" ({escape(tracking_error[:200])}); "
                     f"run `sweep doctor --repair` once MLflow works")
    return line
