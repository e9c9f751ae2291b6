"""Which deploy metrics a trial measures (`sweep.modeling.metrics`): pure, no TensorFlow."""

from __future__ import annotations

import math

from sweep.config import StudyConfig
from sweep.modeling.metrics import ALL_GROUPS, DEPLOY_GROUPS, missing_groups, trial_groups


def study(**keys: object) -> StudyConfig:
    return StudyConfig.model_validate({"name": "metrics", **keys})


def test_a_trial_measures_the_groups_its_objectives_read_and_their_files() -> None:
    assert trial_groups(study()) == frozenset()  # accuracy, compressed_size: the cheap metrics only
    assert trial_groups(study(objectives=["accuracy", "int8_size"])) == {"int8"}
    assert trial_groups(study(objectives=["int8_accuracy", "latency"])) == {"int8", "tflite", "latency"}
    # a latency is timed on its file: the file's group comes with it
    assert trial_groups(study(objectives=["accuracy", "int8_latency"])) == {"int8", "int8_latency"}
    assert trial_groups(study(measure="all")) == ALL_GROUPS


def test_a_group_is_missing_only_when_none_of_its_metrics_was_measured() -> None:
    everything = {name: 1.0 for names in DEPLOY_GROUPS.values() for name in names}
    assert missing_groups(everything) == frozenset()
    assert missing_groups({"val_accuracy": 0.9, "compressed_bytes": 10.0}) == ALL_GROUPS
    # the converter failed: NaN was measured, not left out
    failed = {**everything, **dict.fromkeys(DEPLOY_GROUPS["int8"], math.nan)}
    assert missing_groups(failed) == frozenset()
    assert missing_groups({"int8_bytes": 5.0, "tflite_bytes": 9.0}) == {"latency", "int8_latency"}
