"""Our thin MLflow layer: one parent run per study, one nested child run per trial.

optuna-integration's `MLflowCallback` is deprecated and makes no parent run; this
module talks to `MlflowClient` directly, so no global "active run" state leaks between
trials or worker threads.

Layout in the tracking store (experiment = study name):

* parent run, tags `sweep.role=study`, `sweep.study=<name>`: the resolved study file
  (`study.yaml`), the dense baseline's metrics as `baseline/<metric>` and, when trials
  start from it, its weights (`baseline/weights.h5`);
* child run per trial, tags `sweep.role=trial`, `sweep.study`, `sweep.trial_number`,
  `mlflow.parentRunId`: every sampled hyperparameter and derived step as params,
  the trial's metrics, and per-epoch curves with step = epoch. A failed trial's run
  ends FAILED with the error in the tag `sweep.error`; its stripped weights
  (`trial/weights.h5`). Deploy metrics a trial did not measure are logged later, from those
  weights, when it is on the front, and named in the tag `sweep.measured_later`. `sweep pareto` tags trial runs
  `sweep.pareto=true|false`; with `constraints.min_accuracy`, `sweep.feasible=true|false`;
* a run per `sweep rerun`, tags `sweep.role=rerun`, `sweep.rerun_of=<original run id>`,
  nested under the study's run, with the exported models and the Keras model as an MLflow
  model (`Tracker.log_keras_model`);
* experiment tags for the MLflow UI (`Tracker.present`): the experiment's kind, and the
  saved runs-table view "Pareto front".

Every command reaches MLflow through this package: a `Tracker`'s own client, never the
process-wide tracking URI, except while `log_keras_model` runs (MLflow's model logging reads
only that one). `sweep.stores.readback` reads a study back for notebooks.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sweep.errors import UsageError
from sweep.search.trial_plan import SchedulePlan
from sweep.stores.checks import require_tracking_store
from sweep.stores.urls import error_summary, follow_copied_artifacts, mask_password, read_only_uri

ROLE, STUDY, TRIAL_NUMBER, ERROR = "sweep.role", "sweep.study", "sweep.trial_number", "sweep.error"
PARETO, RERUN_OF, FEASIBLE = "sweep.pareto", "sweep.rerun_of", "sweep.feasible"
PRUNED_LAYERS = "sweep.pruned_layers"  # comma-separated names of the layers a trial pruned
EARLY_STOPPED = "sweep.early_stopped"  # the epoch after which a trial was stopped early
MEASURED_LATER = "sweep.measured_later"  # the metrics logged after the trial, from its saved weights
PARENT = "mlflow.parentRunId"
BASELINE_PREFIX = "baseline/"
# How the MLflow UI (3.15+) presents an experiment: its kind, and saved runs-table views,
# each an experiment tag holding {"name", "createdAt", "updatedAt", "state"} (the view's
# filter, sort and columns as JSON), opened by `#/experiments/<id>/runs?viewStateShareKey=<id>`.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SAVED_VIEW_PREFIX, PARETO_VIEW = "mlflow.sharedViewState.", "pareto-front"
MAX_TAG_LENGTH = 5000  # MLflow's tag value limit is 8000; keep room for the rest


class NoExperiment(UsageError):
    """Raised by `Tracker(create=False)` when the store has no experiment of the study."""


class Tracker:
    """MLflow runs of one study.

    >>> tracker = Tracker("sqlite:///mlflow.db", "digits-quickstart")
    >>> parent = tracker.study_run(config_yaml="name: digits-quickstart\\n")
    """

    def __init__(self, tracking_uri: str, study_name: str, create: bool = True, read_only: bool = False) -> None:
        """`create=False` only finds: a missing store or experiment, or a local file that is
        not an MLflow store, is a `UsageError` (a wrong --tracking-uri must not get a new
        database, experiment or MLflow's tables). `read_only` also opens a SQLite store so
        that nothing can write to it (`stores.urls.read_only_uri`), for commands that must only
        read (`sweep doctor` without --repair, `sweep ui`), even on a read-only file."""
        with _first_store_opening():
            self._open(tracking_uri, study_name, create, read_only)

    def _open(self, tracking_uri: str, study_name: str, create: bool, read_only: bool) -> None:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "creating tables" chatter
        # A failed write reaches us as an exception and is reported in one line (a trial's
        # `tracking_error`, a warning); MLflow also logs it with its traceback (SWEEP_DEBUG shows it).
        if not os.environ.get("SWEEP_DEBUG"):
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.tracking_uri = tracking_uri
        self.study_name = study_name
        create = create and not read_only
        if not create:
            require_tracking_store(tracking_uri)
        try:
            self.client = MlflowClient(read_only_uri(tracking_uri) if read_only else tracking_uri)
            experiment_id = self._experiment_id(create)
        except MlflowException as error:
            raise UsageError(
                f"cannot use the MLflow tracking store {mask_password(tracking_uri)}: "
                f"{error_summary(error)}; start the server or pass another --tracking-uri"
            ) from None
        if experiment_id is None:
            raise NoExperiment(f"no MLflow experiment {study_name!r} in {mask_password(tracking_uri)}; pass the "
                             f"--tracking-uri (or MLFLOW_TRACKING_URI) that `sweep run` used")
        self.experiment_id = experiment_id

    def follow_copied_project(self) -> None:
        """Before a command reads or writes the study's artifacts (`sweep run`, `rerun`,
        `doctor --repair`, `pareto --plot`, `report`): in a copied or moved project, point
        them at the copy's own `mlruns/` (`stores.urls.follow_copied_artifacts`), saying so once."""
        moved_from = follow_copied_artifacts(self.tracking_uri, self.experiment_id)
        if moved_from:
            print(f"note: the MLflow store {mask_password(self.tracking_uri)} was copied or moved: the study's "
                  f"artifacts are now read and written next to it, not in {moved_from}", file=sys.stderr)

    def _experiment_id(self, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(self.study_name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                raise UsageError(
                    f"the MLflow experiment {self.study_name!r} is deleted; restore it "
                    f"(mlflow experiments restore) or rename the study"
                )
            return experiment.experiment_id
        if not create:
            return None
        try:
            return self.client.create_experiment(self.study_name)
        except MlflowException:  # another worker created it first
            experiment = self.client.get_experiment_by_name(self.study_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # --- the study's parent run -----------------------------------------------------

    def find_study_run(self) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE}` = 'study' and tags.`{STUDY}` = '{self.study_name}'",
            order_by=["attributes.start_time ASC", "attributes.run_id ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def study_run(self, config_yaml: str) -> str:
        """The study's parent run: found again on resume, created on first use.

        Two workers starting a new study together may both create one; both then keep
        the earliest and the other is deleted, so the study has exactly one.
        """
        existing = self.find_study_run()
        if existing is not None:
            return existing
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.study_name} (study)",
            tags={ROLE: "study", STUDY: self.study_name},
        )
        self.client.log_text(run.info.run_id, config_yaml, "study.yaml")
        self.client.set_terminated(run.info.run_id, "FINISHED")
        winner = self.find_study_run()
        if winner is not None and winner != run.info.run_id:
            self.client.delete_run(run.info.run_id)
            return winner
        return run.info.run_id

    def log_baseline(self, study_run_id: str, metrics: Mapping[str, float]) -> None:
        self._log(study_run_id, {f"{BASELINE_PREFIX}{k}": v for k, v in metrics.items()})

    def baseline(self, study_run_id: str) -> dict[str, float]:
        """The dense baseline's metrics `log_baseline` logged, without their prefix."""
        metrics = self.client.get_run(study_run_id).data.metrics
        return {k.removeprefix(BASELINE_PREFIX): v for k, v in metrics.items() if k.startswith(BASELINE_PREFIX)}

    # --- one run per trial ------------------------------------------------------------

    def start_trial(self, study_run_id: str, number: int, params: Mapping[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:03d}",
            tags={PARENT: study_run_id, ROLE: "trial", STUDY: self.study_name, TRIAL_NUMBER: str(number)},
        )
        self._log(run.info.run_id, params={k: v for k, v in params.items()})
        return run.info.run_id

    def start_rerun(
        self, study_run_id: str, number: int, original_run_id: str, params: Mapping[str, Any]
    ) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number:03d}-rerun",
            tags={
                PARENT: study_run_id,
                ROLE: "rerun",
                STUDY: self.study_name,
                TRIAL_NUMBER: str(number),
                RERUN_OF: original_run_id,
            },
        )
        self._log(run.info.run_id, params=params)
        return run.info.run_id

    def _trial_runs_filter(self) -> str:
        return f"tags.`{ROLE}` = 'trial' and tags.`{STUDY}` = '{self.study_name}'"

    def unfinished_trial_runs(self, number: int) -> list[str]:
        """The ids of trial `number`'s runs still RUNNING. A worker lost between creating a
        trial's run and recording its id in Optuna leaves one that only its tag names."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"{self._trial_runs_filter()} and tags.`{TRIAL_NUMBER}` = '{number}' "
                          f"and attributes.status = 'RUNNING'",
        )
        return [run.info.run_id for run in runs]

    def trial_runs(self, finished_only: bool = False) -> dict[str, Any]:
        """Every (not deleted) trial run of the study, by run id; only the FINISHED ones
        with `finished_only`."""
        where = self._trial_runs_filter() + (" and attributes.status = 'FINISHED'" if finished_only else "")
        found: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=where,
                max_results=1000,
                page_token=token,
            )
            found.update({run.info.run_id: run for run in page})
            token = page.token
            if not token:
                return found

    def present(self, metrics: Sequence[str]) -> None:
        """Let the MLflow UI open the study where a user works: a model-training experiment
        (not the GenAI pages), with a saved runs-table view "Pareto front" showing `metrics`,
        most accurate first, of the runs `sweep pareto` tagged as on the front. Each tag is
        written only where it is missing: a view the user saved over, or a kind they chose,
        stays theirs."""
        present = self.client.get_experiment(self.experiment_id).tags
        if EXPERIMENT_KIND not in present:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        if SAVED_VIEW_PREFIX + PARETO_VIEW in present:
            return
        state = {"searchFilter": f"tags.{PARETO} = 'true'", "orderByKey": f"metrics.`{metrics[0]}`",
                 "orderByAsc": False, "selectedColumns": [f"metrics.`{metric}`" for metric in metrics]}
        now = int(time.time() * 1000)
        view = {"name": "Pareto front", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(self.experiment_id, SAVED_VIEW_PREFIX + PARETO_VIEW, json.dumps(view))

    def ui_pages(self, base_url: str) -> dict[str, str]:
        """The MLflow UI pages of the study at `base_url`: its runs, and its Pareto view if
        the study has one (`present`)."""
        runs = f"{base_url}/#/experiments/{self.experiment_id}/runs"
        pages = {"runs": f"{runs}?workflowType=machine_learning"}
        if SAVED_VIEW_PREFIX + PARETO_VIEW in self.client.get_experiment(self.experiment_id).tags:
            pages["Pareto front"] = f"{runs}?viewStateShareKey={PARETO_VIEW}&workflowType=machine_learning"
        return pages

    def set_pareto_tags(self, pareto_run_ids: set[str]) -> int:
        """Tag trial runs `sweep.pareto=true` on the front, `false` elsewhere; returns how
        many tags changed (only those are written)."""
        changed = 0
        for run_id, run in self.trial_runs().items():
            value = "true" if run_id in pareto_run_ids else "false"
            if run.data.tags.get(PARETO) != value:
                self.client.set_tag(run_id, PARETO, value)
                changed += 1
        return changed

    def is_deleted(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "deleted"
        except MlflowException:
            return False

    def local_artifact_store(self) -> Path | None:
        """The experiment's artifact folder if it is on this machine (a path or file: URI)."""
        from urllib.parse import unquote, urlsplit

        location = self.client.get_experiment(self.experiment_id).artifact_location
        parts = urlsplit(location)
        if parts.scheme == "file":
            return Path(unquote(parts.path)).resolve()
        if parts.scheme == "" or len(parts.scheme) == 1:  # a plain path (or C:\\ on Windows)
            return Path(location).resolve()
        return None

    def restore_run(self, run_id: str) -> None:
        self.client.restore_run(run_id)

    def log_artifact(self, run_id: str, path: str, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, path, folder)

    def download_artifact(self, run_id: str, path: str, folder: str) -> Path:
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no bar on our progress display
        return Path(self.client.download_artifacts(run_id, path, folder))

    def log_keras_model(self, run_id: str, model: object, example: object, register: str | None = None) -> None:
        """`model` as an MLflow model (tensorflow flavour, artifact `model`) of run `run_id`,
        registered under `register` if given. MLflow's flavours log only through the
        process-wide tracking URI and active run: both are set for this call alone."""
        import mlflow
        import mlflow.tensorflow

        # MLflow predicts on the input example; keep Keras's progress bar off our stdout
        with _process_tracking_uri(self.tracking_uri), mlflow.start_run(run_id=run_id), \
                contextlib.redirect_stdout(io.StringIO()):
            mlflow.tensorflow.log_model(model, name="model", input_example=example, registered_model_name=register,
                                        pip_requirements=keras_model_requirements(model))

    def log_results(
        self,
        run_id: str,
        metrics: Mapping[str, float],
        curves: Mapping[str, Sequence[float]] = {},
        tags: Mapping[str, str] = {},
        params: Mapping[str, Any] = {},
    ) -> None:
        """Curves at steps 0..epochs-1, final metrics after them (at step = epochs), so the
        latest value of `val_accuracy` is the stripped model's, and the curve stays whole."""
        final_step = max((len(v) for v in curves.values()), default=0)
        self._log(run_id, metrics, params=params, curves=curves, tags=tags, step=final_step)

    def log_later_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Metrics of a finished trial measured after it, named in `MEASURED_LATER`."""
        names = sorted({*metrics, *self.measured_later(run_id)})
        self._log(run_id, metrics, tags={MEASURED_LATER: ",".join(names)[:MAX_TAG_LENGTH]})

    def measured_later(self, run_id: str) -> list[str]:
        """The metrics `log_later_metrics` logged to run `run_id`."""
        value = self.client.get_run(run_id).data.tags.get(MEASURED_LATER, "")
        return value.split(",") if value else []

    def run_status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def fail_trial(
        self,
        run_id: str,
        error: str,
        curves: Mapping[str, Sequence[float]] = {},
        status: str = "FAILED",
    ) -> None:
        """End a trial's run as FAILED (or KILLED) with the reason in `sweep.error`."""
        self._log(run_id, curves=curves, tags={ERROR: error[:MAX_TAG_LENGTH]})
        self.client.set_terminated(run_id, status)

    def stop_trial(self, run_id: str, epoch: int, reason: str, curves: Mapping[str, Sequence[float]] = {}) -> None:
        """End a trial's run KILLED as stopped early after `epoch`, with its curves so far."""
        self._log(run_id, curves=curves, tags={EARLY_STOPPED: str(epoch), ERROR: reason[:MAX_TAG_LENGTH]})
        self.client.set_terminated(run_id, "KILLED")

    def _log(
        self,
        run_id: str,
        metrics: Mapping[str, float] = {},
        *,
        params: Mapping[str, Any] = {},
        curves: Mapping[str, Sequence[float]] = {},
        tags: Mapping[str, str] = {},
        step: int = 0,
    ) -> None:
        """Everything in one batched request (MlflowClient splits it at MLflow's limits)."""
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        entries += [
            Metric(name, float(value), now, epoch)
            for name, values in curves.items()
            for epoch, value in enumerate(values)
        ]
        self.client.log_batch(
            run_id,
            metrics=entries,
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )


_store_opened = False


@contextlib.contextmanager
def _first_store_opening() -> Iterator[None]:
    """The first `Tracker` of a process imports MLflow, its store and its tables' classes:
    objects that live as long as the process. As `sweep._tf` does for TensorFlow's, the
    collector is paused while they are made, then they are frozen, out of every later pass;
    after one collection, so that no garbage is frozen with them (a model `check_model` built)."""
    global _store_opened
    if _store_opened:
        yield
        return
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.collect()
        gc.freeze()
        _store_opened = True
    finally:
        if collecting:
            gc.enable()


@contextlib.contextmanager
def _process_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` inside the block only; before and after,
    it (and MLFLOW_TRACKING_URI, which setting it also changes) are what they were."""
    # MLflow's own scoped setter (private; it has no public one), pinned by pyproject's mlflow<3.18
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    environment = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if environment is not None:
            os.environ["MLFLOW_TRACKING_URI"] = environment


def result_tags(pruned_layers: list[str], violations: Mapping[str, float]) -> dict[str, str]:
    """The tags a trial's run gets with its results (also used by `sweep doctor` to log
    them later): which layers were pruned and, with constraints, whether it is feasible."""
    tags = {PRUNED_LAYERS: ",".join(pruned_layers)[:MAX_TAG_LENGTH]}
    if violations:
        tags[FEASIBLE] = "true" if all(v <= 0 for v in violations.values()) else "false"
    return tags


def result_params(pruned_layers: Sequence[str], layers: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The params a trial's run gets with its results (also used by `sweep doctor`): how
    many layers it pruned, and each one's pattern and target sparsity."""
    params: dict[str, Any] = {"pruned_layers": len(pruned_layers)}
    for name, how in layers.items():
        params[f"pattern/{name}"] = how["pattern"]
        params[f"target_sparsity/{name}"] = round(how["target"], 6)
    return params


def trial_run_params(params: Mapping[str, Any], plan: SchedulePlan, seed: int) -> dict[str, Any]:
    """What a trial's MLflow run records as params: the sampled values, the absolute steps
    and the seed (also used by `sweep doctor` to recreate a run MLflow never got)."""
    return {**params, **plan.as_params(), "seed": seed}


KERAS_MODEL_DISTRIBUTIONS = ("cloudpickle", "mlflow", "numpy", "scipy", "tensorflow", "tf-keras")  # as MLflow infers them


def keras_model_requirements(model: Any) -> list[str]:
    """What loading `model` as an MLflow model needs, pinned to this environment: the packages
    MLflow's own inference finds for a Keras model, and those of any layer class from another
    installed package. MLflow's inference loads the model again in a subprocess that imports
    TensorFlow: seconds per `sweep rerun` (benchmarks/README.md, section 17)."""
    import re
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    owners = packages_distributions()
    modules = {type(layer).__module__.partition(".")[0] for layer in model.submodules if hasattr(layer, "get_config")}
    names = {re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: tf_keras is tf-keras
             for name in (*KERAS_MODEL_DISTRIBUTIONS, *(d for module in modules for d in owners.get(module, ())))}
    pinned = []
    for name in sorted(names):
        with contextlib.suppress(PackageNotFoundError):  # scipy, say: not every environment has it
            pinned.append(f"{name}=={version(name)}")
    return pinned
