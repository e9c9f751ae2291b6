"""Measure trial k beside trial k+1's training (`sweep run --measure-aside`).

A trial's deploy metrics (TFLite conversion, int8 accuracy, latency) run on the CPU. With a
GPU training the trials, the worker hands them to a `Measurer`, a child process on the CPU,
and trains the next trial meanwhile; the trial is told to Optuna once they are in, so the
sampler and every command see it whole, as before. On a CPU-only machine both compete for
the same cores (benchmarks/README.md, section 14).

The measurer rebuilds the trial's model from the weights the trial saved and checks that it
gives the trial's validation accuracy again before measuring, as the front's later
measurement does (`measure.deploy_metrics_again`): the files measured are the trial's, and
a rerun compares them.

A worker has at most one trial being measured and one training; the measured one keeps its
heartbeat until it is told, and at `--timeout` the worker waits for it. If the worker is
stopped (Ctrl-C, a signal), the trial being measured ends FAIL "interrupted" with its MLflow
run KILLED, as the training one does, and the measurer is terminated; a measurer whose worker
died exits on its own (`interrupts.watch_parent`, and its end of the pipe closing). A measurer
that dies fails the trial it measured, and the next trial gets a new one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep import interrupts
from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.errors import SweepError
from sweep.optuna_private import heartbeat
from sweep.stores.urls import error_summary
from sweep.study.objective import PruningObjective, TrainedTrial

POLL_SECONDS = 0.5
STOP_SECONDS = 10.0  # for the measurer to end when asked, before it is killed


class MeasurerLost(Exception):
    """The measuring process ended without an answer (killed, out of memory)."""


class Measurer:
    """A child process that measures trials' deploy metrics from their saved weights, one at
    a time, without a GPU (the training process has it)."""

    def __init__(self, config: StudyConfig, dataset: Dataset, threads: int) -> None:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited TF state
        self._connection, child_end = context.Pipe()
        # It loads the data set itself, as a `--jobs` worker does (a stream cannot be sent), and
        # measures only if it is the worker's.
        self._process = context.Process(target=_serve, args=(child_end, config, dataset.fingerprint, threads),
                                        name="sweep-measurer", daemon=True)
        self._process.start()
        child_end.close()  # ours closes with us: the child then reads EOF and ends

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def submit(self, weights: Path, groups: frozenset[str], val_accuracy: float, channels: dict[str, int]) -> None:
        self._connection.send((str(weights), groups, val_accuracy, channels))

    def result(self, timeout: float) -> tuple[dict[str, float], dict[str, float]] | None:
        """The last submitted trial's (metrics, timings), or None while it is measured;
        raises `MeasurerLost`, or `RuntimeError` with the measuring error's reason."""
        try:
            ready = self._connection.poll(timeout)
            answer = self._connection.recv() if ready else None
        except (EOFError, OSError) as error:
            raise self._lost() from error
        if answer is None:
            if not self._process.is_alive():
                raise self._lost()
            return None
        kind, *payload = answer
        if kind == "failed":
            raise RuntimeError(payload[0])
        return payload[0], payload[1]

    def _lost(self) -> MeasurerLost:
        self._process.join(STOP_SECONDS)  # its pipe closes just before it is gone
        return MeasurerLost(f"the measuring process ended (exit code {self._process.exitcode})")

    def close(self) -> None:
        """End the process: at once, even in the middle of a measurement."""
        with contextlib.suppress(OSError):
            self._connection.close()
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def _serve(connection: Connection, config: StudyConfig, fingerprint: str, threads: int) -> None:
    """The measuring process: measure each trial sent until the pipe closes."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before TensorFlow loads: the GPU is the training's
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C and a closed terminal are the worker's
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # to handle; it then ends this process
    interrupts.watch_parent()
    with contextlib.suppress(KeyboardInterrupt):  # raised by `watch_parent`: the worker is gone
        _measure_jobs(connection, config, fingerprint, threads)


def _measure_jobs(connection: Connection, config: StudyConfig, fingerprint: str, threads: int) -> None:
    import gc

    from sweep.data.datasets import load_dataset
    from sweep.modeling.measure import deploy_metrics_again
    from sweep.modeling.models import rebuilt_model
    from sweep.modeling.training import configure_tensorflow

    configure_tensorflow(threads, config.train.deterministic)
    try:
        dataset = load_dataset(config.data)
        problem = None if dataset.fingerprint == fingerprint else "the data set changed since the worker loaded it"
    except Exception as error:  # the user's loader: every trial it was to measure fails with the reason
        problem = f"cannot load the data set: {type(error).__name__}: {error_summary(error)[:300]}"
    while (job := _next_job(connection)) is not None:
        weights, groups, val_accuracy, channels = job
        started = time.perf_counter()
        try:
            if problem is not None:
                raise SweepError(problem)
            model = rebuilt_model(config.model, dataset.input_shape, dataset.num_classes, Path(weights), channels)
            timings = {"rebuild": time.perf_counter() - started}
            metrics = deploy_metrics_again(model, dataset, groups, val_accuracy, config.export, timings)
            answer: tuple[Any, ...] = ("measured", metrics, {f"aside_{k}": v for k, v in timings.items()})
        except Exception as error:
            answer = ("failed", f"measuring aside: {type(error).__name__}: {error_summary(error)[:300]}")
        model = None
        gc.collect()
        try:
            connection.send(answer)
        except OSError:
            return


def _next_job(connection: Connection) -> tuple[str, frozenset[str], float, dict[str, int]] | None:
    """The next trial to measure, or None once the worker has closed its end (or died)."""
    try:
        return connection.recv()
    except (EOFError, OSError):
        return None


@dataclass
class _Measuring:
    trial: optuna.Trial
    trained: TrainedTrial
    beating: contextlib.ExitStack  # its heartbeat


class AsideTrials:
    """A worker's trials when they are measured aside: `run_one` trains one and hands it to
    the measurer (after the one before it is told), `collect` tells the measured one: at
    the end of each epoch of the trial training, and between trials."""

    def __init__(
        self, study: optuna.Study, objective: PruningObjective, start_measurer: Callable[[], Measurer],
        groups: frozenset[str], callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]],
    ) -> None:
        self.study = study
        self.objective = objective
        self.start_measurer = start_measurer
        self.measurer = start_measurer()
        self.groups = groups
        self.callbacks = list(callbacks)
        self.measuring: _Measuring | None = None
        shown = objective.on_epoch

        def on_epoch(trial_number: int, done: int) -> None:  # a measured trial is told at the next epoch's end
            if shown is not None:
                shown(trial_number, done)
            self.collect()

        objective.on_epoch = on_epoch

    def run_one(self) -> None:
        """Ask a trial and train it (its cheap metrics measured); a trained trial goes to the
        measurer once the one before it is told, a stopped or failed one is told now."""
        with warnings.catch_warnings():  # "Heartbeat of storage is supposed to be used with Study.optimize": kept below
            warnings.simplefilter("ignore", UserWarning)
            trial = self.study.ask()
        beating = contextlib.ExitStack()
        beating.enter_context(heartbeat(self.study, trial))
        try:
            trained = self.objective.train(trial, frozenset())
        except optuna.TrialPruned:
            self._tell(trial, beating, state=TrialState.PRUNED)
            return
        except Exception:  # the trial's failure, recorded by the objective: the worker goes on
            self._tell(trial, beating, state=TrialState.FAIL)
            return
        except KeyboardInterrupt:
            self._tell(trial, beating, state=TrialState.FAIL)
            raise
        try:
            self.collect(wait=True)
        except BaseException:
            self.objective.fail(trial, trained, "interrupted", status="KILLED")
            self._tell(trial, beating, state=TrialState.FAIL)
            raise
        job = (trained.weights, self.groups, trained.metrics["val_accuracy"], trained.channels)
        try:
            self.measurer.submit(*job)
        except OSError:  # it died since the last trial (out of memory): a new one measures this one
            self._restart_measurer()
            self.measurer.submit(*job)
        self.measuring = _Measuring(trial, trained, beating)

    def collect(self, wait: bool = False) -> None:
        """Tell the trial being measured once its metrics are in (waiting for them with
        `wait`, stopping at a signal); a failed measurement fails it."""
        while (measuring := self.measuring) is not None:
            try:
                result = self.measurer.result(POLL_SECONDS if wait else 0)
            except Exception as error:  # the measurer failed this trial, or is gone
                self.measuring = None
                if isinstance(error, MeasurerLost):  # the next trials get a new one
                    self._restart_measurer()
                self.objective.fail(measuring.trial, measuring.trained, str(error))
                self._tell(measuring.trial, measuring.beating, state=TrialState.FAIL)
                return
            if result is None:
                if not wait:
                    return
                interrupts.stop_if_requested()
                continue
            self.measuring = None
            try:
                values = self.objective.finish(measuring.trial, measuring.trained, *result)
            except Exception:  # as `study.optimize` catches it: the trial fails, the worker goes on
                self._tell(measuring.trial, measuring.beating, state=TrialState.FAIL)
                return
            self._tell(measuring.trial, measuring.beating, values=values)

    def close(self) -> None:
        """On the way out: a trial still being measured ends FAIL "interrupted" (its run
        KILLED), as a trial in training does; the measurer ends."""
        try:
            if (measuring := self.measuring) is not None:
                self.measuring = None
                with contextlib.suppress(Exception):  # a failed storage: its heartbeat stops, it goes stale
                    self.objective.fail(measuring.trial, measuring.trained, "interrupted", status="KILLED")
                    self._tell(measuring.trial, measuring.beating, state=TrialState.FAIL)
                measuring.beating.close()
        finally:
            self.measurer.close()

    def _restart_measurer(self) -> None:
        self.measurer.close()
        self.measurer = self.start_measurer()

    def _tell(self, trial: optuna.Trial, beating: contextlib.ExitStack, values: Sequence[float] | None = None,
              state: TrialState | None = None) -> None:
        """Tell Optuna, then run the callbacks, as `study.optimize` does (its heartbeat ends first)."""
        beating.close()
        with warnings.catch_warnings():  # a value Optuna refuses (NaN) fails the trial, reported by the progress
            warnings.simplefilter("ignore")
            frozen = self.study.tell(trial, values, state)
        for callback in self.callbacks:
            callback(self.study, frozen)
