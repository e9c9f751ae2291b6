"""Choosing a trial from hand-made fronts."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from sweep.config import ConstraintsConfig
from sweep.results.selection import NoTrialMatches, knee, select_from_front, select_trial


def front(*points: tuple[float, float]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"trial": n, "val_accuracy": a, "compressed_bytes": s} for n, (a, s) in enumerate(points)]
    )


OBJECTIVES = ["accuracy", "compressed_size"]
FRONT = front((0.98, 900.0), (0.97, 400.0), (0.95, 300.0), (0.80, 250.0), (0.50, 100.0))


@pytest.mark.parametrize(("min_accuracy", "expected"), [(0.96, 1), (0.95, 2), (0.5, 4), (0.0, 4), (0.98, 0)])
def test_min_accuracy_picks_the_smallest_model_above_it(min_accuracy: float, expected: int) -> None:
    assert select_trial(FRONT, OBJECTIVES, min_accuracy=min_accuracy) == expected


@pytest.mark.parametrize(("max_size", "expected"), [(900, 0), (899, 1), (300, 2), (299, 3), (100, 4)])
def test_max_size_picks_the_most_accurate_model_below_it(max_size: int, expected: int) -> None:
    assert select_trial(FRONT, OBJECTIVES, max_size=max_size) == expected


def test_impossible_selections_say_what_is_reachable() -> None:
    with pytest.raises(NoTrialMatches, match="no Pareto-optimal trial reaches val_accuracy 0.99; the most accurate is trial 0 with 0.9800"):
        select_trial(FRONT, OBJECTIVES, min_accuracy=0.99)
    with pytest.raises(NoTrialMatches, match="the smallest is trial 4 with 100 bytes"):
        select_trial(FRONT, OBJECTIVES, max_size=99)
    with pytest.raises(NoTrialMatches, match="no feasible completed trials"):
        select_trial(front(), OBJECTIVES)
    with pytest.raises(NoTrialMatches, match="not both"):
        select_trial(FRONT, OBJECTIVES, min_accuracy=0.9, max_size=500)


def test_knee_is_the_balanced_trial() -> None:
    # normalised: accuracy loss (0.98-a)/0.48, size (s-100)/800; trial 2 is nearest (0,0)
    assert knee(FRONT, OBJECTIVES) == 2
    assert select_trial(FRONT, OBJECTIVES) == 2


def test_knee_of_a_single_trial_and_of_a_straight_front() -> None:
    assert knee(front((0.9, 100.0)), OBJECTIVES) == 0
    straight = front((1.0, 1000.0), (0.75, 750.0), (0.5, 500.0))
    assert knee(straight, OBJECTIVES) == 1  # the middle of a straight line


def constrained_study(accuracies: list[float], floor: float, baseline: float = 0.99) -> optuna.Study:
    """A study whose trials reached `accuracies`, each judged against `floor` as `sweep run`
    records it (constraint `min_accuracy` = floor - val_accuracy)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("baseline", {"val_accuracy": baseline})
    for accuracy in accuracies:
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, 1000.0], user_attrs={"metrics": {"val_accuracy": accuracy, "compressed_bytes": 1000}},
            constraints={"min_accuracy": floor - accuracy}))
    return study


DROP_FLOOR = "constraints.max_accuracy_drop 0.001 (val_accuracy at least 0.989: the dense baseline's 0.99 less 0.001)"


@pytest.mark.parametrize(("constraints", "named"), [
    ({"min_accuracy": 0.999}, "constraints.min_accuracy 0.999"),
    ({"max_accuracy_drop": 0.001}, DROP_FLOOR),
    ({"min_accuracy": 0.5, "max_accuracy_drop": 0.001}, DROP_FLOOR),  # the higher floor is the one missed
    ({"min_accuracy": 0.999, "max_accuracy_drop": 0.5}, "constraints.min_accuracy 0.999"),
])
def test_a_constraint_no_trial_meets_names_the_floor_and_the_best_reached(
    constraints: dict[str, float], named: str
) -> None:
    config = ConstraintsConfig(**constraints)
    study = constrained_study([0.95, 0.9826, 0.97], config.floor(0.99))  # type: ignore[arg-type]
    with pytest.raises(NoTrialMatches) as raised:
        select_from_front(study, OBJECTIVES, constraints=config)
    assert str(raised.value) == (f"no trial meets {named}: the best val_accuracy reached is 0.9826 (trial 1); "
                                 f"lower the floor or run more trials")


def test_a_study_without_trials_still_says_run_more() -> None:
    with pytest.raises(NoTrialMatches, match="no feasible completed trials yet; run more trials"):
        select_from_front(constrained_study([], 0.999), OBJECTIVES, constraints=ConstraintsConfig(min_accuracy=0.999))
