"""What the commands show people in a terminal: tables of trials and studies, the chosen
trial's values and the rerun's comparison, as rich renderables and lines the CLI prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table

from sweep.results.columns import COLUMNS, METRIC_COLUMNS, compact
from sweep.stores import records

if TYPE_CHECKING:
    import pandas as pd
    from optuna.trial import FrozenTrial

    from sweep.results.front import Front
    from sweep.study.rerun import RerunResult


def trials_table(frame: pd.DataFrame, title: str, objectives: Sequence[str] = ()) -> Table:
    """The compact columns of `frame`'s trials (`sweep.results.columns.compact`)."""
    columns = [column for column in compact(objectives) if column in frame]
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(COLUMNS[column], justify="left" if column in ("schedule", "mlflow_run_id") else "right",
                         no_wrap=True)
    for row in frame.to_dict("records"):
        table.add_row(*(_trial_cell(column, row.get(column)) for column in columns))
    return table


def _trial_cell(column: str, value: Any) -> str:
    if value is None or isinstance(value, float) and math.isnan(value):  # not measured
        return ""
    if column == "mlflow_run_id":
        return str(value)[:8]
    if column == "compression_ratio":
        return f"{value:.2f}x"
    if column.endswith("latency_ms"):
        return f"{float(value) * 1000:.1f}"  # shown in µs
    if column.endswith("bytes"):
        return f"{value:.0f}"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def hypervolume_lines(front: Front) -> list[str]:
    """The front's hypervolume, its reference point and, if any, its history per trial."""
    volume = f"{front.hypervolume:.4f} (reference point: {front.reference}; 1.0 is a perfect model of no size or latency)"
    lines = [f"hypervolume {volume}"]
    if front.history:
        steps = "  ".join(f"{n}:{v:.3f}" for n, v in front.history)
        lines.append(f"hypervolume after each completed trial (trial:hv): {steps}")
    return lines


def trial_lines(trial: FrozenTrial, details: dict[str, Any]) -> list[str]:
    """`sweep best`'s chosen trial, a value a line: its metrics, sampled values, pruning
    steps, seed and run (`details`: `sweep.results.selection.trial_details`)."""
    lines = []
    metrics = records.trial_metrics(trial)
    for key in METRIC_COLUMNS:
        if key in metrics:  # studies measured before int8 and latency existed lack the last four
            lines.append(f"  {key:<20} {cell(metrics[key])}")
    for key, value in {**trial.params, **{f"pruning_{k}": v for k, v in details["steps"].items()}, "seed": details["seed"]}.items():
        lines.append(f"  {key:<20} {cell(value)}")
    lines.append(f"  {'mlflow_run_id':<20} {details['mlflow_run_id']}")
    return lines


def studies_table(frame: pd.DataFrame, title: str) -> Table:
    """`sweep studies`: a row per study (`sweep.stores.optuna_storage.study_rows`)."""
    table = Table(box=box.SIMPLE_HEAD, title=title)
    for column in frame.columns:
        table.add_column(column.replace("_", " "), justify="left" if column in ("study", "objectives") else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*(cell(v) for v in row))
    return table


def rerun_table(result: RerunResult) -> Table:
    """Each compared metric, original and rerun, and whether they agree."""
    from sweep.study.rerun import COMPARED, LATENCY_TOLERANCE, TIMED

    table = Table(title=f"trial {result.trial}: original vs rerun", box=box.SIMPLE_HEAD)
    for column in ("metric", "original", "rerun", ""):
        table.add_column(column, justify="right")
    close = "same" if result.tolerance == 0 else f"within {result.tolerance:.0%}"
    for name in COMPARED:
        before, after = result.original.get(name), result.reproduced.get(name)
        agrees = f"within {LATENCY_TOLERANCE:.0%}" if name in TIMED else close
        verdict = "" if before is None else "[red]DIFFERS[/]" if name in result.differences else f"[green]{agrees}[/]"
        table.add_row(name, cell(before), cell(after), verdict)
    return table


def rerun_warnings(result: RerunResult) -> list[str]:
    """What a rerun's user must know: a tolerance, differences, how to load a sparse int8 file."""
    from sweep.study.rerun import SPARSE_INT8_NOTE, SPARSE_INT8_NOTE_FILE

    warnings = []
    if result.tolerance:
        warnings.append(f"the study trains with train.deterministic: false, so a rerun is compared within "
                        f"{result.tolerance:.0%}, not exactly")
    if result.differences:
        warnings.append(f"[red]warning:[/] the rerun differs in {', '.join(result.differences)} "
                        f"(another machine, TensorFlow version or thread settings?)")
    if result.reproduced.get("int8_xnnpack") == 0.0:
        warnings.append(f"{SPARSE_INT8_NOTE} (also in {SPARSE_INT8_NOTE_FILE})")
    return warnings


def cell(value: object) -> str:
    if isinstance(value, float):
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3g}"
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    return "" if value is None else str(value)
