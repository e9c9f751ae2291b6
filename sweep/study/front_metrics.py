"""The deploy metrics a study did not measure per trial (`sweep.modeling.metrics`), measured
where a user looks at them: for the trials on the front and the dense baseline, from the
weights each kept (`sweep.study.saved_weights`), at the end of `sweep run` and by `sweep
pareto`, `best` and `report` for those that lack them.

A trial's are recorded in Optuna first (`records.record_later_metrics`: Optuna cannot
change a finished trial), then logged to its MLflow run; `sweep doctor` finds a run that
missed them. Before measuring, the rebuilt model must give the trial's validation accuracy
again: the files measured are the trial's. A trial that kept no weights (its MLflow run
failed) is left out with a warning; `sweep rerun` measures every metric of any trial.

    >>> measure_front(study, config, tracker)   # 3 front trials measured: ...
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from sweep.config import StudyConfig
from sweep.data.splits import Dataset
from sweep.errors import SweepError
from sweep.modeling.metrics import missing_groups
from sweep.results.pareto import pareto_trials
from sweep.stores import records
from sweep.stores.tracking import Tracker
from sweep.stores.urls import error_summary
from sweep.study.baseline import baseline_model
from sweep.study.fingerprints import check_same_inputs, input_fingerprints
from sweep.study.saved_weights import saved_model


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def unmeasured(study: optuna.Study) -> tuple[list[FrozenTrial], frozenset[str]]:
    """The front's trials that lack a deploy metric group, and the groups the baseline lacks."""
    trials = [t for t in pareto_trials(study) if missing_groups(records.trial_metrics(t))]
    return trials, missing_groups(records.baseline(study)) if records.has_baseline(study) else frozenset()


def measure_front(
    study: optuna.Study, config: StudyConfig, tracker: Tracker, dataset: Dataset | None = None,
    say: Callable[[str], None] = _say, lacking: tuple[list[FrozenTrial], frozenset[str]] | None = None,
) -> int:
    """Measure the deploy metrics the front's trials and the baseline lack; returns how many
    trials were measured. `dataset`: the study's, already loaded and checked; `lacking`:
    `unmeasured(study)`, if the caller already asked. What cannot
    be measured (a tracking store that fails) is said in a line each, never raised: the
    trials' results stand, and the next `sweep pareto` tries again."""
    trials, baseline_lacks = lacking or unmeasured(study)
    if not trials and not baseline_lacks:
        return 0
    from sweep.modeling.training import configure_tensorflow

    if dataset is None:
        from sweep.data.datasets import load_dataset

        configure_tensorflow(records.tf_threads(trials[0]) if trials else None, config.train.deterministic)
        dataset = load_dataset(config.data)
        check_same_inputs(study, input_fingerprints(config, dataset), config)
    groups = sorted(baseline_lacks.union(*(missing_groups(records.trial_metrics(t)) for t in trials)))
    say(f"sweep: measuring {', '.join(groups)} of {len(trials)} front trials"
        f"{' and the dense baseline' if baseline_lacks else ''} from their saved weights")
    if baseline_lacks:
        _measure_baseline(study, config, tracker, dataset, baseline_lacks, say)
    failed: dict[int, str] = {}
    unlogged: dict[int, str] = {}
    for trial in trials:
        try:
            if (error := _measure_trial(study, trial, config, tracker, dataset, say)) is not None:
                unlogged[trial.number] = error
        except SweepError as error:
            failed[trial.number] = str(error)
    if failed:
        first, reason = next(iter(failed.items()))
        say(f"warning: {_trials(failed)} not measured (trial {first}: {reason}); `sweep pareto` tries again, "
            f"`sweep rerun --trial N` measures every metric of one")
    if unlogged:
        say(f"warning: MLflow could not log what was measured of {_trials(unlogged)} "
            f"({next(iter(unlogged.values()))}); run `sweep doctor --repair` once the tracking store works")
    return len(trials) - len(failed)


def _measure_trial(study: optuna.Study, trial: FrozenTrial, config: StudyConfig, tracker: Tracker,
                   dataset: Dataset, say: Callable[[str], None]) -> str | None:
    """Measure and record one trial; raises `SweepError` if it cannot be measured, returns
    why MLflow did not take the metrics (None: it did)."""
    from sweep.modeling.measure import deploy_metrics_again

    clock = time.perf_counter()
    run_id, sha256 = records.mlflow_run_id(trial), records.weights_sha256(trial)
    if run_id is None or sha256 is None:
        raise SweepError("it kept no weights: its MLflow run failed, or an older sweep ran it")
    model = saved_model(config, dataset, tracker, run_id, sha256, records.channels(trial))
    measured = records.trial_metrics(trial)
    metrics = deploy_metrics_again(model, dataset, missing_groups(measured), measured["val_accuracy"], config.export)
    records.record_later_metrics(study, trial.number, metrics)
    say(f"  trial {trial.number}: {_summary(metrics)} ({time.perf_counter() - clock:.1f} s)")
    try:
        tracker.log_later_metrics(run_id, metrics)
    except Exception as error:  # Optuna has them; `sweep doctor --repair` logs them
        return error_summary(error)
    return None


def _trials(numbers: dict[int, str]) -> str:
    return f"trial {next(iter(numbers))}" if len(numbers) == 1 else f"trials {', '.join(map(str, numbers))}"


def _measure_baseline(study: optuna.Study, config: StudyConfig, tracker: Tracker, dataset: Dataset,
                      groups: frozenset[str], say: Callable[[str], None]) -> None:
    from sweep.modeling.measure import deploy_metrics

    clock = time.perf_counter()
    try:
        model = baseline_model(study, tracker, config, dataset)
    except SweepError as error:  # the tracking store failed: the trials' results stand
        say(f"warning: the dense baseline's deploy metrics were not measured: {error}; `sweep pareto` "
            f"measures them once the tracking store works")
        return
    metrics = deploy_metrics(model, dataset, groups, export=config.export)
    records.record_baseline(study, {**records.baseline(study), **metrics})
    try:
        tracker.log_baseline(records.mlflow_study_run_id(study), metrics)
    except Exception as error:  # Optuna has them, which is what every command reads
        say(f"warning: MLflow could not log the dense baseline's later metrics ({error_summary(error)})")
    say(f"  dense baseline: {_summary(metrics)} ({time.perf_counter() - clock:.1f} s)")


def _summary(metrics: dict[str, float]) -> str:
    shown = {"int8_val_accuracy": "int8 val acc {:.4f}", "int8_bytes": "int8 {:.0f} B", "tflite_bytes": "float {:.0f} B",
             "latency_ms": "latency {:.4g} ms", "int8_latency_ms": "int8 latency {:.4g} ms"}
    return ", ".join(form.format(metrics[name]) for name, form in shown.items() if name in metrics)
