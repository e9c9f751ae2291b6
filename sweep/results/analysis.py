"""A study's results as tables and figures: from MLflow (for notebooks) or from the
Optuna storage (for `sweep report`), in the same shape, drawn by the same code.

    >>> runs = load_runs("sqlite:///mlflow.db", "digits-quickstart")
    >>> runs.trials[["trial", "schedule", "val_accuracy", "compressed_bytes"]].head()
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd
import yaml
from matplotlib.figure import Figure

from sweep.config import StudyConfig, parse_stored_config
from sweep.results import plots
from sweep.results.columns import COLUMNS, METRIC_COLUMNS
from sweep.results.outputs import record_output
from sweep.results.pareto import completed_trials, hypervolume_history, pareto_front, trial_table
from sweep.search.trial_plan import SchedulePlan, trial_plan
from sweep.stores import records
from sweep.stores.readback import TrialRun, read_study

if TYPE_CHECKING:
    from sweep.stores.tracking import Tracker

TEXT_PARAMS = {"schedule", "pattern", "policy"}
INTEGER_PARAMS = {"frequency", "breakpoints", "seed", "total_steps", "pruning_begin_step", "pruning_end_step",
                  "pruning_frequency"}


@dataclass
class StudyResults:
    name: str
    config: StudyConfig
    baseline: dict[str, float]
    trials: pd.DataFrame  # one row per completed trial: trial, schedule, params, metrics, feasible
    study_run_id: str | None = None

    @property
    def front(self) -> pd.DataFrame:
        return pareto_front(self.trials, self.config.objectives)

    @property
    def hypervolume_history(self) -> list[tuple[int, float]]:
        return hypervolume_history(self.trials, self.config.objectives, self.baseline)

    def plan(self, trial: int) -> SchedulePlan:
        """The schedule plan trial `trial` trained with, rebuilt from its params by the same
        code training uses."""
        row = self.trials.set_index("trial").loc[trial]
        names = [n for n in row.index if n in self.config.search.model_fields or n.startswith("step_")]
        params = {n: row[n] for n in names if n != "step_params" and not _missing(row[n])}
        return trial_plan(optuna.trial.FixedTrial(params), self.config.search, int(row["total_steps"]))[1]


def load_runs(tracking_uri: str, study_name: str) -> StudyResults:
    """The study's FINISHED trial runs from MLflow, its resolved study file and dense
    baseline from the parent run (`sweep.stores.readback`)."""
    stored = read_study(tracking_uri, study_name)
    config = parse_stored_config(yaml.safe_load(stored.config_yaml), source=f"{study_name} study.yaml")
    return StudyResults(study_name, config, stored.baseline, _runs_table(stored.trials), stored.study_run_id)


def from_study(study: optuna.Study, config: StudyConfig) -> StudyResults:
    """The same results from the Optuna storage."""
    done = completed_trials(study)
    table = trial_table(done)
    if done:
        table["total_steps"] = [records.stored_plan(t)["total_steps"] for t in done]
    study_run_id = records.mlflow_study_run_id(study) if records.has_mlflow_study_run_id(study) else None
    return StudyResults(study.study_name, config, records.baseline(study), table, study_run_id)


def _runs_table(runs: list[TrialRun]) -> pd.DataFrame:
    rows = []
    for run in runs:
        row: dict[str, Any] = {"trial": run.number, "mlflow_run_id": run.run_id, "feasible": run.feasible}
        row.update({name: float(value) for name, value in sorted(run.metrics.items()) if not _missing(value)})
        row.update({name: _typed(name, value) for name, value in sorted(run.params.items())})
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values("trial").reset_index(drop=True) if rows else table


def _typed(name: str, value: str) -> Any:
    if name in TEXT_PARAMS or name.startswith("pattern/"):
        return value
    return int(value) if name in INTEGER_PARAMS else float(value)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and pd.isna(value))


def figures(results: StudyResults, chosen: int) -> dict[str, Figure]:
    """Every analysis figure, by file stem: the front, achieved vs target sparsity, weight
    decay and family vs accuracy, the front's schedules, the chosen trial's layers, and
    hypervolume after each trial."""
    front = results.front
    chosen_row = results.trials.set_index("trial").loc[chosen].copy()
    chosen_row["trial"] = chosen
    return {
        "pareto_front": plots.pareto_figure(results.trials, front, results.baseline,
                                            f"{results.name}: {' vs '.join(results.config.objectives)}",
                                            results.config.objectives),
        "sparsity_achieved": plots.sparsity_figure(results.trials),
        "weight_decay": plots.weight_decay_figure(results.trials),
        "schedules": plots.schedules_figure({int(n): results.plan(int(n)) for n in front["trial"]}),
        "layer_sparsity": plots.layer_sparsity_figure(chosen_row),
        "hypervolume": plots.hypervolume_figure(results.hypervolume_history),
    }


def front_table(front: pd.DataFrame) -> pd.DataFrame:
    return front[[c for c in COLUMNS if c in front]]


def baseline_table(baseline: Mapping[str, float]) -> pd.DataFrame:
    keys = (*METRIC_COLUMNS, "params", "train_seconds")
    return pd.DataFrame([{k: baseline[k] for k in keys if k in baseline}])


def write_report(results: StudyResults, chosen: int, output: Path) -> tuple[list[Path], int]:
    """The analysis figures (PNG) and a one-page `report.html` in `output`, each file
    renamed into place once whole, and listed in the folder's manifest (`sweep.results.outputs`:
    sweep may write them again); returns the files written and the number of figures."""
    drawn = figures(results, chosen)
    output.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=output))
    try:
        for stem, figure in drawn.items():
            figure.savefig(staging / f"{stem}.png", dpi=110)
        sections = [
            plots.svg(drawn["pareto_front"]),
            "<h2>Pareto-optimal trials</h2>" + plots.table_html(front_table(results.front)),
            "<h2>Dense baseline</h2>" + plots.table_html(baseline_table(results.baseline)),
            f"<h2>Chosen: trial {chosen}</h2>",
            *(plots.svg(figure) for stem, figure in drawn.items() if stem != "pareto_front"),
            f"<h2>Study file</h2><pre>{html.escape(results.config.to_yaml())}</pre>",
        ]
        (staging / "report.html").write_text(plots.html_page(f"sweep report: {results.name}", sections))
        written = sorted(output / item.name for item in staging.iterdir())
        for path in written:
            os.replace(staging / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    record_output(output, "report", written)
    return written, len(drawn)


def report_study(study: optuna.Study, config: StudyConfig, chosen: int, output: Path, tracker: Tracker) -> int:
    """`write_report` of a study in the Optuna storage, its files then logged to the study's
    MLflow run under `report/`; returns the number of figures."""
    results = from_study(study, config)
    written, figure_count = write_report(results, chosen, output)
    if results.study_run_id:  # only the report's files: not its manifest, nor what it wrote before
        for path in written:
            tracker.log_artifact(results.study_run_id, str(path), "report")
    return figure_count
