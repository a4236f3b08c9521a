"""The MLflow UI (headless Debian Chromium) over a store the chexops Tracker wrote: the study view is listed under
the runs page's Views menu and opens on the configuration runs only; the Models tab lists the logged ensembles
ranked by their test AUROC. Screenshots: CHEXOPS_UI_SCREENSHOTS, else <pytest basetemp>/ui-screenshots."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.browser import ui_page as open_ui_page
from fixtures.ensembles import tiny_manifest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 60_000
STUDY = "views-study"
RUNS = {"resnet18/ssl/drop-3": 0.86, "resnet18/random/drop-3": 0.71}  # the best logged first: the Models
# tab's default order (newest first) is not the ranking
PARAMETERS = {"ssl": 11.2, "random": 0.7}  # distinct, so the scatter has two x positions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"{CHROMIUM} is absent: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A study as the stages leave it: described experiment, a study run, two configuration runs (each with its
    readable AUROC tag and a registered ensemble whose logged model carries the test metrics), a pretrain run."""
    from chexops import naming
    from chexops.tracking import tags as tag
    from chexops.tracking.presentation import describe_experiment
    from chexops.tracking.runs import ModelResults, Tracker

    root = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("CHEXOPS_LOAD_PLUGINS", "")
        tracker = Tracker.open(f"sqlite:///{root / 'mlflow.db'}", str(root / "mlartifacts"), STUDY)
        describe_experiment(tracker, STUDY, len(RUNS), "synthetic data")
        parent = tracker.study_run(naming.summary_run_name(STUDY), STUDY, {})
        pretrain = tracker.start_run("resnet18/ssl/pretrain", {tag.STAGE: "pretrain", tag.PARENT: parent}, {})
        tracker.end_run(pretrain)
        for name, auroc in RUNS.items():
            family, init, truncation = name.split("/")
            run_id = tracker.start_run(name, {tag.PARENT: parent, tag.TRUNCATION: truncation,
                                              tag.TEST_AUROC: f"{auroc:.3f} [{auroc - .05:.3f}, {auroc + .05:.3f}]"},
                                       {"family": family, "initializer": init, "truncation": truncation,
                                        "parameters_M": PARAMETERS[init]})
            metrics = {naming.TEST_HEADLINE: auroc}
            tracker.log_metrics(run_id, metrics, 128, timestamp_ms=1_000)
            tracker.log_ensemble(run_id, tiny_manifest(root, name), naming.registered_model_name(STUDY, name), {},
                                 model_name=naming.logged_model_name(name), description=f"{name} ensemble",
                                 results=ModelResults(metrics, 128, 1_000, "synthetic-32px-test", "d" * 32))
            tracker.end_run(run_id)
    return tracker.uri, tracker.experiment_id


@pytest.fixture(scope="module")
def server(store: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from chexops.tracking.presentation import ui_server_command

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command, env = ui_server_command(store[0], "127.0.0.1", port)  # what `chexops ui` starts
    log = tmp_path_factory.mktemp("server") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except (urllib.error.URLError, OSError):
                time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.fixture
def page(server: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            with open_ui_page(browser, TIMEOUT_MS, request.node.name,
                              tmp_path_factory.getbasetemp() / "ui-screenshots") as page:
                yield page
        finally:
            browser.close()


def open_study_view(page: Any, server: str, experiment_id: str) -> None:
    """As a user does: the experiment's runs page, then the study view from the Views menu."""
    from chexops.tracking.presentation import STUDY_VIEW_NAME

    page.goto(f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    page.get_by_test_id("saved-views-trigger").click()
    page.get_by_text(STUDY_VIEW_NAME, exact=True).click()


def test_the_study_view_is_listed_under_views_and_opens_on_the_configurations(page, server: str, store) -> None:
    from playwright.sync_api import expect

    open_study_view(page, server, store[1])
    # the configuration runs only (no pretrain or study rows of dashes), best test AUROC first
    expect(page.get_by_text(re.compile(r"^\d+ matching runs$"))).to_have_text(f"{len(RUNS)} matching runs")
    for name in RUNS:
        expect(page.get_by_role("link", name=name, exact=True).first).to_be_visible()
    expect(page.get_by_role("link", name="resnet18/ssl/pretrain", exact=True)).to_have_count(0)
    ci = page.locator('[col-id="tags.`chexops.test_auroc_6`"]').filter(has_text="0.860")
    expect(ci.first).to_have_text("0.860 [0.810, 0.910]")  # the whole CI, not cut
    box = ci.first.bounding_box()
    assert box and box["width"] >= 180, box


def test_the_study_views_charts_are_the_auroc_bar_and_auroc_vs_parameters_with_the_auto_charts_folded(
        page, server: str, store) -> None:
    from playwright.sync_api import expect

    from chexops.tracking.presentation import STUDY_CHARTS

    open_study_view(page, server, store[1])
    page.locator('input[value="CHART"]').first.locator("xpath=ancestor::label[1]").click()  # the radio's visible button
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    expect(page.get_by_text(STUDY_CHARTS, exact=True)).to_be_visible()
    for title in ("test_mean_auroc_6", "parameters_M vs. test_mean_auroc_6"):
        card = cards.filter(has_text=title).first
        expect(card).to_be_visible()
        expect(card.locator(".js-plotly-plot")).to_be_visible()  # drawn, not an empty card
    for auroc in RUNS.values():  # a bar per run, labelled with its test AUROC
        expect(cards.first.get_by_text(str(auroc), exact=True)).to_be_visible()
    # MLflow's auto-charts are there, folded: the only open cards are the study's two
    expect(page.get_by_text("Model metrics", exact=True).first).to_be_visible()
    expect(cards.filter(visible=True)).to_have_count(2)


def test_the_models_tab_shows_each_ensembles_test_auroc_and_the_api_ranks_them(page, server: str, store) -> None:
    """MLflow 3.17's Models tab sorts by creation time only (its Sort button flips the direction): it shows each
    logged model's test metric as a column under its dataset, and search_logged_models ranks by it."""
    from mlflow import MlflowClient
    from playwright.sync_api import expect

    _, experiment_id = store
    page.goto(f"{server}/#/experiments/{experiment_id}/models?workflowType=machine_learning")
    for name, auroc in RUNS.items():
        link = page.get_by_role("link", name=name.replace("/", "-"), exact=True)
        expect(link).to_be_visible()
        # the grid draws a row's pinned name and its other cells as separate row elements of one row-id
        row_id = page.get_by_role("row").filter(has=link).first.get_attribute("row-id")
        cells = page.locator(f'[role="row"][row-id="{row_id}"] [role="gridcell"]')
        expect(cells.filter(has_text=re.compile(rf"^{auroc}"))).to_have_count(1)
    expect(page.get_by_role("columnheader", name="test_mean_auroc_6").first).to_be_attached()
    client = MlflowClient(store[0])
    ranked = client.search_logged_models([experiment_id], order_by=[
        {"field_name": "metrics.test_mean_auroc_6", "ascending": False}])
    assert [m.name for m in ranked] == ["resnet18-ssl-drop-3", "resnet18-random-drop-3"]
    found = client.search_logged_models([experiment_id], filter_string="metrics.test_mean_auroc_6 > 0.8")
    assert [m.name for m in found] == ["resnet18-ssl-drop-3"]
