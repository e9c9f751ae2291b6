"""Shared fixtures: small real studies on the bundled digits data."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

# Before any test imports TensorFlow directly: tfmot needs Keras 2 (see sweep/_tf.py).
os.environ["TF_USE_LEGACY_KERAS"] = "1"

REPO = Path(__file__).resolve().parents[1]
SWEEP = [sys.executable, "-m", "sweep"]
COSTS = ("integration", "slow")  # marked by hand; every other test is `unit` (`docker` is also slow)
UNIT_GUARD = "SWEEP_UNIT_GUARD"  # set: unit tests fail on a subprocess or a server, the session on TensorFlow


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not any(item.get_closest_marker(cost) for cost in COSTS):
            item.add_marker(pytest.mark.unit)


def pytest_collection_finish(session: pytest.Session) -> None:
    if os.environ.get(UNIT_GUARD) and "tensorflow" in sys.modules:
        raise pytest.UsageError("a test module with unit tests imports TensorFlow when imported; import it "
                                "inside the tests that need it")


@pytest.fixture(autouse=True)
def _unit_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Under the guard (tests/test_imports.py runs `pytest -m unit` so, on the files that
    hold unit tests), a unit test that starts a subprocess or a server, or imports
    TensorFlow, fails."""
    if not os.environ.get(UNIT_GUARD) or not request.node.get_closest_marker("unit"):
        yield
        return
    import socket

    def refuse(what: str) -> Callable[..., object]:
        def refused(*args: object, **kwargs: object) -> object:
            raise AssertionError(f"a unit test {what}; mark it integration or slow")
        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a subprocess"))
    monkeypatch.setattr(socket.socket, "listen", refuse("started a server"))
    yield
    assert "tensorflow" not in sys.modules, "a unit test imported TensorFlow; mark it integration or slow"


def interpreter_accuracy(interpreter: Any, x: np.ndarray, y: np.ndarray) -> float:
    """A TFLite file's accuracy in `interpreter` (allocated), written out here independently of
    sweep: one example per invoke, as on a device; int8 inputs quantized with the file's scale."""
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    right = 0
    for example, label in zip(x, y, strict=True):
        if source["dtype"] == np.int8:
            scale, zero_point = source["quantization"]
            example = np.clip(np.round(example / scale + zero_point), -128, 127)
        interpreter.set_tensor(source["index"], example[np.newaxis].astype(source["dtype"]))
        interpreter.invoke()
        right += int(np.argmax(interpreter.get_tensor(target["index"])[0]) == label)
    return right / len(y)


def write_study(folder: Path, **overrides: object) -> Path:
    """A tiny but real study file (2-epoch MLP on digits) with `overrides` merged in."""
    study: dict[str, object] = {
        "name": "tiny",
        "seed": 0,
        "n_trials": 3,
        "model": {"builder": "mlp"},
        "train": {"epochs": 2, "batch_size": 64},
        "search": {"frequency": [2, 8]},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(study.get(key), dict):
            study[key] = {**study[key], **value}  # type: ignore[dict-item]
        else:
            study[key] = value
    path = folder / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def run_sweep(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
              ) -> subprocess.CompletedProcess[str]:
    """The real `sweep` command in a subprocess, with a clean environment for stores."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("SWEEP_STORAGE", "MLFLOW_TRACKING_URI")}
    full_env.update(env or {})
    return subprocess.run(
        [*SWEEP, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_notebook(folder: Path, study_name: str, output: Path, **parameters: object) -> tuple[str, list[dict]]:
    """notebooks/pareto_analysis.ipynb run headlessly on the study logged in `folder`'s
    mlflow.db; returns its printed text and all cell outputs. Raises on any cell error."""
    import json

    import papermill

    papermill.execute_notebook(
        str(REPO / "notebooks" / "pareto_analysis.ipynb"), str(output), cwd=str(folder), kernel_name="python3",
        progress_bar=False,
        parameters={"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "study_name": study_name, **parameters},
    )
    cells = json.loads(output.read_text())["cells"]
    outputs = [o for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    text = "".join("".join(o.get("text", "")) for o in outputs if o.get("output_type") == "stream")
    return text, outputs


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` read-only even for root (`chattr +i`: root ignores chmod), made writable again
    afterwards, or the temporary folder cannot be removed."""
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextlib.contextmanager
def small_disk(folder: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of `megabytes` mounted on `folder` (which it creates), unmounted afterwards:
    a disk that can be filled. Needs root (CI and this project's machines run as root)."""
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(folder)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)


@pytest.fixture
def tiny_study(tmp_path: Path) -> Path:
    return write_study(tmp_path)


# --- real services: PostgreSQL and an MLflow tracking server --------------------------

POSTGRES = os.environ.get("SWEEP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_reachable() -> str | None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES, connect_timeout=5):
            return None
    except Exception as error:
        return str(error).splitlines()[0]


@pytest.fixture
def postgres_database() -> Iterator[Callable[[str], str]]:
    """Makes fresh PostgreSQL databases (dropped afterwards); returns their URLs.

    CI (.ci/run) sets SWEEP_TEST_POSTGRES, and then an unreachable server fails the test;
    elsewhere the test is skipped with the reason."""
    import uuid

    import psycopg

    problem = _postgres_reachable()
    if problem:
        if "SWEEP_TEST_POSTGRES" in os.environ:
            pytest.fail(f"PostgreSQL at {POSTGRES} is unreachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable ({problem}); set SWEEP_TEST_POSTGRES")
    created: list[str] = []

    def make(prefix: str) -> str:
        name = f"sweep_{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(POSTGRES, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return POSTGRES.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with psycopg.connect(POSTGRES, autocommit=True) as connection:
        for name in created:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(postgres_database: Callable[[str], str], tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on a loopback port, backed by PostgreSQL; yields its URL."""
    import time
    import urllib.request

    port = free_port()
    with (tmp_path / "mlflow-server.log").open("w") as log:  # the server keeps its own copy of the file
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_database("mlflow"),
             "--artifacts-destination", str(tmp_path / "mlflow-artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # no GenAI jobs here: MLflow's job runner starts huey consumers, each importing MLflow,
            # that take CPU from the tests training beside the server
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(tmp_path / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    os.killpg(process.pid, 15)
    process.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def analysed_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny study (5 trials, default stores in its folder) whose front has been
    tagged by `sweep pareto`. Read-only for its users."""
    folder = tmp_path_factory.mktemp("analysed")
    write_study(folder, name="analysed", n_trials=5, search={"schedule": ["polynomial", "constant", "step"]})
    for args in (("run", "analysed.yaml"), ("pareto", "analysed.yaml")):
        result = run_sweep(*args, cwd=folder)
        assert result.returncode == 0, result.stderr
    return folder
