"""The measuring process of `sweep run --measure-aside` (`sweep.study.measured_aside`): a real
child process with its own TensorFlow, measuring a real trained model from its saved weights.
The whole loop, with `--jobs` and kills, is in tests/test_scale_out.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_scale_out import alive

pytestmark = pytest.mark.integration  # TensorFlow in this process and the measurer's


def result(measurer, seconds: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while (answer := measurer.result(0.5)) is None:
        assert time.monotonic() < deadline, "no answer from the measurer"
    return answer


STREAMS = """
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

def load():
    digits = load_digits()
    x, y = (digits.images[..., np.newaxis] / 16.0).astype(np.float32), digits.target
    stream = lambda a, b: tf.data.Dataset.from_tensor_slices((x[a:b], y[a:b]))
    return {"train": stream(0, 1200), "validation": stream(1200, 1500), "test": stream(1500, None)}
"""


def test_the_measurer_gives_the_metrics_measured_in_the_worker_and_says_what_went_wrong(tmp_path: Path) -> None:
    """On data the user's loader streams (which cannot be sent to a process: the measurer loads
    it again, and checks it is the same), of a channel trial (its weights load into the
    narrower layers its record names)."""
    import optuna

    from sweep.config import parse_study_config
    from sweep.data.datasets import load_dataset
    from sweep.modeling.measure import measure
    from sweep.modeling.metrics import ALL_GROUPS
    from sweep.modeling.training import train
    from sweep.search.structure import Structure
    from sweep.search.trial_plan import trial_plan
    from sweep.study.measured_aside import Measurer, MeasurerLost

    (tmp_path / "loader.py").write_text(STREAMS)
    config = parse_study_config({"name": "aside", "data": {"loader": "loader.py:load"}, "model": {"builder": "mlp"},
                                 "train": {"epochs": 1}}, base_dir=tmp_path)
    dataset = load_dataset(config.data)
    assert dataset.train.stream is not None
    _, plan = trial_plan(optuna.create_study(directions=["maximize", "minimize"]).ask(), config.search,
                         dataset.total_steps(config.train))
    channel_trial = train(dataset, config, 3, plan=plan, structure=Structure("channels"))
    trained, channels = channel_trial.model, channel_trial.channels
    assert channels["dense1"] < 128
    here = measure(trained, dataset, ALL_GROUPS)
    trained.save_weights(tmp_path / "weights.h5")

    measurer = Measurer(config, dataset, threads=1)
    try:
        measurer.submit(tmp_path / "weights.h5", ALL_GROUPS, here["val_accuracy"], channels)
        metrics, timings = result(measurer)
        assert metrics == {k: v for k, v in here.items() if k in metrics and "latency" not in k} | \
            {k: v for k, v in metrics.items() if "latency" in k}
        assert {"int8_val_accuracy", "tflite_bytes", "int8_latency_ms"} <= metrics.keys()
        assert {"aside_rebuild", "aside_check_again", "aside_int8_convert"} <= timings.keys()

        measurer.submit(tmp_path / "weights.h5", ALL_GROUPS, here["val_accuracy"] - 0.25, channels)  # not its weights
        with pytest.raises(RuntimeError, match=r"^measuring aside: SweepError: its saved weights give val_accuracy"):
            result(measurer)

        (tmp_path / "loader.py").write_text(STREAMS.replace("1200, 1500", "1200, 1499"))
        changed = Measurer(config, dataset, threads=1)
        try:
            changed.submit(tmp_path / "weights.h5", ALL_GROUPS, here["val_accuracy"], channels)
            with pytest.raises(RuntimeError, match=r"^measuring aside: SweepError: the data set changed since the worker"):
                result(changed)
        finally:
            changed.close()

        os.kill(measurer.pid, signal.SIGKILL)  # out of memory, say
        with pytest.raises(MeasurerLost, match=r"the measuring process ended \(exit code -9\)"):
            result(measurer)
    finally:
        measurer.close()
    assert not alive({measurer.pid})


def test_a_measurer_ends_with_its_worker_however_the_worker_ends(tmp_path: Path) -> None:
    """A worker killed with SIGKILL cannot close its measurer: the measurer sees its end of
    the pipe close, or its parent gone (`interrupts.watch_parent`), and exits."""
    worker = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import time
        from sweep.config import StudyConfig
        from sweep.data.datasets import load_dataset
        from sweep.study.measured_aside import Measurer
        config = StudyConfig.model_validate({"name": "aside", "model": {"builder": "mlp"}})
        measurer = Measurer(config, load_dataset(config.data), threads=1)
        print(measurer.pid, flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        measurer = int(worker.stdout.readline())
        assert alive({measurer})
        worker.kill()
        worker.wait(30)
        deadline = time.monotonic() + 20
        while alive({measurer}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive({measurer})
    finally:
        worker.kill()
