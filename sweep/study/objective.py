"""One Optuna trial: sample, plan, train pruned, measure, record in Optuna and MLflow.

What a trial stores in Optuna, so every later command works from the storage alone, is
`sweep.stores.records`: its seed (replays the trial), MLflow run, plan (absolute steps),
metrics (everything measured) and, for a failed trial, its error.
"""

from __future__ import annotations

import copy
import gc
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import optuna

from sweep import interrupts
from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.modeling.metrics import trial_groups
from sweep.modeling.train_and_measure import train_and_measure
from sweep.search import early_stopping
from sweep.search.trial_plan import trial_plan
from sweep.stores import records
from sweep.stores.optuna_storage import experimental_api
from sweep.stores.tracking import (
    MAX_TAG_LENGTH,
    Tracker,
    result_params,
    result_tags,
    trial_run_params,
)
from sweep.stores.urls import error_summary, mask_passwords_in
from sweep.study.saved_weights import ARTIFACT as WEIGHTS_ARTIFACT
from sweep.study.saved_weights import log_weights
from sweep.study.trial_loop import Goal, check_not_surplus

if TYPE_CHECKING:
    from sweep.modeling.train_and_measure import Evaluated
    from sweep.search.space import TrialParams
    from sweep.search.trial_plan import SchedulePlan

EpochHook = Callable[[int, int], None]  # (trial number, epochs done)
T = TypeVar("T")


def trial_seed(study_seed: int, trial_number: int) -> int:
    """A 31-bit seed derived from the study seed and trial number (stable across runs)."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0] >> 1)


@dataclass
class TrainedTrial:
    """A trial trained, its cheap metrics measured and its weights saved: what is left is to
    record its results (`PruningObjective.finish`), with the deploy metrics measured later."""

    run_id: str | None  # its MLflow run (None: the tracking store failed)
    metrics: dict[str, float]
    curves: dict[str, list[float]]
    timings: dict[str, float]
    weights: Path  # its stripped weights, in a folder of its own in the worker's folder
    pruned_layers: list[str]
    layers: dict[str, dict]
    channels: dict[str, int]  # a channel trial's output channels per producer ({}: shapes kept)


class PruningObjective:
    """The objective `study.optimize` calls; returns the configured objective values. In two
    steps for a trial measured beside the next one's training: `train`, then `finish`."""

    def __init__(
        self,
        config: StudyConfig,
        dataset: Dataset,
        tracker: Tracker,
        study_run_id: str,
        baseline: Mapping[str, float],
        goal: Goal,
        tf_threads: int,
        folder: Path,
        start_weights: Path | None = None,
        on_epoch: EpochHook | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.tracker = tracker
        self.study_run_id = study_run_id
        self.baseline = baseline
        self.goal = goal
        self.tf_threads = tf_threads
        self.folder = folder  # the worker's: each trial's weights until its results are recorded
        self.start_weights = start_weights
        self.on_epoch = on_epoch
        self.steps_per_epoch = dataset.steps_per_epoch(config.train.batch_size)
        self.total_steps = dataset.total_steps(config.train)
        self.last_run_id: str | None = None  # the MLflow run of the trial started last

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        return self.finish(trial, self.train(trial, trial_groups(self.config)))

    def train(self, trial: optuna.Trial, groups: frozenset[str]) -> TrainedTrial:
        """Train the trial and measure its cheap metrics and the deploy `groups`; its weights
        are saved in the worker's folder and kept in its MLflow run. Raises `TrialPruned`
        when it is stopped early, and what failed it."""
        check_not_surplus(trial, self.goal)
        seed = trial_seed(self.config.seed, trial.number)
        records.record_seed(trial, seed)
        records.record_tf_threads(trial, self.tf_threads)  # rerun uses the same: exact replay
        params, plan = trial_plan(trial, self.config.search, self.total_steps)
        records.record_plan(trial, plan)
        timings: dict[str, float] = {}
        curves: dict[str, list[float]] = {}
        run_id, evaluated = self._train(trial, seed, params, plan, groups, timings, curves)
        weights = self._keep_weights(trial, run_id, evaluated.trained.model, curves, timings)
        trained = TrainedTrial(run_id, evaluated.metrics, curves, timings, weights,
                               evaluated.trained.pruned_layers, {n: asdict(h) for n, h in evaluated.trained.layers.items()},
                               evaluated.trained.channels)
        # The worker's one garbage collection per trial (runner._run_worker turns automatic
        # collection off): frees this trial's model and graphs, so memory stays flat. A failed
        # trial's garbage goes with the next trial's collection.
        clock = time.perf_counter()
        del evaluated
        gc.collect()
        timings["gc"] = time.perf_counter() - clock
        return trained

    def finish(self, trial: optuna.Trial, trained: TrainedTrial, later: Mapping[str, float] | None = None,
               later_timings: Mapping[str, float] | None = None) -> tuple[float, ...]:
        """Record the trained trial's results, with the deploy metrics measured `later` from
        its saved weights (`sweep.study.measured_aside`); returns its objective values."""
        metrics = {**trained.metrics, **(later or {})}
        metrics["trial_seconds"] += sum((later_timings or {}).values())
        trained.timings.update(later_timings or {})
        self._record_results(trial, trained, metrics)
        shutil.rmtree(trained.weights.parent, ignore_errors=True)
        records.record_timings(trial, trained.timings)  # where the trial's time went (benchmarks/)
        records.record_worker_rss_mb(trial, resident_megabytes())  # memory across trials
        return tuple(metrics[name] for name in self.config.objective_metrics)

    def fail(self, trial: optuna.Trial, trained: TrainedTrial, reason: str, status: str = "FAILED") -> None:
        """A trained trial that could not be finished: its MLflow run ends `status`, and
        `reason` is recorded."""
        self._end_run(trial, trained.run_id, reason, trained.curves, status)
        shutil.rmtree(trained.weights.parent, ignore_errors=True)

    def _train(
        self, trial: optuna.Trial, seed: int, params: TrialParams, plan: SchedulePlan, groups: frozenset[str],
        timings: dict[str, float], curves: dict[str, list[float]],
    ) -> tuple[str | None, Evaluated]:
        """Start the trial's MLflow run, then train and measure, judged at the rungs. A trial
        that fails, is stopped early or interrupted has its run ended and its reason recorded."""
        rule = self.config.early_rule if early_stopping.applies(self.config.objectives) else None
        epochs = self.config.train.epochs
        recorded = (early_stopping.recorded_epochs(epochs, self.steps_per_epoch, plan.end_step)
                    if rule is not None else range(0))
        rungs = early_stopping.rung_epochs(recorded)
        planned_rungs = early_stopping.planned_rung_epochs(epochs) if rule == "planned" else ()

        def record_epoch(epoch: int, logs: Mapping[str, float]) -> None:
            for name, value in logs.items():  # kept here, so a failed trial still logs them
                curves.setdefault(name, []).append(float(value))
            if self.on_epoch is not None:
                self.on_epoch(trial.number, epoch + 1)
            if epoch + 1 in planned_rungs:
                self._judge(trial, epoch + 1, logs, judged=True, planned=True)
            if epoch + 1 in recorded:
                self._judge(trial, epoch + 1, logs, judged=epoch + 1 in rungs)

        run_id: str | None = None
        try:
            clock = time.perf_counter()
            run_id = self.last_run_id = self._tracked(trial, lambda: self.tracker.start_trial(
                self.study_run_id, trial.number, trial_run_params(trial.params, plan, seed)))
            if run_id is not None:
                records.record_mlflow_run_id(trial, run_id)
            timings["mlflow_start"] = time.perf_counter() - clock
            started = time.perf_counter()
            evaluated = train_and_measure(self.dataset, self.config, seed, groups=groups,
                                          params=params, plan=plan, baseline=self.baseline, on_epoch=record_epoch,
                                          start_weights=self.start_weights, timings=timings)
            evaluated.metrics["trial_seconds"] = time.perf_counter() - started
            return run_id, evaluated
        except early_stopping.EarlyStopped as stopped:
            epoch, reason = stopped.epoch, str(stopped)
            if stopped.shortfall is not None:  # infeasible to the sampler, like a complete trial below the floor
                trial.set_constraint("min_accuracy", stopped.shortfall)
            if run_id is not None:
                self._tracked(trial, lambda: self.tracker.stop_trial(run_id, epoch, reason, curves=curves))
            records.record_early_stopped(trial, epoch)
            records.record_error(trial, reason)
            raise optuna.TrialPruned(reason) from None
        except Exception as error:
            if interrupts.requested() is not None:  # a stop raised inside TensorFlow's tracing, which wraps it
                self._end_run(trial, run_id, "interrupted", curves, status="KILLED")
                raise KeyboardInterrupt from error
            self._end_run(trial, run_id, _reason(error), curves)
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: the run must not stay RUNNING
            self._end_run(trial, run_id, "interrupted", curves, status="KILLED")
            raise

    def _end_run(self, trial: optuna.Trial, run_id: str | None, reason: str, curves: dict[str, list[float]],
                 status: str = "FAILED") -> None:
        # The MLflow run is ended first: if the Optuna write then fails, the run is not left RUNNING.
        if run_id is not None:
            self._tracked(trial, lambda: self.tracker.fail_trial(run_id, reason, curves=curves, status=status))
        records.record_error(trial, reason)

    def _keep_weights(self, trial: optuna.Trial, run_id: str | None, model: Any, curves: dict[str, list[float]],
                      timings: dict[str, float]) -> Path:
        """Save the stripped weights in the worker's folder, from which the deploy metrics the
        trial does not measure now are measured later, and keep them in its MLflow run
        (`saved_weights`), their SHA-256 in Optuna."""
        clock = time.perf_counter()
        path = self.folder / f"trial-{trial.number}" / Path(WEIGHTS_ARTIFACT).name
        try:
            path.parent.mkdir()
            model.save_weights(path)
        except Exception as error:  # the worker's disk (full, say): the trial cannot be measured
            self._end_run(trial, run_id, _reason(error), curves)
            raise
        if run_id is not None and (sha256 := self._tracked(trial, lambda: log_weights(path, self.tracker, run_id))):
            records.record_weights_sha256(trial, sha256)
        timings["keep_weights"] = time.perf_counter() - clock
        return path

    def _record_results(self, trial: optuna.Trial, trained: TrainedTrial, metrics: dict[str, float]) -> None:
        """What the trained trial gives, in Optuna and then in its MLflow run: its layers, its
        constraint and its metrics."""
        records.record_pruned_layers(trial, trained.pruned_layers)
        records.record_layers(trial, trained.layers)
        if trained.channels:
            records.record_channels(trial, trained.channels)
        violations = {}
        floor = self.config.constraints.floor(self.baseline["val_accuracy"])
        if floor is not None:  # one constraint, named as before max_accuracy_drop existed
            violations["min_accuracy"] = floor - metrics["val_accuracy"]
            trial.set_constraint("min_accuracy", violations["min_accuracy"])
        tags = result_tags(trained.pruned_layers, violations)
        # Optuna keeps the results first: a trained trial survives a failing tracking store,
        # and `sweep doctor --repair` replays them to MLflow later.
        records.record_metrics(trial, metrics)
        clock = time.perf_counter()
        if (run_id := trained.run_id) is not None:
            self._tracked(trial, lambda: self.tracker.log_results(
                run_id, metrics, curves=trained.curves, tags=tags,
                params=result_params(trained.pruned_layers, trained.layers)))
        if records.tracking_error(trial) is not None:
            records.record_curves(trial, trained.curves)  # for `sweep doctor --repair` to replay
        trained.timings["mlflow_log"] = time.perf_counter() - clock

    def _judge(self, trial: optuna.Trial, epoch: int, logs: Mapping[str, float], judged: bool,
               planned: bool = False) -> None:
        """Record this epoch's values for the other trials; at a rung, stop if they beat it
        (raises `EarlyStopped`). `planned`: a rung of the `planned` rule."""
        record = {"losses": early_stopping.rung_losses(self.config.objectives, logs, planned),
                  "val_accuracy": float(logs["val_accuracy"])}
        records.record_rung(trial, epoch, record, planned)
        if not judged:
            return
        peers = records.rung_peers(trial.study.get_trials(deepcopy=False), trial.number, planned)
        stopped = early_stopping.judge(epoch, record, peers, self.config.constraints.floor(self.baseline["val_accuracy"]),
                                       early_stopping.PLANNED_MIN_TRIALS if planned else early_stopping.MIN_TRIALS)
        if stopped is not None:
            raise stopped

    def end_open_run(self, reason: str) -> None:
        """After the storage failed: end the last trial's run FAILED if it is still RUNNING
        (its trial could not be recorded)."""
        try:
            if self.last_run_id is not None and self.tracker.run_status(self.last_run_id) == "RUNNING":
                self.tracker.fail_trial(self.last_run_id, reason)
        except Exception as error:  # the tracking store may share the failing disk
            print(f"warning: MLflow could not end run {self.last_run_id}: {_store_reason(error)}", file=sys.stderr)

    def _tracked(self, trial: optuna.Trial, write: Callable[[], T]) -> T | None:
        """An MLflow write that must not cost the trial: on failure the reason goes to
        the trial's `records.TRACKING_ERROR`, and the trial goes on."""
        try:
            return write()
        except Exception as error:
            records.record_tracking_error(trial, f"MLflow: {_store_reason(error)}"[:MAX_TAG_LENGTH])
            return None


class FinishRuns:
    """Optuna callback, after the trial's state is stored: its MLflow run ends FINISHED
    only once Optuna has it COMPLETE, so a crash in between leaves a RUNNING run that
    `sweep doctor` can finish, never a FINISHED run without a complete trial."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = records.mlflow_run_id(trial)
        if run_id and trial.state == optuna.trial.TrialState.COMPLETE and records.tracking_error(trial) is None:
            try:
                self.tracker.end_run(run_id, "FINISHED")
            except Exception as error:  # the trial is stored; `sweep doctor --repair` finishes the run
                print(f"warning: trial {trial.number}: MLflow could not end run {run_id}: {_store_reason(error)}; "
                      f"run `sweep doctor --repair` once the tracking store works", file=sys.stderr)


class StaleTrials:
    """Storage callback for a trial whose worker stopped beating (killed, machine lost):
    end its MLflow run KILLED, then let Optuna enqueue a retry with the same params."""

    def __init__(self, tracker: Tracker, max_retry: int = 3) -> None:
        self.tracker = tracker
        with experimental_api():
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # First, so the retry does not depend on MLflow. Optuna copies the user attributes
        # to the retry; it must start clean (no run id, metrics or tracking error of the lost one).
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {}
        self.retry(study, fresh)
        try:
            recorded = records.mlflow_run_id(trial)
            # none recorded: the worker may have died between creating the run and recording it
            reason = records.trial_error(trial, "worker lost: no heartbeat")  # from sweep.stores.heartbeats
            for run_id in [recorded] if recorded else self.tracker.unfinished_trial_runs(trial.number):
                self.tracker.fail_trial(run_id, f"{reason}; retried", status="KILLED")
        except Exception as error:  # `sweep doctor --repair` ends it later
            print(f"warning: MLflow could not end the run of lost trial {trial.number}: {_store_reason(error)}",
                  file=sys.stderr)


def resident_megabytes() -> float:
    """This process's resident memory now (Linux), or 0 where /proc is missing."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _store_reason(error: BaseException) -> str:
    """A store's error in one line: the driver's first line, without the SQL statement and
    the rest that SQLAlchemy and MLflow add (`stores.urls.error_summary`)."""
    return f"{type(error).__name__}: {error_summary(error)}"


def _reason(error: BaseException) -> str:
    """`ExceptionType: message` and where it was raised, short enough for a tag."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return mask_passwords_in(f"{type(error).__name__}: {error}{where}")


