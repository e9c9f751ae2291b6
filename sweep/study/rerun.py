"""`sweep rerun`: train one trial again and export the deployable model.

The trial's stored parameters, seed, starting weights and resolved study file replay it
exactly (with TensorFlow op determinism on, the same machine gives the same weights; a
study with `train.deterministic: false` is compared within a tolerance instead). The export is
written to a temporary sibling folder and renamed into place at the end, so an
interrupted rerun never leaves a half-written output folder; the MLflow run ends FINISHED
only once the export is in place, and FAILED (its staging folder removed) otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from sweep.config import StudyConfig
from sweep.errors import SweepError
from sweep.modeling.metrics import ALL_GROUPS
from sweep.modeling.train_and_measure import train_and_measure
from sweep.results.outputs import check_output_folder
from sweep.search.space import fixed_search
from sweep.search.trial_plan import trial_plan
from sweep.stores import records
from sweep.stores.tracking import Tracker
from sweep.study.baseline import start_weights
from sweep.study.fingerprints import check_same_inputs, input_fingerprints

# Compared between the original trial and its rerun: exactly, but latency (wall time) and
# studies without op determinism within a tolerance.
COMPARED = ("val_accuracy", "sparsity", "macs", "compressed_bytes", "test_accuracy", "tflite_gzip_bytes",
            "int8_val_accuracy", "int8_test_accuracy", "int8_bytes", "int8_gzip_bytes", "latency_ms",
            "int8_latency_ms")
TIMED = ("latency_ms", "int8_latency_ms")
LATENCY_TOLERANCE = 0.5  # relative: the same file's median invoke time varies this much between runs
TFLITE_ACCURACY_TOLERANCE = 0.01  # absolute, model.tflite's against the Keras model's
# Written next to a sparse-encoded model_int8.tflite (export.int8_storage), and said by `sweep rerun`
SPARSE_INT8_NOTE = ("model_int8.tflite stores its pruned tensors sparse (export.int8_storage); LiteRT's default "
                    "XNNPack delegate refuses that, so load it with experimental_op_resolver_type="
                    "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES (int8_latency_ms was measured that way)")
SPARSE_INT8_NOTE_FILE = "model_int8.txt"
# `train.deterministic: false`: a rerun differs by GPU float round-off, not by results
NONDETERMINISTIC_TOLERANCE = 0.02


@dataclass
class RerunResult:
    trial: int
    original: dict[str, float]
    reproduced: dict[str, float]
    run_id: str
    output: Path
    differences: list[str] = field(default_factory=list)
    tolerance: float = 0.0  # relative; 0: the study is deterministic, so a rerun must match exactly


def trial_study_config(config: StudyConfig, trial: FrozenTrial) -> StudyConfig:
    """A study file that fixes every searched value of `trial`: run it, share it."""
    return config.model_copy(
        update={
            "name": f"{config.name}-trial-{trial.number}",
            "n_trials": 1,
            "search": fixed_search(config.search, trial.params),
        }
    )


def rerun_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    config: StudyConfig,
    tracker: Tracker,
    output: Path,
    register: str | None = None,
) -> RerunResult:
    """Retrain `trial`, compare its metrics with the original's, export and log the model."""
    from sweep.data.datasets import load_dataset
    from sweep.modeling.tflite import Runner
    from sweep.modeling.training import configure_tensorflow

    check_output_folder(output, "rerun")  # also when called as a library
    original_run_id = records.mlflow_run_id(trial) or ""
    seed = int(records.seed(trial))
    # the trial's thread count: exact replay
    configure_tensorflow(records.tf_threads(trial), config.train.deterministic)
    dataset = load_dataset(config.data)
    params, plan = trial_plan(optuna.trial.FixedTrial(trial.params), config.search, dataset.total_steps(config.train))
    # Before anything is written: the trial's data, model and starting weights, unchanged.
    check_same_inputs(study, input_fingerprints(config, dataset), config)
    tracker.follow_copied_project()
    downloads = tempfile.TemporaryDirectory(prefix="sweep-")
    weights = start_weights(study, tracker, config, downloads.name)

    stored_run_id = records.mlflow_study_run_id(study) if records.has_mlflow_study_run_id(study) else None
    study_run_id = stored_run_id or tracker.study_run(config.to_yaml())
    run_id = tracker.start_rerun(
        study_run_id, trial.number, original_run_id, {**trial.params, **plan.as_params(), "seed": seed}
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}-", dir=output.parent))
    try:
        files: dict[str, bytes] = {}
        evaluated = train_and_measure(dataset, config, seed, groups=ALL_GROUPS, params=params, plan=plan,
                                      baseline=records.baseline(study), start_weights=weights, files=files)
        downloads.cleanup()
        trained, reproduced = evaluated.trained, evaluated.metrics
        original = dict(records.trial_metrics(trial))

        # what ships reaches what was measured: the float file the Keras model's accuracy
        reproduced["tflite_val_accuracy"] = Runner(files["model.tflite"]).accuracy(dataset.val)
        summary = {
            "study": study.study_name,
            "trial": trial.number,
            "seed": seed,
            "params": trial.params,
            "plan": plan.as_params(),
            "original": original,
            "reproduced": reproduced,
            "mlflow_run_id": original_run_id,
            "rerun_mlflow_run_id": run_id,
        }
        exported = _stage_export(staging, trained.model, files, trial_study_config(config, trial), summary)
        tracker.log_keras_model(run_id, trained.model, dataset.test.first_inputs(1), register)
        for name in exported:
            tracker.log_artifact(run_id, str(staging / name), "export")
        tracker.log_results(run_id, reproduced, curves=trained.history)
        problem = _move_into_place(staging, output)
        if problem:
            raise SweepError(
                f"--output: the export failed: {output} {problem}; nothing was exported and MLflow run "
                f"{run_id} is marked FAILED; rerun with a new --output folder"
            )
        tracker.end_run(run_id)  # FINISHED only now that the export is where we said
    except BaseException as error:
        reason = str(error) if isinstance(error, SweepError) else f"{type(error).__name__}: {error}"
        tracker.fail_trial(run_id, reason, status=_status(error))
        shutil.rmtree(staging, ignore_errors=True)  # gone already if the export was moved
        downloads.cleanup()
        raise
    tolerance = 0.0 if config.train.deterministic else NONDETERMINISTIC_TOLERANCE
    differences = _differences(original, reproduced, tolerance)
    return RerunResult(trial.number, original, reproduced, run_id, output, differences, tolerance)


def _stage_export(
    staging: Path, model: Any, files: dict[str, bytes], study: StudyConfig, summary: dict[str, Any]
) -> list[str]:
    """Write what ships into `staging`: the Keras model, the measured TFLite files (with a
    note on loading a sparse int8 file), the study file that reruns it and `metrics.json`.
    Returns the files to log beside the model."""
    model.save(staging / "model.keras")
    if summary["reproduced"].get("int8_xnnpack") == 0.0:
        files = {**files, SPARSE_INT8_NOTE_FILE: (SPARSE_INT8_NOTE + "\n").encode()}
    for name, content in files.items():
        (staging / name).write_bytes(content)
    (staging / "study.yaml").write_text(study.to_yaml())
    (staging / "metrics.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return [*files, "study.yaml", "metrics.json"]


def _differences(original: dict[str, float], reproduced: dict[str, float], tolerance: float) -> list[str]:
    """The compared metrics the rerun did not reproduce within their tolerance."""
    differences = [
        name for name in COMPARED
        if name in original and not _close(original[name], reproduced.get(name, math.nan),
                                           LATENCY_TOLERANCE if name in TIMED else tolerance)
    ]
    # Kernels round differently from Keras: a near-tie may flip, a real difference is more.
    if abs(reproduced["tflite_val_accuracy"] - reproduced["val_accuracy"]) > TFLITE_ACCURACY_TOLERANCE:
        differences.append("tflite_val_accuracy")
    return differences


def _close(original: float, reproduced: float, tolerance: float) -> bool:
    """Within `tolerance` of the original value (relative; 0: exactly)."""
    return abs(reproduced - original) <= tolerance * abs(original)


def _move_into_place(staging: Path, output: Path) -> str | None:
    """Rename the finished export to `output`; None, or why `output` cannot take it (it was
    checked before training, but something may have taken it since)."""
    if output.is_symlink():
        return "is a symlink"
    staging.chmod(0o755)  # mkdtemp makes it private; the export is meant to be shared
    with contextlib.suppress(OSError):
        output.rmdir()  # an empty folder is ours to replace; anything else stays and fails below
    try:
        os.replace(staging, output)
    except OSError as error:
        if output.is_symlink():
            return "is a symlink"
        if output.is_dir():
            return "was created and filled while the trial trained"
        return "is a file" if output.exists() else f"cannot be created ({error.strerror})"
    return None


def _status(error: BaseException) -> str:
    return "FAILED" if isinstance(error, Exception) else "KILLED"
