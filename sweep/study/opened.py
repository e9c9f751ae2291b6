"""A study the commands read (`sweep pareto`, `best`, `rerun`, `report`): named by a study
file or `--study NAME`, loaded from the Optuna storage with the study file `sweep run`
stored (its files found next to the given study file), and its MLflow tracker opened on
first use: not every command needs it, and it only finds the study's experiment, never
creates a store or an experiment.

    >>> opened = open_study(Path("studies/quickstart.yaml"), None, storage=None, tracking_uri=None)
    >>> opened.choose(min_accuracy=0.95).number
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.errors import SweepError, UsageError
from sweep.stores import records

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from sweep.config import StudyConfig
    from sweep.stores.tracking import Tracker


@dataclass
class OpenedStudy:
    """A study a command reads, its resolved study file, and its MLflow tracker."""

    study: optuna.Study
    config: StudyConfig
    tracking_uri: str

    @functools.cached_property
    def tracker(self) -> Tracker:
        from sweep.stores.tracking import Tracker

        return Tracker(self.tracking_uri, self.study.study_name, create=False)

    def measure_front(self) -> None:
        """The deploy metrics the front's trials lack, measured before they are shown
        (`study.front_metrics`)."""
        from sweep.study.front_metrics import measure_front, unmeasured

        lacking = unmeasured(self.study)
        if any(lacking):
            self.tracker.follow_copied_project()  # the weights are read from a copied project's own mlruns/
            try:
                measure_front(self.study, self.config, self.tracker, lacking=lacking)
            except SweepError as error:  # e.g. the data moved: show what was measured
                print(f"warning: cannot measure the deploy metrics the front lacks: {error}", file=sys.stderr)

    def choose(self, min_accuracy: float | None = None, max_size: int | None = None,
               max_latency: float | None = None) -> FrozenTrial:
        """The Pareto-optimal trial `sweep best` picks with these flags (`results.selection`)."""
        from sweep.results.selection import select_from_front

        return select_from_front(self.study, self.config.objectives, min_accuracy, max_size, max_latency,
                                 self.config.constraints)

    def completed_trial(self, number: int) -> FrozenTrial:
        """Trial `number`, measured (`sweep rerun --trial N`)."""
        matches = records.with_later_metrics(
            self.study, [t for t in self.study.get_trials(deepcopy=False) if t.number == number])
        if not matches or not records.has_metrics(matches[0]):
            raise UsageError(f"--trial: study {self.study.study_name!r} has no completed trial {number}")
        return matches[0]


def open_study(study_file: Path | None, study_name: str | None, storage: str | None,
               tracking_uri: str | None = None) -> OpenedStudy:
    """The study named by a study file or --study NAME; its files are the study file's
    folder's. `storage` and `tracking_uri` as given (None: their environment variables or
    defaults, `sweep.stores.urls`)."""
    from sweep.stores.optuna_storage import load_study
    from sweep.stores.urls import storage_url
    from sweep.stores.urls import tracking_uri as resolve_tracking_uri
    from sweep.study.resume import stored_study_config

    study = load_study(name_of_study(study_file, study_name), storage_url(storage))
    config = stored_study_config(study.study_name, study.user_attrs, study_file)
    return OpenedStudy(study, config, resolve_tracking_uri(tracking_uri))


def name_of_study(study_file: Path | None, study_name: str | None) -> str:
    """The name alone: commands that read a study use the study file `sweep run` stored."""
    from sweep.config import load_study_name

    if study_file is None and study_name is None:
        raise UsageError("give a study file (e.g. studies/quickstart.yaml) or --study NAME")
    return study_name or load_study_name(study_file)  # type: ignore[arg-type]
