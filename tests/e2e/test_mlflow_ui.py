"""The MLflow UI over the tiny study's store, driven by headless Chromium: the runs by name, a run's metrics, the
registered ensembles with their `candidate` alias, the study's saved view in the model-training view, the
configuration runs nested under the study run, a registered model's description. Every test leaves a screenshot
(CHEXOPS_UI_SCREENSHOTS, else <pytest basetemp>/ui-screenshots)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.browser import ui_page as open_ui_page
from fixtures.study import RUN_NAMES, STUDY, SUMMARY_RUN, Study

from chexops.tracking.presentation import STUDY_VIEW_QUERY  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SERVER_START_S = 120
UI_TIMEOUT_MS = 60_000

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: install Debian's chromium "
                       "(apt-get install -y chromium) to drive the MLflow UI; Playwright's own browsers are not used"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise AssertionError(f"mlflow server not healthy after {SERVER_START_S} s:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen) -> None:
    """The server and its workers: the process group it leads (started in a new session)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(tiny_study: Study, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, log = free_port(), tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tiny_study.tracking_uri,
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "w") as out:
        # no GenAI job workers (judges, trace rollups): seven extra processes chexops never uses
        env = tiny_study.env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        proc = subprocess.Popen(cmd, cwd=tiny_study.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # the SPA renders after its API calls return
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def ui_page(browser: Any, server: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A fresh page that can reach the server only (the UI's telemetry and docs links are cut off)."""
    shots = tmp_path_factory.getbasetemp() / "ui-screenshots"
    with open_ui_page(browser, UI_TIMEOUT_MS, request.node.name, shots) as page:
        yield page


def experiment_id(study: Study) -> str:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=study.tracking_uri).get_experiment_by_name(STUDY).experiment_id


def run_id(study: Study, name: str) -> str:
    record = study.root / "runs" / "train" / (name.replace("/", "__") + "__labels-1.0") / "mlflow_run.json"
    return json.loads(record.read_text())["run_id"]


def test_experiment_page_lists_the_runs_by_name(ui_page, server: str, tiny_study: Study) -> None:
    from playwright.sync_api import expect

    # the study's view lists the configuration runs flat (the default, creation order, folds them under the study
    # run); the study and pretrain runs, rows of dashes in its columns, are filtered out
    ui_page.goto(f"{server}/#/experiments/{experiment_id(tiny_study)}/runs?{STUDY_VIEW_QUERY}")
    for name in RUN_NAMES:
        expect(ui_page.get_by_role("link", name=name, exact=True).first).to_be_visible()
    expect(ui_page.get_by_text(re.compile(r"^\d+ matching runs$"))).to_have_text(
        re.compile(rf"^{len(RUN_NAMES)} matching runs$"))
    expect(ui_page.get_by_role("link", name=SUMMARY_RUN, exact=True)).to_have_count(0)


@pytest.mark.parametrize("metric", ["val headline", "test headline", "test headline_ci_low"])
def test_run_page_shows_its_metrics(ui_page, server: str, tiny_study: Study, metric: str) -> None:
    from playwright.sync_api import expect

    from chexops.evaluate.metrics import headline_key

    name = RUN_NAMES[0]
    rid = run_id(tiny_study, name)
    from mlflow import MlflowClient

    logged = MlflowClient(tracking_uri=tiny_study.tracking_uri).get_run(rid).data.metrics
    # the test mean over the study tasks: `test_mean_auroc_6`, or e.g. `test_mean_auroc_5of6` on a tiny test split
    metric = metric.replace("test headline", headline_key(logged)).replace("val headline", headline_key(logged, "val"))
    expected = logged[metric]
    ui_page.goto(f"{server}/#/experiments/{experiment_id(tiny_study)}/runs/{rid}")
    expect(ui_page.get_by_role("heading", name=name, exact=True)).to_be_visible()
    row = ui_page.get_by_role("row").filter(has=ui_page.get_by_text(metric, exact=True))
    expect(row).to_have_count(1)
    row.scroll_into_view_if_needed()
    shown = row.inner_text()
    values = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", shown.replace(metric, ""))]
    assert any(abs(v - expected) < 1e-6 for v in values), f"{metric} = {expected}, the row shows {shown!r}"


def test_models_page_shows_the_ensembles_with_the_candidate_alias(ui_page, server: str) -> None:
    from playwright.sync_api import expect

    ui_page.goto(f"{server}/#/models")
    for name in RUN_NAMES:
        model = f"{STUDY}.{name.replace('/', '.')}"
        row = ui_page.get_by_role("row").filter(has=ui_page.get_by_role("link", name=model, exact=True))
        expect(row).to_have_count(1)
        expect(row).to_contain_text("candidate")
        expect(row).to_contain_text("Version 1")
    # MLflow's "new model registry UI" announcement covers the table; close it so the screenshot shows the table
    close = ui_page.get_by_role("dialog").get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def test_study_view_opens_in_model_training_with_the_study_columns(ui_page, server: str, tiny_study: Study) -> None:
    from playwright.sync_api import expect

    # the link the experiment's description gives
    ui_page.goto(f"{server}/#/experiments/{experiment_id(tiny_study)}/runs?{STUDY_VIEW_QUERY}")
    # model training: its page is "Runs" (GenAI's is "Training runs") and its menu has no GenAI judges
    expect(ui_page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(ui_page.get_by_role("link", name="Judges")).to_have_count(0)
    from mlflow import MlflowClient

    c = MlflowClient(tracking_uri=tiny_study.tracking_uri)
    # the metric column appears once a run has the 6-task mean; a tiny test split may leave a study task undefined,
    # and the mean over fewer tasks is then logged under its own name: the readable tag column shows it either way
    full_mean = any("test_mean_auroc_6" in c.get_run(run_id(tiny_study, n)).data.metrics for n in RUN_NAMES)
    columns = ["family", "initializer", "truncation", "parameters_M", "imagenet_top1", "chexops.test_auroc_6"]
    for column in columns + ["test_mean_auroc_6"] * full_mean:
        expect(ui_page.get_by_role("columnheader", name=re.compile(rf"^{re.escape(column)}")).first).to_be_visible()
    # every configuration, its values in the study's columns
    for name in RUN_NAMES:
        row = ui_page.get_by_role("row").filter(has=ui_page.get_by_role("link", name=name, exact=True))
        expect(row).to_have_count(1)
        # the grid draws a row's pinned name and its other cells as separate row elements of one row-id
        cells = ui_page.locator(f'[role="row"][row-id="{row.get_attribute("row-id")}"]')
        run = c.get_run(run_id(tiny_study, name)).data
        for key in ("family", "initializer", "parameters_M"):
            expect(cells.locator(f'[col-id="params.`{key}`"]')).to_have_text(run.params[key])
        if "test_mean_auroc_6" in run.metrics:  # a tiny test split may leave a study task undefined: the mean over
            # fewer tasks is then logged under its own name, and the readable tag below says which
            expect(cells.locator('[col-id="metrics.`test_mean_auroc_6`"]')).to_contain_text(
                f"{run.metrics['test_mean_auroc_6']:.4f}"[:5])
        expect(cells.locator('[col-id="tags.`chexops.test_auroc_6`"]')).to_have_text(run.tags["chexops.test_auroc_6"])


def test_configuration_runs_are_nested_under_the_study_run(ui_page, server: str, tiny_study: Study) -> None:
    from playwright.sync_api import expect

    ui_page.goto(f"{server}/#/experiments/{experiment_id(tiny_study)}/runs?workflowType=machine_learning")
    study = ui_page.get_by_role("row").filter(has=ui_page.get_by_role("link", name=SUMMARY_RUN, exact=True))
    expect(study).to_have_count(1)
    for name in RUN_NAMES:  # in creation order the UI shows the study run only, its children folded under it
        expect(ui_page.get_by_role("link", name=name, exact=True)).to_have_count(0)
    study.locator("button[data-component-id$='runnamecellrenderer.tsx_46']").click()
    for name in RUN_NAMES:
        expect(ui_page.get_by_role("link", name=name, exact=True).first).to_be_visible()


def test_registered_model_page_shows_its_description(ui_page, server: str, tiny_study: Study) -> None:
    from playwright.sync_api import expect

    name = RUN_NAMES[0]
    model = f"{STUDY}.{name.replace('/', '.')}"
    from mlflow import MlflowClient

    description = MlflowClient(tracking_uri=tiny_study.tracking_uri).get_registered_model(model).description
    assert "Test mean AUROC" in description and "synthetic" in description, description
    ui_page.goto(f"{server}/#/models/{model}")
    expect(ui_page.get_by_text("Test mean AUROC", exact=False).first).to_be_visible()
    expect(ui_page.get_by_text(description[:60], exact=False).first).to_be_visible()
