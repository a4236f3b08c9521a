"""The study view's experiment tag is in the envelope MLflow 3.15+ lists under Views (name, createdAt, updatedAt,
state as a JSON string), rewritten only when the view changes; the experiment note links it."""

from __future__ import annotations

import json

from chexops.tracking import presentation


def test_the_view_tag_is_a_saved_view_envelope_written_once() -> None:
    value = presentation.study_view_tag(None, 1_000)
    envelope = json.loads(value)
    assert envelope["name"] == presentation.STUDY_VIEW_NAME
    assert envelope["createdAt"] == envelope["updatedAt"] == 1_000
    state = json.loads(envelope["state"])  # the UI parses the state string again
    assert state["searchFilter"] == presentation.CONFIGURATIONS_FILTER and state["orderByAsc"] is False
    # widths apply to the columns the order lists: the AUROC-with-CI column is listed and wide
    (wide,) = state["columnWidths"]
    assert wide in state["columnOrder"] and state["columnWidths"][wide] >= 180
    # the Charts tab: the study's two charts open in the first section, the auto-charts' sections folded
    assert [(c["type"], c["metricSectionId"]) for c in state["compareRunCharts"]] == [
        ("BAR", presentation.STUDY_SECTION), ("SCATTER", presentation.STUDY_SECTION)]
    assert [(s["name"], s["display"]) for s in state["compareRunSections"]] == [
        (presentation.STUDY_CHARTS, True), ("Model metrics", False), ("System metrics", False)]
    assert presentation.study_view_tag(value, 9_999) == value  # unchanged: nothing to write
    old_format = json.dumps({"selectedColumns": []})  # what earlier chexops wrote: upgraded, dated now
    assert json.loads(presentation.study_view_tag(old_format, 5_000))["createdAt"] == 5_000


def test_the_experiment_note_links_the_view() -> None:
    note = presentation.experiment_note("demo", 3, "synthetic data", "7")
    assert f"]({presentation.study_view_path('7')})" in note and presentation.STUDY_VIEW_NAME in note
    assert "chexops ui" in note
