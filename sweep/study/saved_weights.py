"""A trial's stripped weights, kept as an artifact of its MLflow run, so that the deploy
metrics and files its study did not measure per trial can be made later without training
it again (`sweep.study.front_metrics`). The SHA-256 recorded in Optuna proves that the
weights read back are the ones the trial trained.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.errors import SweepError
from sweep.stores.tracking import Tracker
from sweep.stores.urls import error_summary
from sweep.study.fingerprints import file_fingerprint

ARTIFACT = "trial/weights.h5"


def keep_weights(model: Any, tracker: Tracker, run_id: str, artifact: str = ARTIFACT) -> str:
    """Log the Keras `model`'s weights to run `run_id` as `artifact`; returns their SHA-256."""
    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        path = Path(folder) / Path(artifact).name
        model.save_weights(path)
        return log_weights(path, tracker, run_id, artifact)


def log_weights(path: Path, tracker: Tracker, run_id: str, artifact: str = ARTIFACT) -> str:
    """Log weights saved at `path` (named as `artifact`) to run `run_id`; returns their SHA-256."""
    assert path.name == Path(artifact).name, "MLflow names an artifact after its file"
    tracker.log_artifact(run_id, str(path), str(Path(artifact).parent))
    return file_fingerprint(path)


def saved_model(config: StudyConfig, dataset: Dataset, tracker: Tracker, run_id: str, sha256: str,
                channels: dict[str, int] | None = None) -> Any:
    """The stripped model of the trial of run `run_id`: the study's model (narrowed to a
    channel trial's `channels`) with the weights it kept. `SweepError` if they cannot be
    read or are not the ones recorded."""
    from sweep.modeling.models import rebuilt_model

    with tempfile.TemporaryDirectory(prefix="sweep-") as folder:
        try:
            path = tracker.download_artifact(run_id, ARTIFACT, folder)
        except Exception as error:
            raise SweepError(f"cannot download {ARTIFACT} of MLflow run {run_id}: {error_summary(error)}") \
                from error
        if file_fingerprint(path) != sha256:
            raise SweepError(f"{ARTIFACT} of MLflow run {run_id} is not the file the trial saved (SHA-256 mismatch)")
        return rebuilt_model(config.model, dataset.input_shape, dataset.num_classes, path, channels)
