"""Pareto front and hypervolume on made-up studies (no training)."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState, create_trial

from sweep.results.pareto import (
    completed_trials,
    hypervolume,
    hypervolume_history,
    is_feasible,
    pareto_front,
    pareto_trials,
    trial_table,
)

BASELINE = {"compressed_bytes": 1000.0, "val_accuracy": 0.99}


def add(study: optuna.Study, accuracy: float, size: float, *, state: TrialState = TrialState.COMPLETE,
        constraint: float | None = None, sparsity: float = 0.5) -> None:
    metrics = {"val_accuracy": accuracy, "compressed_bytes": size, "sparsity": sparsity}
    study.add_trial(create_trial(
        state=state,
        values=[accuracy, size, sparsity][: len(study.directions)] if state == TrialState.COMPLETE else None,
        params={"schedule": "constant", "final_sparsity": 0.5},
        distributions={
            "schedule": optuna.distributions.CategoricalDistribution(["constant"]),
            "final_sparsity": optuna.distributions.FloatDistribution(0.5, 0.5),
        },
        user_attrs={"metrics": metrics, "mlflow_run_id": f"run{len(study.trials)}"},
        constraints=None if constraint is None else {"min_accuracy": constraint},
    ))


def brute_force_front(study: optuna.Study) -> set[int]:
    candidates = [t for t in study.trials if t.state == TrialState.COMPLETE and is_feasible(t)]

    def dominates(a, b) -> bool:  # type: ignore[no-untyped-def]
        (acc_a, size_a), (acc_b, size_b) = a.values, b.values
        return acc_a >= acc_b and size_a <= size_b and (acc_a > acc_b or size_a < size_b)

    return {t.number for t in candidates if not any(dominates(o, t) for o in candidates)}


trial_specs = st.lists(
    st.tuples(
        st.sampled_from([0.5, 0.7, 0.8, 0.9, 0.95]),  # few values: ties and duplicates happen
        st.sampled_from([100.0, 200.0, 400.0, 800.0, 1200.0]),
        st.sampled_from([TrialState.COMPLETE, TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]),
        st.sampled_from([None, -0.1, 0.2]),  # no constraint, feasible, infeasible
    ),
    min_size=0,
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(specs=trial_specs, constrained=st.booleans())
def test_front_equals_brute_force_dominance(specs: list, constrained: bool) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, size, state, constraint in specs:
        add(study, accuracy, size, state=state, constraint=constraint if constrained else None)
    front = pareto_trials(study)
    assert {t.number for t in front} == brute_force_front(study)
    accuracies = [t.values[0] for t in front]
    assert accuracies == sorted(accuracies, reverse=True)
    # the same front from a table of trials (what the notebook builds from MLflow runs)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if done:
        table_front = pareto_front(trial_table(done), ["accuracy", "compressed_size"])
        assert set(table_front["trial"]) == brute_force_front(study)


def test_infeasible_and_failed_trials_never_enter_the_front() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    add(study, 0.99, 10.0, constraint=0.05)  # best on both, but infeasible
    add(study, 0.99, 5.0, state=TrialState.FAIL)
    add(study, 0.9, 100.0, constraint=-0.1)
    add(study, 0.8, 50.0, constraint=-0.1)
    assert [t.number for t in pareto_trials(study)] == [2, 3]


def test_hypervolume_of_a_hand_made_front() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    add(study, 0.9, 500.0)  # box 0.9 x (1 - 0.5)
    add(study, 0.6, 200.0)  # adds 0.6 x (0.5 - 0.2)
    add(study, 0.5, 600.0)  # dominated: adds nothing
    add(study, 0.95, 1500.0)  # larger than the dense baseline: outside the reference box
    volume = hypervolume(trial_table(completed_trials(study)), ["accuracy", "compressed_size"], BASELINE)
    assert volume == pytest.approx(0.9 * 0.5 + 0.6 * 0.3)
    history = hypervolume_history(trial_table(completed_trials(study)), ["accuracy", "compressed_size"], BASELINE)
    assert [n for n, _ in history] == [0, 1, 2, 3]
    assert [v for _, v in history] == pytest.approx([0.45, 0.63, 0.63, 0.63])


def test_hypervolume_matches_a_grid_estimate_with_three_objectives() -> None:
    rng = np.random.default_rng(0)
    study = optuna.create_study(directions=["maximize", "minimize", "maximize"])
    points = [(rng.uniform(0.5, 1), rng.uniform(100, 900), rng.uniform(0, 1)) for _ in range(6)]
    for accuracy, size, sparsity in points:
        add(study, accuracy, size, sparsity=sparsity)
    volume = hypervolume(trial_table(completed_trials(study)), ["accuracy", "compressed_size", "sparsity"], BASELINE)
    grid = np.linspace(0.005, 0.995, 100)
    inside = sum(
        any(a >= ga and s / 1000 <= 1 - gs and p >= gp for a, s, p in points)
        for ga, gs, gp in itertools.product(grid, grid, grid)
    ) / len(grid) ** 3
    assert volume == pytest.approx(inside, abs=0.02)


def test_trial_table_lists_the_key_params() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    add(study, 0.9, 100.0)
    frame = trial_table(pareto_trials(study))
    assert list(frame.columns[:10]) == ["trial", "schedule", "final_sparsity", "val_accuracy", "test_accuracy",
                                      "sparsity", "compressed_bytes", "compression_ratio", "mlflow_run_id", "feasible"]
    assert frame.loc[0, "mlflow_run_id"] == "run0"


def exact_dominated_volume(points: np.ndarray, reference: np.ndarray) -> float:
    """Brute force: the union of the boxes [point, reference] on the grid of all coordinates."""
    axes = [np.unique(np.concatenate([points[:, d], [reference[d]]])) for d in range(points.shape[1])]
    volume = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        low = np.array([axes[d][i] for d, i in enumerate(cell)])
        high = np.array([axes[d][i + 1] for d, i in enumerate(cell)])
        if np.any(np.all(points <= low, axis=1)):  # some point dominates the whole cell
            volume += float(np.prod(high - low))
    return volume


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_objective_hypervolume_of_what_ships_equals_brute_force(seed: int) -> None:
    import pandas as pd

    from sweep.results.pareto import hypervolume, pareto_front

    rng = np.random.default_rng(seed)
    baseline = {"int8_val_accuracy": 0.97, "int8_gzip_bytes": 40000.0, "int8_latency_ms": 0.01}
    table = pd.DataFrame({
        "trial": range(12), "val_accuracy": rng.uniform(0.5, 1, 12), "int8_val_accuracy": rng.uniform(0.5, 1, 12),
        "int8_gzip_bytes": rng.uniform(5000, 50000, 12), "int8_latency_ms": rng.uniform(0.002, 0.015, 12),
    })
    objectives = ["int8_accuracy", "int8_size", "int8_latency"]
    # losses in the unit box: -accuracy, size and latency relative to the dense baseline (reference 1)
    losses = np.stack([-table["int8_val_accuracy"], table["int8_gzip_bytes"] / 40000, table["int8_latency_ms"] / 0.01], 1)
    reference = np.array([0.0, 1.0, 1.0])
    inside = losses[np.all(losses < reference, axis=1)]
    assert hypervolume(table, objectives, baseline) == pytest.approx(exact_dominated_volume(inside, reference))
    front = set(pareto_front(table, objectives)["trial"])
    assert front == {i for i in range(12) if not any(np.all(losses[j] <= losses[i]) and np.any(losses[j] < losses[i])
                                                     for j in range(12))}
