"""The Docker files: read (unit tests), then run for real with podman (`pytest -m docker`).

The real run builds the worker image and brings up docker/compose.yaml with podman-compose:
PostgreSQL, the MLflow server and 2 workers on a small study. It kills a worker mid-trial and
checks that the study completes, that no trial is left RUNNING and that `sweep doctor` finds
Optuna and MLflow one to one. No image registry is reachable on CI machines, so the base images
are the local stand-ins of scripts/local-images (Debian's packages). It is skipped only where
podman is missing, and fails there under SWEEP_TEST_DOCKER=1 (`.ci/run`, which installs podman).
"""

from __future__ import annotations

import base64
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
    assert worker["environment"]["MLFLOW_TRACKING_USERNAME"] == "sweep"  # the server requires a login
    assert "--app-name=basic-auth" in services["mlflow"]["command"]
    assert "CREATE DATABASE mlflow_auth" in (DOCKER / "postgres-init.sql").read_text()


def test_compose_keeps_data_in_named_volumes() -> None:
    spec = compose()
    assert set(spec["volumes"]) == {"postgres-data", "mlflow-artifacts"}
    assert "postgres-data:/var/lib/postgresql/data" in spec["services"]["postgres"]["volumes"]
    assert "mlflow-artifacts:/mlflow-artifacts" in spec["services"]["mlflow"]["volumes"]
    command = " ".join(spec["services"]["mlflow"]["command"])
    assert "--backend-store-uri=postgresql://" in command and "@postgres:5432/mlflow" in command
    assert "--artifacts-destination=/mlflow-artifacts" in command
    assert "CREATE DATABASE mlflow" in (DOCKER / "postgres-init.sql").read_text()


def test_every_password_is_a_secret_file_never_a_value_or_an_argument() -> None:
    spec, text = compose(), (DOCKER / "compose.yaml").read_text()
    assert "PASSWORD}" not in text and "PASSWORD:?" not in text  # no password from the environment
    for url in re.findall(r"postgresql://[^\s\"']+", text):
        assert re.match(r"postgresql://sweep@", url), url  # no password in a URL
    secrets_declared = spec["secrets"]
    assert set(secrets_declared) == {"postgres_password", "mlflow_password", "mlflow_flask_key"}
    assert all(set(secret) == {"file"} for secret in secrets_declared.values())
    for name, service in spec["services"].items():
        for key, value in service.get("environment", {}).items():
            if any(word in key for word in ("PASSWORD", "SECRET", "TOKEN")):
                # the variable names a file that the service mounts as a secret
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), (name, key)
                assert value.removeprefix("/run/secrets/") in service["secrets"], (name, key)
        for argument in [*service.get("command", []), *service.get("entrypoint", [])]:
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(argument)), (name, argument)
    with_secrets = (DOCKER / "with-secrets").read_text()
    for key in {k.removesuffix("_FILE") for service in spec["services"].values()
                for k in service.get("environment", {}) if k.endswith("_FILE") and k != "POSTGRES_PASSWORD_FILE"}:
        assert key in with_secrets, key  # the entry point turns it into the variable


@pytest.mark.integration  # runs the script
def test_with_secrets_exports_a_file_as_its_variable_and_fails_in_one_line_without_it(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr et\n")
    script = str(DOCKER / "with-secrets")
    shown = subprocess.run([script, "sh", "-c", 'echo "$PGPASSWORD|${PGPASSWORD_FILE:-unset}"'], text=True,
                           capture_output=True, env={"PATH": os.environ["PATH"], "PGPASSWORD_FILE": str(secret)},
                           check=True)
    assert shown.stdout == "s3cr et|unset\n"
    missing = subprocess.run([script, "true"], text=True, capture_output=True, check=False,
                             env={"PATH": os.environ["PATH"], "MLFLOW_TRACKING_PASSWORD_FILE": str(tmp_path / "no")})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "MLFLOW_TRACKING_PASSWORD_FILE" in missing.stderr and "secrets:" in missing.stderr


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
    assert 'ENTRYPOINT ["with-secrets", "sweep"]' in lines
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

    def __init__(self, env: dict[str, str], passwords: dict[str, str]) -> None:
        self.env = env
        self.passwords = passwords  # secret file name -> its content

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
    secret_folder = tmp_path / "secrets"  # as the compose file's header says
    secret_folder.mkdir(mode=0o700)
    passwords = {name: secrets.token_urlsafe(18) for name in ("postgres_password", "mlflow_password", "mlflow_flask_key")}
    for name, password in passwords.items():
        (secret_folder / name).write_text(password + "\n")
        (secret_folder / name).chmod(0o644)  # the images' users read them through the bind mount
    for folder in (tmp_path, studies):
        folder.chmod(0o755)  # the image's user reads it through the bind mount
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PG", "SWEEP_"))},
        "CONTAINERS_CONF": str(DOCKER / "containers.conf"),
        "SWEEP_SECRETS": str(secret_folder),
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
    runner = Compose(env, passwords)
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
    # killed before that leaves a run only its tag names: tests/test_trial_loop.py covers it.)
    training = ("SELECT t.state, count(*) FROM trials t JOIN trial_user_attributes a "
                "ON a.trial_id = t.trial_id AND a.key = 'mlflow_run_id' GROUP BY t.state")
    while compose.count("optuna", training)["RUNNING"] < 2:
        assert time.monotonic() < deadline, "the two workers never ran trials together\n" + compose.logs()
        time.sleep(0.5)
    check_no_password_is_shown_and_the_server_wants_a_login(compose)
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
    assert '"User": "sweep"' in image
    assert not [name for name, password in compose.passwords.items() if password in image + history]


def check_no_password_is_shown_and_the_server_wants_a_login(compose: Compose) -> None:
    """While both workers train: no command line of any process (in every container, and on
    this host, where podman-compose ran `podman run`) and no `podman inspect` holds a password,
    and the MLflow server refuses a request without a login."""
    import json
    import urllib.error
    import urllib.request

    containers = [compose.container(service) for service in ("postgres", "mlflow")] + [
        compose.container("worker", n) for n in (1, 2)]
    def command_line(path: Path) -> str:
        try:
            return path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended
            return ""

    shown = {"host": "\n".join(command_line(path) for path in Path("/proc").glob("[0-9]*/cmdline"))}
    for container in containers:
        shown[container] = compose.podman("podman", "exec", container, "sh", "-c",
                                          'for f in /proc/[0-9]*/cmdline; do tr "\\0" " " < "$f"; echo; done')
        assert "mlflow server" in shown[container] or "sweep" in shown[container] or "postgres" in shown[container]
        shown[f"inspect {container}"] = compose.podman("podman", "inspect", container)
    leaks = [(where, name) for where, text in shown.items() for name, password in compose.passwords.items()
             if password in text]
    assert not leaks, leaks
    assert json.loads(shown[f"inspect {compose.container('worker', 1)}"])[0]["Config"]["Env"]  # inspected for real
    server = f"http://127.0.0.1:{compose.env['MLFLOW_PORT']}/api/2.0/mlflow/experiments/search?max_results=1"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server, timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(server.replace("max_results=1", "max_results=100"))
    login = base64.b64encode(f"sweep:{compose.passwords['mlflow_password']}".encode()).decode()
    request.add_header("Authorization", f"Basic {login}")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert "docker-test" in answer.read().decode()
