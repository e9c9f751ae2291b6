"""The Docker files, checked without a Docker engine (none runs on CI machines)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

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
    python = next(line for line in lines if line.startswith("FROM "))
    requires = tomllib.loads((DOCKER.parent / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.startswith("FROM python:3.11") and requires == ">=3.11"
    assert any(line.startswith("RUN pip install .") for line in lines)
    user = [line for line in lines if line.startswith("USER ")]
    assert user == ["USER sweep"]
    assert lines.index(user[0]) > max(i for i, line in enumerate(lines) if line.startswith("RUN "))
    assert 'ENTRYPOINT ["sweep"]' in lines
    copied = {line.split()[1] for line in lines if line.startswith("COPY ") and "--chown" not in line}
    copied |= {line.split()[2] for line in lines if line.startswith("COPY --chown")}
    for path in copied:
        assert (DOCKER.parent / path).exists(), path
    ignored = (DOCKER.parent / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "*.db" in ignored
