"""The columns people compare, in one list: the front's tables (the report, `pareto --plot`,
the notebook, the terminal), `sweep best` and the MLflow UI's saved "Pareto front" view."""

from __future__ import annotations

from collections.abc import Sequence

from sweep.config import OBJECTIVES

# In order, with the short header the terminal shows.
COLUMNS = {
    "trial": "trial", "schedule": "schedule", "pattern": "pattern", "policy": "policy", "allocation": "allocation",
    "val_accuracy": "val acc", "test_accuracy": "test acc", "sparsity": "sparsity", "compressed_bytes": "gzip bytes",
    "compression_ratio": "ratio", "tflite_gzip_bytes": "tflite gzip", "int8_val_accuracy": "int8 acc",
    "int8_bytes": "int8 bytes", "int8_gzip_bytes": "int8 gzip", "latency_ms": "latency µs", "int8_latency_ms": "int8 µs",
    "mlflow_run_id": "mlflow run",
}
PARAMETER_COLUMNS = ("trial", "schedule", "pattern", "policy", "allocation", "mlflow_run_id")
METRIC_COLUMNS = tuple(c for c in COLUMNS if c not in PARAMETER_COLUMNS)
# What a compact table always shows; the other metrics only when an objective is one of them.
COMPACT_COLUMNS = ("trial", "schedule", "val_accuracy", "test_accuracy", "sparsity", "compressed_bytes",
                   "compression_ratio", "mlflow_run_id")

# The first columns of a trial table (`pareto.trial_table`, what `sweep pareto --format csv`
# prints), in order: every other metric and every param follow.
TRIAL_TABLE_METRICS = ("val_accuracy", "test_accuracy", "sparsity", "compressed_bytes", "compression_ratio")
TRIAL_TABLE_COLUMNS = ("trial", "schedule", "final_sparsity", *TRIAL_TABLE_METRICS, "mlflow_run_id")


def compact(objectives: Sequence[str]) -> list[str]:
    """The columns of a compact table (the terminal's, the MLflow UI's view): the usual ones,
    and the metrics of `objectives`."""
    wanted = set(COMPACT_COLUMNS) | {OBJECTIVES[o][0] for o in objectives}
    return [c for c in COLUMNS if c in wanted]
