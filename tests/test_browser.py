"""What `sweep ui` and `sweep dashboard` serve, checked in a real headless Chromium on the
pages they print, without clicking: the MLflow runs table and its saved "Pareto front"
view, and optuna-dashboard's study page. Saves screenshots to test-artifacts/."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from conftest import REPO, SWEEP, free_port

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("SWEEP_TEST_BROWSER"):
            pytest.fail(f"chromium not found at {CHROMIUM}")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


@contextlib.contextmanager
def served(*args: str, cwd: Path, ready: str, lines: int = 1) -> Iterator[tuple[str, list[str]]]:
    """`sweep <args> --port P` on a free loopback port, once `ready` answers; yields its
    base URL and the first `lines` it printed (the URLs it tells the user to open)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "SWEEP_STORAGE")}
    process = subprocess.Popen([*SWEEP, *args, "--port", str(port)], cwd=cwd, env=env, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    assert process.stderr is not None
    printed = [process.stderr.readline() for _ in range(lines)]
    logged: list[str] = []  # read as it comes: a server blocks once a full pipe is not read
    threading.Thread(target=lambda: logged.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                urllib.request.urlopen(f"{url}{ready}", timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "".join(printed + logged)
                time.sleep(0.5)
        yield url, printed
    finally:  # a failing test must not leave the server running
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def run_names(page) -> set[str]:  # type: ignore[no-untyped-def]
    return set(re.findall(r"trial-\d{3}", page.inner_text("body")))


def check_pareto_view(page, view_page: str, front: list) -> None:  # type: ignore[no-untyped-def, type-arg]
    """The saved "Pareto front" view lists exactly the front's trials, with their accuracy and size."""
    page.goto(view_page)
    page.get_by_text(f"trial-{front[0].number:03d}").first.wait_for(timeout=60_000)
    page.wait_for_function(  # every front trial is listed, and no other
        "names => names.every(n => document.body.innerText.includes(n))",
        arg=[f"trial-{t.number:03d}" for t in front], timeout=30_000)
    body = page.inner_text("body")
    listed = run_names(page)
    assert listed == {f"trial-{t.number:03d}" for t in front}
    assert "analysed (study)" not in body  # the filter applies: the untagged parent run is not listed
    for column in ("val_accuracy", "test_accuracy", "sparsity", "compressed_bytes", "compression_ratio"):
        assert column in body
    for trial in front:
        metrics = trial.user_attrs["metrics"]
        assert str(metrics["compressed_bytes"]) in body and repr(metrics["val_accuracy"])[:6] in body


def test_sweep_ui_prints_pages_that_open_on_the_runs_and_the_pareto_front(analysed_study: Path) -> None:
    """Without a click: the printed runs page is the runs table (not MLflow's GenAI pages),
    and the printed "Pareto front" view lists exactly the front's trials with their
    accuracy and size."""
    from playwright.sync_api import sync_playwright

    require_chromium()
    study = optuna.load_study(study_name="analysed", storage=f"sqlite:///{analysed_study / 'sweep.db'}")
    front = study.best_trials
    with served("ui", "analysed.yaml", cwd=analysed_study, ready="/health", lines=2) as (url, printed):
        [runs_page] = re.findall(r"open (http://\S+)", printed[0])
        [view_page] = re.findall(r"Pareto front: (http://\S+)", printed[1])
        assert runs_page.startswith(f"{url}/#/experiments/") and "/runs?" in runs_page
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(runs_page)
            page.get_by_text("analysed (study)").first.wait_for(timeout=60_000)  # the study's parent run
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))

            check_pareto_view(page, view_page, front)
            page.screenshot(path=str(ARTIFACTS / "mlflow-ui-pareto.png"))
            browser.close()


def test_the_dashboard_opens_on_the_studys_trials_and_its_two_objectives(analysed_study: Path) -> None:
    from playwright.sync_api import sync_playwright

    require_chromium()
    study = optuna.load_study(study_name="analysed", storage=f"sqlite:///{analysed_study / 'sweep.db'}")
    numbers = [t.number for t in study.trials]
    with served("dashboard", "analysed.yaml", cwd=analysed_study, ready="/api/studies") as (url, printed):
        [page_url] = re.findall(r"open (http://\S+)", printed[0])
        assert page_url.startswith(f"{url}/dashboard/studies/")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(page_url)  # the study's page, as printed: its front, by objective name
            page.get_by_text("Pareto Front").first.wait_for(timeout=60_000)
            body = page.inner_text("body")
            assert "analysed" in body and "accuracy" in body and "compressed_size" in body
            assert "Objective 0" not in body  # named, not numbered (the study records its metric names)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "optuna-dashboard.png"))
            page.goto(f"{page_url}/trials")
            page.get_by_text(f"{len(numbers)} Trials").first.wait_for(timeout=30_000)
            body = page.inner_text("body")
            assert all(f"Trial {n}" in body for n in numbers)
            browser.close()


def test_a_tracking_server_with_a_login_shows_its_pages_to_whoever_logs_in(analysed_study: Path, tmp_path: Path) -> None:
    """The README's server recipe on this machine: `mlflow server --app-name basic-auth` with
    every secret in the environment; `sweep ui` logs in with MLflow's variables and prints the
    server's pages; a browser that logs in sees the front, one that does not gets 401."""
    import secrets
    import urllib.error

    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    require_chromium()
    study = optuna.load_study(study_name="analysed", storage=f"sqlite:///{analysed_study / 'sweep.db'}")
    shutil.copy(analysed_study / "mlflow.db", tmp_path / "mlflow.db")
    (tmp_path / "mlflow-auth.ini").write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path / 'auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    password, port = secrets.token_urlsafe(16), free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SWEEP_"))}
    server = subprocess.Popen(
        [str(Path(SWEEP[0]).parent / "mlflow"), "server", "--app-name", "basic-auth", "--host", "127.0.0.1",
         "--port", str(port)], cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env={**clean, "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                                        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "mlflow-auth.ini"),
                                        "MLFLOW_AUTH_ADMIN_USERNAME": "sweep", "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                                        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
                                        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # as in conftest.mlflow_server
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
        assert refused.value.code == 401

        login = {**clean, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "sweep"}
        shown = subprocess.run([*SWEEP, "ui", "analysed.yaml"], cwd=analysed_study, capture_output=True, text=True,
                               env={**login, "MLFLOW_TRACKING_PASSWORD": password}, timeout=120, check=False)
        assert shown.returncode == 0, shown.stderr
        [view_page] = re.findall(r"Pareto front: (http://\S+)", shown.stdout)
        assert view_page.startswith(f"{url}/#/experiments/") and password not in shown.stdout + shown.stderr
        wrong = subprocess.run([*SWEEP, "ui", "analysed.yaml"], cwd=analysed_study, capture_output=True, text=True,
                               env={**login, "MLFLOW_TRACKING_PASSWORD": "not-" + password}, timeout=120, check=False)
        assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "refused the login given" in wrong.stderr
        assert password not in wrong.stderr

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
            with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):  # no login: refused
                browser.new_page().goto(view_page)
            stranger = browser.new_context(http_credentials={"username": "sweep", "password": "not-" + password})
            assert stranger.new_page().goto(view_page).status == 401  # type: ignore[union-attr]
            page = browser.new_context(http_credentials={"username": "sweep", "password": password},
                                       viewport={"width": 1600, "height": 1000}).new_page()
            check_pareto_view(page, view_page, study.best_trials)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "mlflow-server-login-pareto.png"))
            browser.close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
