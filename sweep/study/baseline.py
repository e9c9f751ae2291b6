"""The dense baseline: the model before pruning, measured once per study, as its trials
are (`modeling.metrics.trial_groups`; the other deploy metrics come with the front's,
`study.front_metrics`).

A pretrained model is the baseline as it is: measured on the study's data, never
retrained. A builder's model is trained once with the trials' budget; its trained weights
are kept as an artifact of the study's MLflow run and checked against the SHA-256 the
study recorded. With `model.start: baseline` they are where every trial starts: found
again on resume, by every `--jobs` or remote worker and by `sweep rerun`, so every trial
and rerun starts from the very same weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import optuna

from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.errors import SweepError
from sweep.modeling.metrics import trial_groups
from sweep.modeling.train_and_measure import train_and_measure
from sweep.stores import records
from sweep.stores.tracking import Tracker
from sweep.stores.urls import error_summary
from sweep.study.fingerprints import file_fingerprint
from sweep.study.saved_weights import keep_weights

WEIGHTS_ARTIFACT = "baseline/weights.h5"


def starts_from_baseline(config: StudyConfig) -> bool:
    """Whether trials start from the trained baseline's weights (a pretrained model's
    trials start from the file instead)."""
    return config.model.pretrained is None and config.model.start == "baseline"


def ensure_baseline(
    study: optuna.Study, tracker: Tracker, study_run_id: str, config: StudyConfig, dataset: Dataset
) -> dict[str, float]:
    """The dense model's metrics (and a builder's trained weights), once per study."""
    if records.has_baseline(study):
        return records.baseline(study)
    from sweep.modeling.measure import measure
    from sweep.modeling.models import starting_model

    if config.model.pretrained is not None:
        baseline = measure(starting_model(config.model, dataset.input_shape, dataset.num_classes), dataset,
                           trial_groups(config), export=config.export)
        baseline["train_seconds"] = 0.0
    else:
        evaluated = train_and_measure(dataset, config, config.seed, groups=trial_groups(config))
        trained, baseline = evaluated.trained, evaluated.metrics
        sha256 = keep_weights(trained.model, tracker, study_run_id, WEIGHTS_ARTIFACT)
        records.record_baseline_weights(study, sha256, study_run_id)
    records.record_baseline(study, baseline)  # last: a crash before it trains the baseline again
    tracker.log_baseline(study_run_id, baseline)
    return baseline


def start_weights(study: optuna.Study, tracker: Tracker, config: StudyConfig, folder: str) -> Path | None:
    """The baseline's weights downloaded into `folder`, if trials start from them."""
    return baseline_weights(study, tracker, folder) if starts_from_baseline(config) else None


def baseline_model(study: optuna.Study, tracker: Tracker, config: StudyConfig, dataset: Dataset) -> Any:
    """The dense baseline (a Keras model) as the study measured it: the pretrained model, or
    the builder's with the weights the study trained."""
    from sweep.modeling.models import rebuilt_model

    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        weights = None if config.model.pretrained is not None else baseline_weights(study, tracker, folder)
        return rebuilt_model(config.model, dataset.input_shape, dataset.num_classes, weights)


def baseline_weights(study: optuna.Study, tracker: Tracker, folder: str) -> Path:
    """The trained baseline's weights, downloaded into `folder` and checked."""
    expected = records.baseline_weights_sha256(study)
    run_id = records.baseline_weights_run_id(study)
    if expected is None or run_id is None:
        raise SweepError(f"study {study.study_name!r} has no baseline weights recorded; run `sweep run` again")
    try:
        path = tracker.download_artifact(run_id, WEIGHTS_ARTIFACT, folder)
    except Exception as error:
        raise SweepError(
            f"cannot download the baseline weights ({WEIGHTS_ARTIFACT} of MLflow run {run_id}): "
            f"{error_summary(error)}; check the tracking store"
        ) from error
    if file_fingerprint(path) != expected:
        raise SweepError(
            f"the baseline weights in MLflow run {run_id} are not the ones the study trained (SHA-256 "
            f"mismatch): the artifact was changed; give the study a new name to start again"
        )
    return path
