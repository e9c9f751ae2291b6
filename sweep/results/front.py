"""What `sweep pareto` reports of a study: its feasible Pareto-optimal trials as a table, the
front's hypervolume (with its reference point, and after each completed trial) and the
dense baseline; as JSON for scripts; and what it writes to MLflow: the `sweep.pareto` tag
of every trial run, and the plot of the front, logged to the study's run under `plots/`.

    >>> front = study_front(study, config)
    >>> front.tag_runs(tracker)
    >>> print(front.to_json())
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.results.analysis import StudyResults, from_study, front_table
from sweep.results.pareto import pareto_trials, reference_description, trial_table
from sweep.stores import records

if TYPE_CHECKING:
    import optuna
    import pandas as pd
    from optuna.trial import FrozenTrial

    from sweep.config import StudyConfig
    from sweep.stores.tracking import Tracker


@dataclass
class Front:
    name: str
    objectives: Sequence[str]
    trials: list[FrozenTrial]  # the feasible Pareto-optimal trials, most accurate first
    table: pd.DataFrame  # `trials` as rows (`trial_table`)
    results: StudyResults  # every completed trial, and the dense baseline
    history: list[tuple[int, float]]  # (trial, hypervolume of the trials up to it)
    reference: str  # the reference point, in words

    @property
    def hypervolume(self) -> float:
        return self.history[-1][1] if self.history else 0.0  # the last is of every trial

    def tag_runs(self, tracker: Tracker) -> int:
        """Tag the trial runs `sweep.pareto=true` on the front, `false` elsewhere; returns
        how many tags changed."""
        return tracker.set_pareto_tags({run_id for t in self.trials
                                        if (run_id := records.mlflow_run_id(t)) is not None})

    def plot(self, path: Path, tracker: Tracker) -> None:
        """Draw every trial and the front to `path` (.png, or .html with the front's table)
        and log it to the study's MLflow run under `plots/`."""
        from sweep.results.plots import pareto_figure, save_figure

        title = f"{self.name}: {' vs '.join(self.objectives)}"
        figure = pareto_figure(self.results.trials, self.table, self.results.baseline, title, self.objectives)
        save_figure(figure, path, table=front_table(self.table), title=title)
        if self.results.study_run_id:
            tracker.log_artifact(self.results.study_run_id, str(path), "plots")

    def to_json(self) -> str:
        return json.dumps({
            "study": self.name,
            "objectives": self.objectives,
            "hypervolume": self.hypervolume,
            "reference_point": self.reference,
            "hypervolume_history": [{"trial": n, "hypervolume": v} for n, v in self.history],
            "baseline": self.results.baseline,
            # exact values (pandas' to_json rounds to 10 digits: a value read back would not
            # select the trial it came from); missing ones as null
            "trials": self.table.astype(object).where(self.table.notna(), None).to_dict(orient="records"),
        }, indent=2) + "\n"


def study_front(study: optuna.Study, config: StudyConfig) -> Front:
    """The front of `study` (read from the Optuna storage) and its hypervolume."""
    results = from_study(study, config)
    trials = pareto_trials(study)
    return Front(study.study_name, config.objectives, trials, trial_table(trials), results,
                 results.hypervolume_history, reference_description(config.objectives, results.baseline))
