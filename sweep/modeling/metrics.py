"""Which metrics a trial measures, and when; pure Python, no TensorFlow.

Every trial measures the cheap metrics (`CORE`: accuracy, sparsity, parameters, MACs, the
gzip of its H5 file) and the deploy metric groups its objectives read. The other groups (the
float and int8 TFLite files, their accuracy and latency) cost a conversion or an
interpreter run each, so a study measures them only where a user looks: for the trials on
the front, from their saved weights, at the end of `sweep run` and by the commands that
show them (`sweep.study.front_metrics`), and always in `sweep rerun`. A study file's
`measure: all` measures every group on every trial.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sweep.config import StudyConfig

CORE = ("val_accuracy", "test_accuracy", "sparsity", "params", "nonzero_params", "macs", "compressed_bytes")
# group -> its metrics; a group is measured whole (a latency needs its file converted first)
DEPLOY_GROUPS: dict[str, tuple[str, ...]] = {
    "tflite": ("tflite_bytes", "tflite_gzip_bytes"),
    "latency": ("latency_ms", "latency_p90_ms"),
    "int8": ("int8_bytes", "int8_gzip_bytes", "int8_sparse_bytes", "int8_val_accuracy", "int8_test_accuracy",
             "int8_xnnpack"),
    "int8_latency": ("int8_latency_ms", "int8_latency_p90_ms"),
}
ALL_GROUPS = frozenset(DEPLOY_GROUPS)
# A latency is timed on its file: measuring it measures the file's group too.
PREREQUISITE = {"latency": "tflite", "int8_latency": "int8"}


def with_prerequisites(groups: Iterable[str]) -> frozenset[str]:
    named = frozenset(groups)
    return named | {PREREQUISITE[group] for group in named if group in PREREQUISITE}


def groups_of(metrics: Iterable[str]) -> frozenset[str]:
    """The deploy groups that measure any of `metrics`, with their prerequisites."""
    wanted = set(metrics)
    return with_prerequisites(group for group, names in DEPLOY_GROUPS.items() if wanted & set(names))


def trial_groups(config: StudyConfig) -> frozenset[str]:
    """The deploy groups every trial (and the dense baseline) of the study measures."""
    return ALL_GROUPS if config.measure == "all" else groups_of(config.objective_metrics)


def missing_groups(measured: Mapping[str, float]) -> frozenset[str]:
    """The deploy groups `measured` has none of (NaN counts as measured: the converter failed)."""
    return frozenset(group for group, names in DEPLOY_GROUPS.items() if not any(n in measured for n in names))
