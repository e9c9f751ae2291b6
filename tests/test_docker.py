"""The Docker files: read (unit tests), then run for real with podman (`pytest -m docker`).

The real run builds the worker image and brings up docker/compose.yaml with podman-compose:
PostgreSQL, the MLflow server and 2 workers on a small study. It kills a worker mid-trial and
checks that the study completes, that no trial is left RUNNING and that `sweep doctor` finds
Optuna and MLflow one to one. No image registry is reachable on CI machines, so the base images
are the local stand-ins of scripts/local-images (Debian's packages). It is skipped only where
podman is missing, and fails there under SWEEP_TEST_DOCKER=1 (`.ci/run`, which installs podman).
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import free_port, write_study

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_postgres_mlflow_and_a_scalable_worker() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "mlflow", "worker"}
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale worker=4` works
    assert worker["image"] == services["mlflow"]["image"]  # one image, built once
    assert worker["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["environment"]["SWEEP_STORAGE"].startswith("postgresql://")
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"


def test_compose_keeps_data_in_named_volumes() -> None:
    spec = compose()
    assert set(spec["volumes"]) == {"postgres-data", "mlflow-artifacts"}
    assert "postgres-data:/var/lib/postgresql/data" in spec["services"]["postgres"]["volumes"]
    assert "mlflow-artifacts:/mlflow-artifacts" in spec["services"]["mlflow"]["volumes"]
    command = " ".join(spec["services"]["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in command and "@postgres:5432/mlflow" in command
    assert "--artifacts-destination=/mlflow-artifacts" in command
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()


def test_no_password_is_written_in_the_repository() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text
    for url in re.findall(r"postgresql://[^\s\"']+", text):
        assert ":${POSTGRES_PASSWORD}@" in url, url
    assert compose()["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${")


def test_dockerfile_installs_the_package_and_runs_sweep_as_a_user() -> None:
    lines = [line.strip() for line in (DOCKER / "Dockerfile").read_text().splitlines()]
    assert "FROM ${SWEEP_BASE_IMAGE}" in lines
    base = next(line for line in lines if line.startswith("ARG SWEEP_BASE_IMAGE="))
    requires = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["requires-python"]
    assert base.endswith("=docker.io/library/python:3.11-slim") and requires == ">=3.11"
    assert any(line.startswith("RUN pip install --no-deps .") for line in lines)
    user = [line for line in lines if line.startswith("USER ")]
    assert user == ["USER sweep"]
    assert lines.index(user[0]) > max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert 'ENTRYPOINT ["sweep"]' in lines
    copied = {source.rstrip("/") for line in lines if line.startswith("COPY ")
              for source in line.split()[1:-1] if not source.startswith("--")}
    for path in copied:
        assert (DOCKER.parent / path).exists(), path
    ignore = [line for line in (DOCKER.parent / ".dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore[0] == "*"  # an allow-list: exactly what is copied enters the build context
    assert {line[1:].rstrip("/") for line in ignore if line.startswith("!")} == copied
    assert {"**/*.db*", "**/.env"} <= set(ignore)  # not even inside studies/


# --- the compose file run with podman -------------------------------------------------------

PROJECT = f"sweep-test-{os.getpid()}"
N_TRIALS = 6


class Compose:
    """podman-compose on docker/compose.yaml as project PROJECT, with the test's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def __call__(self, *args: str, timeout: float = 600) -> str:
        return self.podman("podman-compose", "-p", PROJECT, "-f", str(DOCKER / "compose.yaml"), *args,
                           timeout=timeout)

    def podman(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        if check:
            assert done.returncode == 0, f"{' '.join(args[:4])} exited {done.returncode}: {done.stderr[-2000:]}"
        return done.stdout

    def container(self, service: str, number: int = 1) -> str:
        return f"{PROJECT}_{service}_{number}"

    def count(self, database: str, query: str) -> collections.Counter[str]:
        """`query`'s rows (key, count) in PostgreSQL's `database`; none before its tables exist."""
        out = subprocess.run(
            ["podman", "exec", self.container("postgres"), "psql", "-U", "sweep", "-d", database, "-Atc", query],
            env=self.env, capture_output=True, text=True, timeout=60, check=False,
        )
        rows = (line.split("|") for line in out.stdout.split()) if out.returncode == 0 else ()
        return collections.Counter({key: int(count) for key, count in rows})

    def logs(self) -> str:
        names = [self.container("worker", n) for n in (1, 2)] + [self.container("mlflow")]
        return "\n".join(f"--- {name}\n" + subprocess.run(
            ["podman", "logs", "--tail", "15", name], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, check=False,
        ).stdout for name in names)

    def left(self) -> dict[str, list[str]]:
        """The project's containers, volumes and networks that still exist, by kind."""
        label = f"label=io.podman.compose.project={PROJECT}"
        listings = {"container": ["ps", "-aq"], "volume": ["volume", "ls", "-q"], "network": ["network", "ls", "-q"]}
        found = {kind: self.podman("podman", *args, "--filter", label, check=False).split()
                 for kind, args in listings.items()}
        return {kind: names for kind, names in found.items() if names}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Compose]:
    if shutil.which("podman") is None:
        if os.environ.get("SWEEP_TEST_DOCKER"):
            pytest.fail("podman is not installed; .ci/run installs it")
        pytest.skip("podman is not installed (.ci/run installs it); SWEEP_TEST_DOCKER=1 makes this a failure")
    studies = tmp_path / "studies"
    studies.mkdir()
    write_study(studies, name="docker-test", n_trials=N_TRIALS, model={"builder": "cnn"},
                train={"epochs": 8, "batch_size": 32}, search={"final_sparsity": [0.5, 0.9]})
    for folder in (tmp_path, studies):
        folder.chmod(0o755)  # the image's user reads it through the bind mount
    env = {
        **os.environ,
        "CONTAINERS_CONF": str(DOCKER / "containers.conf"),
        "POSTGRES_PASSWORD": secrets.token_urlsafe(12),
        "SWEEP_WORKERS": "2",
        "SWEEP_STUDIES": str(studies),
        "SWEEP_STUDY": "studies/docker-test.yaml",
        "SWEEP_HEARTBEAT_INTERVAL": "2",  # a dead worker's trial is failed 6 s after its last beat
        "MLFLOW_PORT": str(free_port()),
    }
    images = subprocess.run([str(DOCKER.parent / "scripts" / "local-images")], env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert images.returncode == 0, images.stderr[-2000:]
    env.update(pair.split("=", 1) for pair in images.stdout.split())
    runner = Compose(env)
    try:
        yield runner
        runner("down", "--volumes", timeout=120)
        assert set(runner.left()) <= {"network"}  # podman-compose 1.0.3 leaves the network behind
    finally:
        for kind, names in runner.left().items():
            runner.podman("podman", kind, "rm", "-f", *names, check=False)


@pytest.mark.slow
@pytest.mark.docker
def test_compose_completes_the_study_when_a_worker_is_killed_mid_trial(stack: Compose) -> None:
    compose = stack
    compose("build", timeout=1800)
    compose("up", "-d", timeout=300)

    deadline = time.monotonic() + 600
    # Both workers training: their RUNNING trials have recorded their MLflow runs. (A worker
    # killed before that leaves a run only its tag names: tests/test_workers.py covers it.)
    training = ("SELECT t.state, count(*) FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id AND a.key = 'mlflow_run_id' GROUP BY t.state")
    while compose.count("optuna", training)["RUNNING"] < 2:
        assert time.monotonic() < deadline, "the two workers never ran trials together\n" + compose.logs()
        time.sleep(0.5)
    compose.podman("podman", "kill", compose.container("worker", 1))

    exit_codes = [compose.podman("podman", "wait", compose.container("worker", n), timeout=900).strip()
                  for n in (1, 2)]
    assert exit_codes == ["137", "0"], compose.logs()  # killed; the survivor finished the study
    trials = compose.count("optuna", "SELECT state, count(*) FROM trials GROUP BY state")
    assert trials == {"COMPLETE": N_TRIALS, "FAIL": 1}, (trials, compose.logs())  # the killed trial
    runs = compose.count("mlflow", "SELECT status, count(*) FROM runs GROUP BY status")
    assert runs == {"FINISHED": N_TRIALS + 1, "KILLED": 1}, runs  # the trials, the study's run

    doctor = compose("run", "--rm", "--no-deps", "worker", "doctor", "studies/docker-test.yaml")
    assert re.search(rf"Optuna and MLflow agree: (\x1b\[[\d;]*m)*{N_TRIALS}\b", doctor), doctor

    # podman runs health checks only when asked (no systemd here): ask, for both services
    for service in ("postgres", "mlflow"):
        compose.podman("podman", "healthcheck", "run", compose.container(service))
    image = compose.podman("podman", "image", "inspect", "sweep-worker:latest")
    history = compose.podman("podman", "history", "--no-trunc", "sweep-worker:latest")
    password = compose.env["POSTGRES_PASSWORD"]
    assert '"User": "sweep"' in image and password not in image + history
