"""What sweep records in the Optuna storage: every key of a trial's and a study's user
attributes, named here, and the functions that read and write them.

The key strings are a storage format. A study stored by an older sweep is read by this one
(resumed, reported, rerun, repaired), so a key's string never changes: a new meaning gets a
new key. Values are what Optuna keeps of user attributes: JSON (dicts, lists, strings and
numbers; a tuple comes back as a list).

A trial records
    seed, tf_threads      its training seed and thread count (`sweep rerun` replays both)
    plan                  its pruning schedule in absolute steps (a `SchedulePlan` as a dict)
    mlflow_run_id         its MLflow run, once created
    rungs, early_stopped  early stopping's values by epoch; the epoch it was stopped after
    rungs_planned         early stopping's values by epoch, for the `planned` rule's rungs
    pruned_layers, layers the layers it pruned, and how it pruned each
    metrics               everything measured: it was trained and measured to the end
    weights_sha256        of its stripped weights, kept in its MLflow run (`study.saved_weights`)
    tracking_error        why an MLflow write of it failed (its results are then Optuna's only)
    curves                its training curves by epoch, kept only with a tracking_error,
                          for `sweep doctor --repair` to replay to MLflow
    error                 why it failed or was stopped early
    timings, worker_rss_mb  where its time went, and its worker's memory after it (benchmarks/)
    skipped               it was one too many of racing workers, failed before training
and a study records
    config, study_folder  the study file it ran (paths relative to study_folder, the study
                          file's folder at its last `sweep run`)
    objectives            its objectives
    data_fingerprint, model_fingerprint  what its trials were measured on
    mlflow_study_run_id   its MLflow parent run
    baseline              the dense model's metrics
    baseline_weights_sha256, baseline_weights_run_id  the trained baseline's weights the
                          trials start from, and the MLflow run holding them
    later_metrics:<N>     trial N's deploy metrics, measured after it finished
                          (`study.front_metrics`; read merged by `with_later_metrics`).
sweep sets no system attributes (those Optuna sets, such as a retry's `failed_trial`, are
Optuna's).

Readers of what sweep writes before anything reads it (a trial's seed and plan, a complete
trial's metrics, a study's baseline and MLflow run) raise `KeyError` when it is missing, as
indexing the attributes did; `has_...` asks first. Readers of what may be missing return
None or an empty value.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from sweep.search.early_stopping import Peer

if TYPE_CHECKING:
    import optuna

    from sweep.search.trial_plan import SchedulePlan

    AnyTrial = optuna.Trial | FrozenTrial  # a running trial, or one read from the storage
    # A study, or its user attributes read without opening it (`existing_study_attrs`).
    AnyStudy = optuna.Study | Mapping[str, Any]

# A trial's user attributes. Never change a string: stored studies use them.
SEED = "seed"
TF_THREADS = "tf_threads"
PLAN = "plan"
MLFLOW_RUN_ID = "mlflow_run_id"
RUNGS = "rungs"  # early stopping's values by epoch
RUNGS_PLANNED = "rungs_planned"  # the same for the `planned` rule's rungs, which compare other values
EARLY_STOPPED = "early_stopped"  # the epoch after which early stopping stopped the trial
PRUNED_LAYERS = "pruned_layers"
LAYERS = "layers"
METRICS = "metrics"
TRACKING_ERROR = "tracking_error"
CURVES = "curves"
ERROR = "error"
TIMINGS = "timings"
WORKER_RSS_MB = "worker_rss_mb"
SKIPPED = "skipped"
WEIGHTS_SHA256 = "weights_sha256"  # of the stripped weights kept in its MLflow run
CHANNELS = "channels"  # a channel trial's output channels per producer: the shapes its saved weights load into
TRIAL_KEYS = (SEED, TF_THREADS, PLAN, MLFLOW_RUN_ID, RUNGS, RUNGS_PLANNED, EARLY_STOPPED, PRUNED_LAYERS, LAYERS,
              METRICS, TRACKING_ERROR, CURVES, ERROR, TIMINGS, WORKER_RSS_MB, SKIPPED, WEIGHTS_SHA256, CHANNELS)

# A study's user attributes. Never change a string: stored studies use them.
CONFIG = "config"
STUDY_FOLDER = "study_folder"
OBJECTIVES = "objectives"
DATA_FINGERPRINT = "data_fingerprint"
MODEL_FINGERPRINT = "model_fingerprint"
MLFLOW_STUDY_RUN_ID = "mlflow_study_run_id"
BASELINE = "baseline"
BASELINE_WEIGHTS_SHA256 = "baseline_weights_sha256"
# The study's run when the weights were logged: a study run deleted since is replaced, this is not.
BASELINE_WEIGHTS_RUN_ID = "baseline_weights_run_id"
# `LATER_METRICS` + trial number: the deploy metrics measured after the trial finished (Optuna
# cannot change a finished trial's attributes), one key per trial so that writers never race.
LATER_METRICS = "later_metrics:"
STUDY_KEYS = (CONFIG, STUDY_FOLDER, OBJECTIVES, DATA_FINGERPRINT, MODEL_FINGERPRINT,
              MLFLOW_STUDY_RUN_ID, BASELINE, BASELINE_WEIGHTS_SHA256, BASELINE_WEIGHTS_RUN_ID, LATER_METRICS)


# --- a trial: written by its worker while it runs -------------------------------------------

def record_seed(trial: optuna.Trial, seed: int) -> None:
    trial.set_user_attr(SEED, seed)


def record_tf_threads(trial: optuna.Trial, threads: int) -> None:
    trial.set_user_attr(TF_THREADS, threads)


def record_plan(trial: optuna.Trial, plan: SchedulePlan) -> None:
    trial.set_user_attr(PLAN, asdict(plan))


def record_mlflow_run_id(trial: optuna.Trial, run_id: str) -> None:
    trial.set_user_attr(MLFLOW_RUN_ID, run_id)


def record_rung(trial: optuna.Trial, epoch: int, values: Mapping[str, Any], planned: bool = False) -> None:
    """Add the early-stopping values after `epoch` to those of the epochs before (of the
    `planned` rule's rungs, or the `pruned` rule's)."""
    trial.set_user_attr(RUNGS_PLANNED if planned else RUNGS, {**rungs(trial, planned), str(epoch): values})


def record_early_stopped(trial: optuna.Trial, epoch: int) -> None:
    trial.set_user_attr(EARLY_STOPPED, epoch)


def record_pruned_layers(trial: optuna.Trial, pruned: list[str]) -> None:
    trial.set_user_attr(PRUNED_LAYERS, pruned)


def record_layers(trial: optuna.Trial, layers: Mapping[str, Mapping[str, Any]]) -> None:
    trial.set_user_attr(LAYERS, layers)


def record_channels(trial: optuna.Trial, channels: Mapping[str, int]) -> None:
    trial.set_user_attr(CHANNELS, dict(channels))


def record_metrics(trial: optuna.Trial, metrics: Mapping[str, float]) -> None:
    trial.set_user_attr(METRICS, metrics)


def record_tracking_error(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(TRACKING_ERROR, reason)


def record_curves(trial: optuna.Trial, curves: Mapping[str, list[float]]) -> None:
    trial.set_user_attr(CURVES, curves)


def record_error(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(ERROR, reason)


def record_timings(trial: optuna.Trial, timings: Mapping[str, float]) -> None:
    trial.set_user_attr(TIMINGS, timings)


def record_worker_rss_mb(trial: optuna.Trial, megabytes: float) -> None:
    trial.set_user_attr(WORKER_RSS_MB, megabytes)


def record_weights_sha256(trial: optuna.Trial, sha256: str) -> None:
    trial.set_user_attr(WEIGHTS_SHA256, sha256)


def mark_skipped(trial: optuna.Trial) -> None:
    trial.set_user_attr(SKIPPED, True)


# --- a trial: read ---------------------------------------------------------------------------

def seed(trial: AnyTrial) -> int:
    return trial.user_attrs[SEED]


def tf_threads(trial: AnyTrial) -> int | None:
    """None for a trial stored before sweep recorded it."""
    return trial.user_attrs.get(TF_THREADS)


def stored_plan(trial: AnyTrial) -> dict[str, Any]:
    """The plan as stored; an older study's may lack fields `SchedulePlan` has since gained."""
    return trial.user_attrs[PLAN]


def mlflow_run_id(trial: AnyTrial) -> str | None:
    """None until the run exists, and for a trial whose MLflow write failed before it knew it."""
    return trial.user_attrs.get(MLFLOW_RUN_ID)


def rungs(trial: AnyTrial, planned: bool = False) -> dict[str, dict[str, Any]]:
    """Early stopping's values by epoch (`"<epoch>": {"losses": [...], "val_accuracy": a}`),
    at the `planned` rule's rungs or the `pruned` rule's."""
    return trial.user_attrs.get(RUNGS_PLANNED if planned else RUNGS, {})


def rung_peers(trials: Sequence[FrozenTrial], number: int, planned: bool = False) -> list[Peer]:
    """The trials a rung of trial `number` compares it with: the others running, complete or
    stopped early, with their records at that rule's rungs."""
    return [Peer(rungs(t, planned),
                 t.user_attrs.get(METRICS, {}).get("val_accuracy") if t.state == TrialState.COMPLETE else None)
            for t in trials if t.number != number and t.state in (TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.RUNNING)]


def early_stopped_epoch(trial: AnyTrial) -> int | None:
    """The epoch after which early stopping stopped the trial; None for one it did not."""
    return trial.user_attrs.get(EARLY_STOPPED)


def pruned_layers(trial: AnyTrial) -> list[str]:
    """Empty for a trial that failed or was stopped before it was measured."""
    return trial.user_attrs.get(PRUNED_LAYERS) or []


def layers(trial: AnyTrial) -> dict[str, dict[str, Any]]:
    """How each pruned layer was pruned (`asdict` of its `LayerPruning`), by name."""
    return trial.user_attrs.get(LAYERS) or {}


def channels(trial: AnyTrial) -> dict[str, int]:
    """A channel trial's output channels per producer layer ({} for any other trial: its
    layers keep their shapes)."""
    return trial.user_attrs.get(CHANNELS) or {}


def has_metrics(trial: AnyTrial) -> bool:
    """Whether the trial was trained and measured to the end."""
    return METRICS in trial.user_attrs


def trial_metrics(trial: AnyTrial) -> dict[str, float]:
    return trial.user_attrs[METRICS]


def weights_sha256(trial: AnyTrial) -> str | None:
    """Of the stripped weights the trial kept; None if it kept none (MLflow failed, or an
    older sweep ran it)."""
    return trial.user_attrs.get(WEIGHTS_SHA256)


def tracking_error(trial: AnyTrial) -> str | None:
    return trial.user_attrs.get(TRACKING_ERROR)


def curves(trial: AnyTrial) -> dict[str, list[float]]:
    """Empty unless MLflow missed them (`tracking_error`)."""
    return trial.user_attrs.get(CURVES, {})


def trial_error(trial: AnyTrial, default: str) -> str:
    """Why the trial failed or was stopped early; `default` where it recorded no reason."""
    return trial.user_attrs.get(ERROR, default)


def is_skipped(trial: AnyTrial) -> bool:
    return SKIPPED in trial.user_attrs


# --- a study: written by `sweep run` as it sets the study up ---------------------------------

def record_study_attrs(study: optuna.Study, attrs: Mapping[str, Any]) -> None:
    """Several study attributes at once, keyed by this module's study keys
    (`sweep.study.resume.study_attrs`, `sweep.study.fingerprints.input_fingerprints`)."""
    for key, value in attrs.items():
        study.set_user_attr(key, value)


def record_mlflow_study_run_id(study: optuna.Study, run_id: str) -> None:
    study.set_user_attr(MLFLOW_STUDY_RUN_ID, run_id)


def record_baseline(study: optuna.Study, metrics: Mapping[str, float]) -> None:
    study.set_user_attr(BASELINE, metrics)


def record_later_metrics(study: optuna.Study, number: int, metrics: Mapping[str, float]) -> None:
    """Deploy metrics of finished trial `number`, measured after it (`study.front_metrics`)."""
    study.set_user_attr(f"{LATER_METRICS}{number}", {**later_metrics(study).get(number, {}), **metrics})


def record_baseline_weights(study: optuna.Study, sha256: str, run_id: str) -> None:
    study.set_user_attr(BASELINE_WEIGHTS_SHA256, sha256)
    study.set_user_attr(BASELINE_WEIGHTS_RUN_ID, run_id)


# --- a study: read ---------------------------------------------------------------------------

def _attrs(study: AnyStudy) -> Mapping[str, Any]:
    return study if isinstance(study, Mapping) else study.user_attrs


def stored_config(study: AnyStudy) -> dict[str, Any] | None:
    """The study file as `sweep run` stored it (`StudyConfig.stored`); None for a study
    sweep did not create."""
    return _attrs(study).get(CONFIG)


def study_folder(study: AnyStudy) -> str | None:
    """The study file's folder at the study's last `sweep run`; None before sweep recorded it."""
    return _attrs(study).get(STUDY_FOLDER)


def objectives(study: AnyStudy) -> list[str]:
    return _attrs(study).get(OBJECTIVES, [])


def input_fingerprint(study: AnyStudy, key: str) -> str | None:
    """The fingerprint stored under `key` (`DATA_FINGERPRINT` or `MODEL_FINGERPRINT`); None
    for a study stored before it."""
    return _attrs(study).get(key)


def has_mlflow_study_run_id(study: AnyStudy) -> bool:
    return MLFLOW_STUDY_RUN_ID in _attrs(study)


def mlflow_study_run_id(study: AnyStudy) -> str:
    return _attrs(study)[MLFLOW_STUDY_RUN_ID]


def has_baseline(study: AnyStudy) -> bool:
    """Whether the dense baseline was measured (it is written last: then it is complete)."""
    return BASELINE in _attrs(study)


def baseline(study: AnyStudy) -> dict[str, float]:
    return _attrs(study)[BASELINE]


def later_metrics(study: AnyStudy) -> dict[int, dict[str, float]]:
    """By trial number: the deploy metrics measured after the trial finished."""
    return {int(key.removeprefix(LATER_METRICS)): value for key, value in _attrs(study).items()
            if key.startswith(LATER_METRICS)}


def with_later_metrics(study: AnyStudy, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """`trials` with the metrics measured after them merged into their own (copies of the
    trials that have any; the others as they are)."""
    later = later_metrics(study)
    merged = []
    for trial in trials:
        if trial.number in later:
            trial = copy.copy(trial)
            trial.user_attrs = {**trial.user_attrs, METRICS: {**trial.user_attrs.get(METRICS, {}),
                                                               **later[trial.number]}}
        merged.append(trial)
    return merged


def baseline_weights_sha256(study: AnyStudy) -> str | None:
    return _attrs(study).get(BASELINE_WEIGHTS_SHA256)


def baseline_weights_run_id(study: AnyStudy) -> str | None:
    return _attrs(study).get(BASELINE_WEIGHTS_RUN_ID)
