"""`sweep run`: check everything, then create or resume the study and run its trials.

Order matters: every check that can fail on the user's input (study file, storage,
tracking store, a changed study, data, model builder) runs before the first write, so
a mistake leaves the storage and the tracking store untouched. Then the study, its
MLflow parent run and the dense baseline are set up once, and one or more workers
(`sweep.study.trial_loop`) run the trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import multiprocessing
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep import interrupts
from sweep.config import StudyConfig, inherit_stored_values, parse_study_config
from sweep.data.splits import Dataset
from sweep.errors import Interrupted, StoreFailed, StudyAborted, SweepError, UsageError
from sweep.modeling.metrics import trial_groups
from sweep.results.columns import METRIC_COLUMNS, compact
from sweep.search import early_stopping
from sweep.search.space import start_points
from sweep.stores import records
from sweep.stores.checks import check_stores
from sweep.stores.optuna_storage import (
    existing_study_attrs,
    experimental_api,
    open_storage,
    setup_lock,
)
from sweep.stores.startup import NewTrackingStore, tracking_store_aside
from sweep.stores.tracking import Tracker
from sweep.study.baseline import ensure_baseline, start_weights
from sweep.study.fingerprints import check_same_inputs, input_fingerprints
from sweep.study.front_metrics import measure_front
from sweep.study.measured_aside import AsideTrials, Measurer
from sweep.study.objective import FinishRuns, PruningObjective, StaleTrials
from sweep.study.resume import RunPlan, check_compatible, plan_trials, study_attrs
from sweep.study.trial_loop import (
    FINISHED,
    Goal,
    cpu_threads_per_worker,
    max_failures_allowed,
    work,
)

if TYPE_CHECKING:
    from sweep.stores.heartbeats import HeartbeatStorage

optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress reports failures in one line


@dataclass(frozen=True)
class RunRequest:
    """Everything `sweep run` was asked to do."""

    config: StudyConfig
    storage_url: str
    tracking_uri: str
    n_trials: int | None = None  # add this many; None: run up to config.n_trials complete
    timeout: float | None = None  # seconds after which no new trial starts
    jobs: int = 1  # worker processes on this machine
    max_failures: str = "0.5"  # a fraction of the trials wanted, or a count
    wait_for_stores: float = 0  # seconds to wait for a storage or tracking server to answer
    measure_aside: bool = False  # each worker measures trial k in a child process while trial k+1 trains
    # Benchmarks of sampler settings (in this process: --jobs 1): a sampler made from its
    # seed in place of config.sampler, and the trials a new study starts with (none: the
    # sampler's own random start-up) in place of the default start design.
    sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None
    start_points: Callable[[StudyConfig], list[dict[str, Any]]] | None = None


class Progress(Protocol):
    def epoch(self, trial_number: int, done: int) -> None: ...
    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None: ...
    def waiting(self, running: int) -> None: ...


def run_study(request: RunRequest, progress: Callable[[RunPlan], Progress] | None = None) -> optuna.Study:
    """Run (or resume) the study; returns it. Raises `UsageError` before any write on bad
    input, `StudyAborted` on too many failures, `Interrupted` on Ctrl-C/SIGTERM."""
    with tracking_store_aside(request.tracking_uri) as new_store:  # made while TensorFlow imports
        return _run_study(request, progress, new_store)


def _run_study(
    request: RunRequest, progress: Callable[[RunPlan], Progress] | None, new_store: NewTrackingStore
) -> optuna.Study:
    request, dataset, fingerprints = _check_request(request)
    # --- from here on we write; Ctrl-C and SIGTERM stop at the next safe point ---
    interrupts.install()
    try:
        study, tracker = _set_up_study(request, new_store, dataset, fingerprints)
        _run_trials(request, study, tracker, dataset, progress)
        measure_front(study, request.config, tracker, dataset)
    except KeyboardInterrupt:
        raise Interrupted(interrupts.message(), interrupts.exit_code()) from None
    finally:
        interrupts.restore()
    return study


def _check_request(request: RunRequest) -> tuple[RunRequest, Dataset, dict[str, str]]:
    """Every check that can fail on the user's input, before any write: the request as the
    workers run it (keys an older sweep stored keep their values), the data set and its
    fingerprints."""
    config = request.config
    if request.jobs < 1:
        raise UsageError(f"--jobs: must be at least 1, got {request.jobs}")
    if request.sampler is not None and request.jobs > 1:
        raise UsageError("--jobs: a sampler given in place of the study file's runs in this process only")
    check_stores(request.storage_url, request.tracking_uri, wait=request.wait_for_stores)
    stored = existing_study_attrs(request.storage_url, config.name) or {}
    stored_config = records.stored_config(stored)
    config = inherit_stored_values(config, stored_config)
    request = dataclasses.replace(request, config=config)  # what --jobs workers run
    check_compatible(stored_config, config)
    max_failures_allowed(request.max_failures, 1)  # validates the flag before any work
    make_sampler(config.sampler, config.seed, factory=request.sampler)  # e.g. gp without PyTorch
    if request.jobs > 1 and {"latency", "int8_latency"} & set(config.objectives):
        print("warning: with --jobs, trials are timed while other workers train, the dense baseline alone; "
              "latency objectives compare best with --jobs 1", file=sys.stderr)
    if request.measure_aside and not trial_groups(config):
        print("warning: --measure-aside does nothing in this study: its objectives need no TFLite file per "
              "trial, and the cheap metrics are measured where the trial trains", file=sys.stderr)
    elif request.measure_aside and {"latency", "int8_latency"} & set(config.objectives):
        print("warning: with --measure-aside, trials are timed while the next one trains; on a machine "
              "without a GPU, latency objectives compare best without it", file=sys.stderr)

    if config.early_stopping and not early_stopping.applies(config.objectives):
        print("warning: early_stopping does nothing in this study: latency is known only once a model is "
              "converted, so trials with a latency objective run to the end", file=sys.stderr)

    from sweep.data.datasets import load_dataset
    from sweep.modeling.models import check_model
    from sweep.modeling.training import configure_tensorflow

    # before the first op; the thread count explicit, so reruns match
    configure_tensorflow(cpu_threads_per_worker(1), config.train.deterministic)
    dataset = load_dataset(config.data)
    fingerprints = input_fingerprints(config, dataset)
    check_same_inputs(stored, fingerprints, config)
    if (removable := check_model(config.model, config.search, dataset.input_shape, dataset.num_classes)) is not None:
        print(f"sweep: {removable}", file=sys.stderr)
    return request, dataset, fingerprints


def _set_up_study(
    request: RunRequest, new_store: NewTrackingStore, dataset: Dataset, fingerprints: dict[str, str]
) -> tuple[optuna.Study, Tracker]:
    """Create or resume the study, its MLflow parent run and the dense baseline."""
    config = request.config
    # Runs started together set the study up one after the other: one set of store
    # tables, one start design, one parent run, one baseline.
    with setup_lock(request.storage_url, config.name):
        new_store.install()
        tracker, storage = _tracked_storage(request.storage_url, request.tracking_uri, config.name,
                                            follow_copied_project=True)
        study = optuna.create_study(
            study_name=config.name, storage=storage, directions=config.directions, load_if_exists=True
        )
        # again, under the lock: another run may have created the study since the check
        check_compatible(records.stored_config(study), config)
        check_same_inputs(study, fingerprints, config)
        if not study.trials:
            _enqueue_start(study, request)
        records.record_study_attrs(study, study_attrs(config))
        if study.metric_names != list(config.objectives):  # by name in optuna-dashboard
            with experimental_api():
                study.set_metric_names(list(config.objectives))
        records.record_study_attrs(study, fingerprints)
        study_run_id = tracker.study_run(config.to_yaml())
        tracker.present([column for column in compact(config.objectives) if column in METRIC_COLUMNS])
        records.record_mlflow_study_run_id(study, study_run_id)
        ensure_baseline(study, tracker, study_run_id, config, dataset)
    return study, tracker


def _run_trials(
    request: RunRequest, study: optuna.Study, tracker: Tracker, dataset: Dataset,
    progress: Callable[[RunPlan], Progress] | None,
) -> None:
    """This run's share of the trials, in this process or in `--jobs` worker processes."""
    config = request.config
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    plan = plan_trials(config.n_trials, finished, request.n_trials)
    goal = Goal(
        target=finished + plan.n_trials,
        started=datetime.now(),
        max_failures=max_failures_allowed(request.max_failures, plan.n_trials),
        deadline=time.time() + request.timeout if request.timeout is not None else None,
    )
    display = progress(plan) if progress else None
    if plan.n_trials and request.jobs == 1:
        _run_worker(study, config, dataset, tracker, goal, cpu_threads_per_worker(1), worker=0, display=display,
                    sampler=request.sampler, measure_aside=request.measure_aside)
    elif plan.n_trials:
        _work_in_processes(request, study, goal, display)


def _tracked_storage(
    storage_url: str, tracking_uri: str, name: str, follow_copied_project: bool = False
) -> tuple[Tracker, HeartbeatStorage]:
    """The tracking store and the Optuna storage, heartbeats on, as every worker uses them:
    a stale trial's MLflow run is ended with it. The run that sets the study up first
    follows a copied project's runs to its own artifact folder."""
    tracker = Tracker(tracking_uri, name)
    if follow_copied_project:
        tracker.follow_copied_project()
    return tracker, open_storage(storage_url, stale_trial_callback=StaleTrials(tracker), heartbeat=True)


def _run_worker(
    study: optuna.Study, config: StudyConfig, dataset: Dataset, tracker: Tracker, goal: Goal, threads: int,
    worker: int, display: Progress | None = None, sampler: Callable[[int], optuna.samplers.BaseSampler] | None = None,
    measure_aside: bool = False,
) -> None:
    """One worker's trials, in this process or in a `--jobs` process: its own sampler
    seed, the objective (trials start from the study's start weights, if it has any), its
    measuring process with `measure_aside`, and the loop that stops at the goal."""
    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        start = start_weights(study, tracker, config, folder)  # downloaded once per worker
        started = study.get_trials(deepcopy=False, states=tuple(set(TrialState) - {TrialState.WAITING}))
        study.sampler = make_sampler(config.sampler, config.seed, offset=len(started), worker=worker, factory=sampler)
        objective = PruningObjective(
            config, dataset, tracker, records.mlflow_study_run_id(study), records.baseline(study),
            goal, threads, Path(folder), start, on_epoch=getattr(display, "epoch", None),
        )
        callbacks: list[Any] = [FinishRuns(tracker)] + ([display] if display else [])
        # Garbage collection happens once per trial, at its end (PruningObjective), instead of
        # automatically: a trial's only cyclic garbage is its model and graphs (as many objects
        # however long it trains), so nothing builds up in between, and the trial is spared the
        # automatic passes over what Keras creates while tracing. What is alive now
        # (TensorFlow's modules, the data set) lives as long as the worker: frozen, it is not
        # scanned again. Measured in benchmarks/README.md, sections 2 and 4.
        automatic = gc.isenabled()
        gc.collect()
        gc.freeze()
        gc.disable()
        aside = None
        if measure_aside and (groups := trial_groups(config)):
            aside = AsideTrials(study, objective, lambda: Measurer(config, dataset, threads), groups, callbacks)
        try:
            work(study, objective, goal, callbacks, aside)
        except StoreFailed as error:
            objective.end_open_run(str(error))
            raise
        finally:  # in-process runs: hand the collector back to the caller as it was
            if aside is not None:
                aside.close()
            gc.unfreeze()
            if automatic:
                gc.enable()


# --- parallel workers on this machine ------------------------------------------------


def _work_in_processes(request: RunRequest, study: optuna.Study, goal: Goal, display: Progress | None) -> None:
    """`--jobs N`: N spawned processes, each importing TensorFlow once with its share of
    the cores; this process only watches the storage and shows progress."""
    threads = cpu_threads_per_worker(request.jobs)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited TF state
    workers = [
        context.Process(
            target=_worker_main,
            args=(request.config.model_dump(mode="json"), request.storage_url, request.tracking_uri,
                  goal, threads, index, request.measure_aside),
            name=f"sweep-worker-{index}",
        )
        for index in range(request.jobs)
    ]
    forwarded = False
    try:
        for worker in workers:
            worker.start()
        reported: set[int] = set()
        while any(worker.is_alive() for worker in workers):
            signum = interrupts.requested()
            if signum and not forwarded:  # workers left the terminal's group: pass it on once
                for worker in workers:
                    if worker.pid is not None and worker.is_alive():
                        os.kill(worker.pid, signum)
                forwarded = True
            _report_new_trials(study, goal, reported, display)
            time.sleep(0.5)
        _report_new_trials(study, goal, reported, display)
    finally:
        for worker in workers:  # only if we leave early (a second Ctrl-C): no orphans
            if worker.is_alive():
                worker.terminate()
                worker.join(timeout=60)
    interrupts.stop_if_requested()
    codes = [worker.exitcode for worker in workers]
    if any(code == StudyAborted.exit_code for code in codes):
        raise StudyAborted("stopped: too many trials failed (see the workers' messages above)")
    if any(code == StoreFailed.exit_code for code in codes):
        raise StoreFailed("the Optuna storage failed (see the workers' messages above); run `sweep run` again")
    if any(code != 0 for code in codes):
        raise StudyAborted(f"a worker process failed (exit codes {codes}); see its messages above")


def _report_new_trials(study: optuna.Study, goal: Goal, reported: set[int], display: Progress | None) -> None:
    if display is None:
        return
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception:  # the storage failed: the workers report it (StoreFailed); show nothing new
        return
    for trial in trials:
        if trial.number not in reported and trial.state in (*FINISHED, TrialState.FAIL) \
                and trial.datetime_start is not None and trial.datetime_start >= goal.started:
            reported.add(trial.number)
            display(study, trial)
    display.waiting(sum(t.state == TrialState.RUNNING for t in trials))


def _worker_main(config_json: dict, storage_url: str, tracking_uri: str, goal: Goal, threads: int, index: int,
                 measure_aside: bool) -> None:
    """One worker process of `--jobs N`. It ends with `os._exit` once its trials are
    recorded, whatever happens on the way out: tearing TensorFlow down takes seconds, and
    a worker whose `sweep run` died must be gone within seconds (`interrupts.watch_parent`)."""
    os.setpgid(0, 0)  # out of the terminal's group: Ctrl-C reaches us once, forwarded by the parent
    interrupts.install()
    interrupts.watch_parent()  # a parent killed with SIGKILL forwards nothing
    code = 1  # what escapes `_worker_trials` is a bug (or a stop while it reported one)
    try:
        code = _worker_trials(config_json, storage_url, tracking_uri, goal, threads, index, measure_aside)
    except BaseException:
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):  # a hung-up terminal fails writes
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _worker_trials(config_json: dict, storage_url: str, tracking_uri: str, goal: Goal, threads: int, index: int,
                   measure_aside: bool) -> int:
    """The worker's trials, to the goal; returns the process's exit code."""
    try:
        from sweep.data.datasets import load_dataset
        from sweep.modeling.training import configure_tensorflow

        config = parse_study_config(config_json)
        configure_tensorflow(threads, config.train.deterministic)  # before any TensorFlow op runs here
        tracker, storage = _tracked_storage(storage_url, tracking_uri, config.name)
        study = optuna.load_study(study_name=config.name, storage=storage)
        dataset = load_dataset(config.data)  # the data or model may have changed since `sweep run` checked
        check_same_inputs(study, input_fingerprints(config, dataset), config)
        _run_worker(study, config, dataset, tracker, goal, threads, worker=index, measure_aside=measure_aside)
    except KeyboardInterrupt:
        return interrupts.exit_code()
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    return 0


# --- study set-up ------------------------------------------------------------------


START_TRIALS = 10  # TPESampler's n_startup_trials: the trials it draws before it models


def _enqueue_start(study: optuna.Study, request: RunRequest) -> None:
    """A new TPE study starts with space-filling trials instead of TPE's random ones.
    Two runs creating one study at once compute the same points; `skip_if_exists` drops
    the second run's copies unless both check at the same moment."""
    config = request.config
    if request.sampler is not None:
        points = request.start_points(config) if request.start_points else []
    elif config.sampler == "tpe":
        points = start_points(config.search, min(START_TRIALS, config.n_trials), config.seed)
    else:
        points = []
    for params in points:
        study.enqueue_trial(params, skip_if_exists=True)


def make_sampler(
    name: str, seed: int, offset: int = 0, worker: int = 0,
    factory: Callable[[int], optuna.samplers.BaseSampler] | None = None,
) -> optuna.samplers.BaseSampler:
    """The study's sampler (or `factory`'s), seeded from the study seed. `offset` (trials
    already in the study) keeps a resumed run from replaying the first run's random
    start-up points, and `worker` keeps parallel workers from sampling the same ones."""
    sampler_seed = int(np.random.SeedSequence([seed, offset, worker]).generate_state(1)[0])
    if factory is not None:
        return factory(sampler_seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=sampler_seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=sampler_seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=sampler_seed)
    if name == "gp":
        try:
            import torch  # noqa: F401  (GPSampler's own dependency)
        except ImportError:
            raise UsageError("sampler: gp needs PyTorch; pip install torch, or choose tpe") from None
        return optuna.samplers.GPSampler(seed=sampler_seed)
    raise UsageError(f"sampler: unknown sampler {name!r}")


