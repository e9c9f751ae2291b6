"""The MLflow UI that `sweep ui` serves, checked in a real headless Chromium: the study's
trial runs are listed with their metrics, and the search `tags.sweep.pareto = 'true'`
lists exactly the Pareto-optimal runs. Saves a screenshot to test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
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


@pytest.fixture
def ui(analysed_study: Path) -> Iterator[str]:
    """`sweep ui` on a free loopback port over the analysed study's tracking store."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("SWEEP_TEST_BROWSER"):
            pytest.fail(f"chromium not found at {CHROMIUM}")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen([*SWEEP, "ui", "--port", str(port)], cwd=analysed_study, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.5)
    yield url
    os.killpg(process.pid, 15)
    process.wait(timeout=30)


def run_names(page) -> set[str]:  # type: ignore[no-untyped-def]
    return set(re.findall(r"trial-\d{3}", page.inner_text("body")))


def test_mlflow_ui_lists_the_trials_and_filters_the_pareto_front(ui: str, analysed_study: Path) -> None:
    from playwright.sync_api import sync_playwright

    study = optuna.load_study(study_name="analysed", storage=f"sqlite:///{analysed_study / 'sweep.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    front = {f"trial-{t.number:03d}" for t in study.best_trials}
    experiment = json.load(urllib.request.urlopen(
        f"{ui}/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=analysed"))["experiment"]["experiment_id"]
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{ui}/#/experiments/{experiment}/runs")
        page.get_by_text("analysed (study)").first.wait_for(timeout=60_000)
        close_assistant = page.get_by_role("button", name="Close")
        if close_assistant.count():
            close_assistant.first.click()
        # Trial runs are nested under the study's parent run: expand it.
        page.locator("[role=row]", has_text="analysed (study)").first.locator("button").first.click()
        page.get_by_text("trial-000").first.wait_for(timeout=30_000)
        assert run_names(page) == {f"trial-{t.number:03d}" for t in done}
        # Show two metric columns and check every trial's values are on screen.
        page.get_by_role("button", name="Columns", exact=True).click()
        for metric in ("val_accuracy", "compressed_bytes"):
            page.get_by_placeholder("Search columns").fill(metric)
            page.get_by_text(metric, exact=True).last.click()  # the first is baseline/<metric>
        page.keyboard.press("Escape")
        page.get_by_role("columnheader", name="val_accuracy").first.wait_for(timeout=10_000)
        body = page.inner_text("body")
        for trial in done:
            metrics = trial.user_attrs["metrics"]
            assert str(metrics["compressed_bytes"]) in body and repr(metrics["val_accuracy"])[:6] in body
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-runs.png"))

        search = page.get_by_test_id("search-box")
        search.fill("tags.sweep.pareto = 'true'")
        search.press("Enter")
        page.wait_for_function(
            "names => names.every(n => document.body.innerText.includes(n))", arg=sorted(front), timeout=30_000)
        others = sorted({f"trial-{t.number:03d}" for t in done} - front)
        page.wait_for_function(  # and the others are gone
            "names => !names.some(n => document.body.innerText.includes(n))", arg=others, timeout=30_000)
        assert run_names(page) == front
        page.screenshot(path=str(ARTIFACTS / "mlflow-ui-pareto.png"))
        browser.close()
