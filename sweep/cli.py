"""The `sweep` command line. Heavy libraries load inside the commands that use them,
so `sweep --help` answers without importing TensorFlow."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console

from sweep.errors import SweepError

if TYPE_CHECKING:  # loaded by the commands that use them: `sweep --help` stays fast
    import pandas as pd

app = typer.Typer(
    help="Find the best way to prune a Keras model: an Optuna search over tfmot pruning "
    "schedules, every trial logged to MLflow.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
    rich_markup_mode="markdown",  # help paragraphs reflow; `code` shows as code
)
# Piped or captured output is not cut to 80 columns: tables stay whole in logs.
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
stdout = Console(width=None if sys.stdout.isatty() else 120)
_debug = False

StudyFile = Annotated[Path, typer.Argument(help="Study file (YAML), e.g. studies/quickstart.yaml.")]
StorageOption = Annotated[
    str | None,
    typer.Option("--storage", help="Optuna storage URL [env SWEEP_STORAGE; default sqlite:///sweep.db]."),
]
TrackingOption = Annotated[
    str | None,
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
    if debug:  # also for --jobs workers: TensorFlow's native lines, MLflow's store tracebacks
        os.environ["SWEEP_DEBUG"] = "1"


@app.command()
def run(
    study_file: StudyFile,
    n_trials: Annotated[
        int | None,
        typer.Option("--n-trials", min=1, help="Add this many trials instead of running to the study's n_trials."),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="Start no new trial after this many seconds.")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="Worker processes on this machine; they split the cores.")
    ] = 1,
    max_failures: Annotated[
        str,
        typer.Option("--max-failures", help="Stop after more failed trials than this: a fraction of the trials wanted (0.5) or a count (3)."),
    ] = "0.5",
    wait_for_stores: Annotated[
        float,
        typer.Option("--wait-for-stores", min=0, envvar="SWEEP_WAIT_FOR_STORES",
                     help="Seconds to wait for the storage and tracking servers to answer, for "
                          "workers started with them (containers) [env SWEEP_WAIT_FOR_STORES]."),
    ] = 0,
    measure_aside: Annotated[
        bool,
        typer.Option("--measure-aside", help="Measure each trial's TFLite files in a CPU process while the "
                                             "next trial trains: for a GPU machine."),
    ] = False,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Run or resume a pruning study: each trial trains a pruned model and logs it to MLflow.

    Runs until the study has n_trials complete trials (so running it again resumes it);
    --n-trials N adds N more. Several `sweep run` processes, here (--jobs) or on other
    machines sharing --storage and --tracking-uri, cooperate on one study.

    Example: sweep run studies/quickstart.yaml --jobs 2
    """
    from sweep.config import load_study_config
    from sweep.stores.urls import storage_url
    from sweep.stores.urls import tracking_uri as resolve_tracking_uri

    config = load_study_config(study_file)
    from sweep.study.runner import RunRequest, run_study
    from sweep.ui.progress import StudyProgress

    request = RunRequest(
        config=config,
        storage_url=storage_url(storage),
        tracking_uri=resolve_tracking_uri(tracking_uri),
        n_trials=n_trials,
        timeout=timeout,
        jobs=jobs,
        max_failures=max_failures,
        wait_for_stores=wait_for_stores,
        measure_aside=measure_aside,
    )
    with contextlib.ExitStack() as shown:  # the progress display starts once the run knows its plan
        study = run_study(request, progress=lambda plan: shown.enter_context(
            StudyProgress(plan, config.train.epochs, stderr)))
    from sweep.results.pareto import pareto_trials, trial_table
    from sweep.stores import records

    _print_front(trial_table(pareto_trials(study)), study.study_name, records.objectives(study))


StudyFileOptional = Annotated[
    Path | None, typer.Argument(help="Study file (YAML) naming the study; or use --study.", show_default=False)
]
StudyNameOption = Annotated[str | None, typer.Option("--study", help="Study name, instead of a study file.")]
Format = Annotated[Literal["table", "csv", "json"], typer.Option(
    "--format", help="table (for people), csv or json (for scripts).")]
MinAccuracy = Annotated[float | None, typer.Option(
    "--min-accuracy", min=0, max=1, help="Smallest model with accuracy >= A (int8_val_accuracy with an int8_accuracy objective).")]
MaxSize = Annotated[int | None, typer.Option(
    "--max-size", min=1, help="Most accurate model with size <= BYTES (compressed_bytes; int8_gzip_bytes with an int8_size "
                          "objective, int8_bytes with int8_file_size).")]
MaxLatency = Annotated[float | None, typer.Option(
    "--max-latency", min=0, help="Only trials with latency <= MS (latency_ms with a latency objective, else int8_latency_ms).")]


@app.command()
def pareto(
    study_file: StudyFileOptional = None,
    study_name: StudyNameOption = None,
    output_format: Format = "table",
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the front to FILE (.png or .html).")] = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Show the Pareto-optimal trials, the front's hypervolume, and tag their MLflow runs.

    Runs on the front get the tag sweep.pareto=true (others false), so the MLflow UI can
    filter with tags.sweep.pareto = 'true'.

    Example: sweep pareto studies/quickstart.yaml --plot front.png
    """
    from sweep.results.front import study_front
    from sweep.study.opened import open_study

    if plot is not None and plot.suffix.lower() not in (".png", ".html"):
        from sweep.errors import UsageError

        raise UsageError(f"--plot: use a .png or .html file name, got {plot.name!r}")
    opened = open_study(study_file, study_name, storage, tracking_uri)
    tracker = opened.tracker  # before any work: a wrong --tracking-uri is the first error
    if plot is not None:
        tracker.follow_copied_project()  # the plot is logged: into a copied project's own mlruns/
    opened.measure_front()
    front = study_front(opened.study, opened.config)
    front.tag_runs(tracker)
    if plot is not None:
        front.plot(plot, tracker)
        stderr.print(f"plot written to {plot}")

    if output_format == "csv":
        sys.stdout.write(front.table.to_csv(index=False))
    elif output_format == "json":
        sys.stdout.write(front.to_json())
    else:
        from sweep.ui.terminal import hypervolume_lines

        _print_front(front.table, front.name, front.objectives)
        for line in hypervolume_lines(front):
            stdout.print(line, soft_wrap=False)


@app.command()
def best(
    study_file: StudyFileOptional = None,
    study_name: StudyNameOption = None,
    min_accuracy: MinAccuracy = None,
    max_size: MaxSize = None,
    max_latency: MaxLatency = None,
    output_format: Annotated[Literal["table", "yaml", "json"], typer.Option(
        "--format", help="table, yaml (a study file fixing every value) or json.")] = "table",
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Pick one Pareto-optimal trial and print its full hyperparameters.

    --max-latency MS first keeps the trials at most that slow. --min-accuracy A: the smallest
    model with accuracy >= A. --max-size BYTES: the most accurate model of at most BYTES.
    Neither: the most accurate within --max-latency or, without it, the knee, the trial
    closest to the ideal point once each objective is min-max normalised over the front.
    Accuracy and size are the int8 file's when the study's objectives are.

    Example: sweep best studies/quickstart.yaml --min-accuracy 0.95 --format yaml > chosen.yaml
    """
    import json

    from sweep.results.selection import describe_choice, trial_details
    from sweep.study.opened import open_study
    from sweep.study.rerun import trial_study_config

    opened = open_study(study_file, study_name, storage, tracking_uri)
    opened.measure_front()
    trial = opened.choose(min_accuracy, max_size, max_latency)
    if output_format == "yaml":
        sys.stdout.write(trial_study_config(opened.config, trial).to_yaml())
        return
    details = trial_details(trial)
    if output_format == "json":
        sys.stdout.write(json.dumps(details, indent=2) + "\n")
        return
    from sweep.ui.terminal import trial_lines

    how = describe_choice(opened.config.objectives, min_accuracy, max_size, max_latency)
    stdout.print(f"[bold]trial {trial.number}[/] of {opened.study.study_name} ({how})", highlight=False)
    for line in trial_lines(trial, details):
        stdout.print(line, highlight=False)


@app.command()
def rerun(
    study_file: StudyFileOptional = None,
    output: Annotated[Path | None, typer.Option("--output", help="New folder for the exported model.")] = None,
    trial_number: Annotated[int | None, typer.Option("--trial", min=0, help="Trial number to rerun.")] = None,
    use_best: Annotated[bool, typer.Option("--best", help="Rerun the trial `sweep best` picks (same flags).")] = False,
    min_accuracy: MinAccuracy = None,
    max_size: MaxSize = None,
    max_latency: MaxLatency = None,
    register: Annotated[str | None, typer.Option("--register", help="Register the model under NAME in the MLflow Model Registry.")] = None,
    study_name: StudyNameOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Train one trial again (same seed, same starting weights) and export the deployable model.

    Writes to --output: model.keras (stripped, loads with plain tf_keras.models.load_model),
    model.tflite, study.yaml (fixes the trial's values) and metrics.json, and logs them to a new
    MLflow run tagged sweep.rerun_of with the original run id. Prints original and reproduced metrics.

    Example: sweep rerun studies/quickstart.yaml --best --min-accuracy 0.95 --output exported/
    """
    from sweep.errors import UsageError
    from sweep.results.outputs import check_output_folder
    from sweep.study.opened import open_study

    if output is None:
        raise UsageError("--output: give a new folder for the exported model, e.g. --output exported/")
    if (trial_number is None) == (not use_best):
        raise UsageError("choose the trial with --trial N or --best (with --min-accuracy/--max-size)")
    check_output_folder(output, "rerun")
    from sweep.stores import records
    from sweep.study.rerun import rerun_trial  # TensorFlow: after the checks

    opened = open_study(study_file, study_name, storage, tracking_uri)
    trial = (opened.choose(min_accuracy, max_size, max_latency) if trial_number is None  # --best
             else opened.completed_trial(trial_number))
    stderr.print(f"rerunning trial {trial.number} of {opened.study.study_name} (seed {records.seed(trial)})")
    result = rerun_trial(opened.study, trial, opened.config, opened.tracker, output, register=register)
    from sweep.ui.terminal import rerun_table, rerun_warnings

    stdout.print(rerun_table(result))
    stdout.print(f"exported to {result.output} (mlflow run {result.run_id})", highlight=False)
    for warning in rerun_warnings(result):
        stderr.print(warning)


@app.command()
def report(
    study_file: StudyFileOptional = None,
    output: Annotated[Path | None, typer.Option(
        "--output", help="New or empty folder for the figures and report.html (or one sweep report wrote).")] = None,
    min_accuracy: MinAccuracy = None,
    max_size: MaxSize = None,
    max_latency: MaxLatency = None,
    study_name: StudyNameOption = None,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Write the analysis figures (PNG) and a one-page HTML summary, and log them to MLflow.

    The figures are the notebook's: the front, achieved vs target sparsity, weight decay and
    schedule family vs accuracy, the front's sparsity schedules, the chosen trial's per-layer
    sparsity (chosen as `sweep best` would, with the same flags) and hypervolume per trial.

    Example: sweep report studies/quickstart.yaml --output report/ --min-accuracy 0.95
    """
    from sweep.errors import UsageError
    from sweep.results.analysis import report_study
    from sweep.results.outputs import check_report_folder
    from sweep.study.opened import open_study

    if output is None:
        raise UsageError("--output: give a folder for the report, e.g. --output report/")
    opened = open_study(study_file, study_name, storage, tracking_uri)
    opened.tracker.follow_copied_project()  # the report is logged: into a copied project's own mlruns/
    check_report_folder(output, opened.tracker.local_artifact_store())
    opened.measure_front()
    chosen = opened.choose(min_accuracy, max_size, max_latency).number
    figure_count = report_study(opened.study, opened.config, chosen, output, opened.tracker)
    stdout.print(f"report for trial {chosen} written to {output / 'report.html'} ({figure_count} figures)", highlight=False)


@app.command()
def doctor(
    study_file: StudyFileOptional = None,
    study_name: StudyNameOption = None,
    repair: Annotated[bool, typer.Option("--repair", help="Mend what can be mended.")] = False,
    storage: StorageOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Check that Optuna and MLflow agree one to one, and repair what differs with --repair.

    Every complete trial must have exactly one FINISHED MLflow run, every FINISHED trial run
    a complete trial, and no trial may be RUNNING without heartbeats (a dead worker; stale
    after 3 x SWEEP_HEARTBEAT_INTERVAL seconds, as for `sweep run`). Only reads without
    --repair. Exits 1 if problems remain.

    Example: sweep doctor studies/quickstart.yaml --repair
    """
    from sweep.stores.urls import storage_url
    from sweep.stores.urls import tracking_uri as resolve_tracking_uri
    from sweep.study.doctor import agreement, apply, diagnose, open_for_check
    from sweep.study.opened import name_of_study

    study, tracker, opened = open_for_check(name_of_study(study_file, study_name), storage_url(storage),
                                            resolve_tracking_uri(tracking_uri), repair=repair)
    problems = diagnose(study, tracker, opened)
    if not problems:
        stdout.print(agreement(study))
        return
    lines, remaining = apply(problems, repair)
    for line in lines:
        stdout.print(line, highlight=False)
    if remaining:
        hint = "" if repair else "; run with --repair to fix them"
        stderr.print(f"{remaining} problem{'s' if remaining > 1 else ''} left{hint}")
        raise typer.Exit(1)


@app.command()
def studies(
    storage: StorageOption = None,
    output_format: Format = "table",
) -> None:
    """List every study in the storage: trial counts by state, objectives and best values.

    Example: sweep studies --storage sqlite:///sweep.db
    """
    import json

    from sweep.stores.optuna_storage import STUDY_COLUMNS, study_rows
    from sweep.stores.urls import mask_password, storage_url

    rows = study_rows(storage_url(storage))
    if output_format == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    import pandas as pd

    frame = pd.DataFrame(rows, columns=STUDY_COLUMNS)
    if output_format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
        return
    from sweep.ui.terminal import studies_table

    stdout.print(studies_table(frame, f"studies in {mask_password(storage_url(storage))}"))


PortOption = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to serve on.")]
HostOption = Annotated[str, typer.Option("--host", help="Interface to bind; 0.0.0.0 (or ::) exposes it to the network.")]


@app.command()
def ui(
    study_file: StudyFileOptional = None,
    study_name: StudyNameOption = None,
    port: PortOption = 5000,
    host: HostOption = "127.0.0.1",
    tracking_uri: TrackingOption = None,
) -> None:
    """Start the MLflow UI on the tracking store `sweep run` uses, and print its URL.

    With a study (file or --study NAME): the URLs of its runs and of its saved "Pareto
    front" view (the front's runs, with accuracy and size as columns).
    Ctrl-C, SIGTERM and SIGHUP stop the whole server, its workers and job runners too.
    A tracking server (http:// or https://) serves its own UI: its pages are printed, read
    with MLflow's login (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD).

    Example: sweep ui studies/quickstart.yaml --port 5001
    """
    from sweep.errors import UsageError
    from sweep.stores.checks import require_tracking_store
    from sweep.stores.urls import is_tracking_server, mask_password
    from sweep.stores.urls import tracking_uri as resolve_tracking_uri
    from sweep.ui.servers import port_in_use, serve, tracking_ui_pages

    uri = resolve_tracking_uri(tracking_uri)
    require_tracking_store(uri)  # a local server would create a store a mistyped URI names
    pages = tracking_ui_pages(uri, _name_if_given(study_file, study_name), host, port)
    if is_tracking_server(uri):  # it serves its own UI: we print its pages
        _print_pages(stdout, "MLflow UI of the tracking server", pages, "log in as an MLflow user")
        return
    if port_in_use(host, port):
        raise UsageError(f"--port: port {port} on {host} is already in use; pass another --port")
    _print_pages(stderr, f"MLflow UI for {mask_password(uri)}", pages, "Ctrl-C stops it")
    # The store URI (password and all) goes in the environment: a command line is public in `ps`.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    sys.exit(serve([sys.executable, "-m", "mlflow", "ui", "--host", host, "--port", str(port)], env))


def _print_pages(console: Console, title: str, pages: dict[str, str], hint: str) -> None:
    """The first page on the title's line, the others below it; a URL is one line, to copy whole."""
    [(first, url), *more] = pages.items()
    console.print(f"{title}: open {url}  {first and f'({first}) '}({hint})", highlight=False, soft_wrap=True)
    for name, url in more:
        console.print(f"  {name}: {url}", highlight=False, soft_wrap=True)


@app.command()
def dashboard(
    study_file: StudyFileOptional = None,
    study_name: StudyNameOption = None,
    port: PortOption = 8080,
    host: HostOption = "127.0.0.1",
    storage: StorageOption = None,
) -> None:
    """Serve the Optuna storage in optuna-dashboard, and print the URL of the study's page.

    Needs the dashboard extra: pip install 'sweep[dashboard]'. Ctrl-C stops it.

    Example: sweep dashboard studies/quickstart.yaml --port 8081
    """
    from sweep.errors import UsageError
    from sweep.stores.checks import require_storage
    from sweep.stores.urls import mask_password, storage_url
    from sweep.ui.servers import dashboard_page, port_in_use

    try:
        import optuna_dashboard
    except ImportError:
        raise UsageError("sweep dashboard needs optuna-dashboard; pip install 'sweep[dashboard]' "
                         "(or pip install optuna-dashboard)") from None
    url = storage_url(storage)
    require_storage(url)
    page = dashboard_page(url, _name_if_given(study_file, study_name), host, port)
    if port_in_use(host, port):
        raise UsageError(f"--port: port {port} on {host} is already in use; pass another --port")
    stderr.print(f"optuna-dashboard for {mask_password(url)}: open {page}  (Ctrl-C stops it)", highlight=False,
                 soft_wrap=True)
    # In this process: the storage URL (password and all) never reaches a command line.
    with contextlib.suppress(KeyboardInterrupt):
        optuna_dashboard.run_server(url, host=host, port=port)


def _name_if_given(study_file: Path | None, study_name: str | None) -> str | None:
    """The study's name if the command was given one (a study file or --study)."""
    if study_file is None and study_name is None:
        return None
    from sweep.study.opened import name_of_study

    return name_of_study(study_file, study_name)


def _print_front(frame: pd.DataFrame, study_name: str, objectives: Sequence[str]) -> None:
    if frame.empty:
        stderr.print("no feasible completed trials yet")
        return
    from sweep.ui.terminal import trials_table

    stdout.print(trials_table(frame, f"Pareto-optimal trials of {study_name}", objectives))


def main() -> None:
    """Console entry point: user errors print one line and exit with their code."""
    try:
        app()
    except SweepError as error:
        if _debug:
            raise
        from rich.markup import escape  # messages quote ranges like [low, high]: not markup

        from sweep.stores.urls import mask_passwords_in

        stderr.print(f"[red]error:[/] {escape(mask_passwords_in(str(error)))}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
