"""The `sweep` command line. Heavy libraries load inside the commands that use them,
so `sweep --help` answers without importing TensorFlow."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from sweep.errors import SweepError

app = typer.Typer(
    help="Find the best way to prune a Keras model: an Optuna search over tfmot pruning "
    "schedules, every trial logged to MLflow.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
stderr = Console(stderr=True)
stdout = Console()
_debug = False

StudyFile = Annotated[Path, typer.Argument(help="Study file (YAML), e.g. studies/quickstart.yaml.")]
StorageOption = Annotated[
    Optional[str],
    typer.Option("--storage", help="Optuna storage URL [env SWEEP_STORAGE; default sqlite:///sweep.db]."),
]
TrackingOption = Annotated[
    Optional[str],
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db].",
    ),
]


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
) -> None:
    global _debug
    _debug = debug


@app.command()
def run(
    study_file: StudyFile,
    n_trials: Annotated[
        Optional[int],
        typer.Option("--n-trials", min=1, help="Add this many trials instead of running to the study's n_trials."),
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", min=0, help="Stop starting new trials after this many seconds.")
    ] = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Run or resume a pruning study: each trial trains a pruned model and logs it to MLflow.

    Example: sweep run studies/quickstart.yaml --n-trials 5
    """
    from sweep.config import load_study_config
    from sweep.stores import storage_url, tracking_uri as resolve_tracking_uri

    config = load_study_config(study_file)
    from sweep.progress import StudyProgress
    from sweep.runner import run_study

    progress: StudyProgress | None = None

    def make_progress(plan):  # type: ignore[no-untyped-def]
        nonlocal progress
        progress = StudyProgress(plan, config.train.epochs, stderr).__enter__()
        return progress

    try:
        study = run_study(
            config,
            storage_url=storage_url(storage),
            tracking_uri=resolve_tracking_uri(tracking_uri),
            n_trials=n_trials,
            timeout=timeout,
            progress=make_progress,
        )
    finally:
        if progress is not None:
            progress.__exit__(None, None, None)
    _print_front(study)


def _print_front(study) -> None:  # type: ignore[no-untyped-def]
    from rich.table import Table

    from sweep.pareto import pareto_trials, trial_table

    frame = trial_table(pareto_trials(study))
    if frame.empty:
        stderr.print("no feasible completed trials yet")
        return
    table = Table(title=f"Pareto-optimal trials of {study.study_name}")
    headers = {
        "trial": "trial", "schedule": "schedule", "final_sparsity": "target",
        "val_accuracy": "val acc", "test_accuracy": "test acc", "sparsity": "sparsity",
        "compressed_bytes": "gzip bytes", "compression_ratio": "ratio", "mlflow_run_id": "mlflow run",
    }
    for column, header in headers.items():
        table.add_column(header, justify="left" if column in ("schedule", "mlflow_run_id") else "right")
    for row in frame[list(headers)].to_dict("records"):
        row["mlflow_run_id"] = str(row["mlflow_run_id"])[:12]
        table.add_row(*(_cell(value) for value in row.values()))
    stdout.print(table)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def main() -> None:
    """Console entry point: user errors print one line and exit with their code."""
    try:
        app()
    except SweepError as error:
        if _debug:
            raise
        stderr.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
