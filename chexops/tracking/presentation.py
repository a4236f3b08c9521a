"""What a person sees of the study in MLflow: the experiment's note and saved view, run and model descriptions,
a registry version's tags, dataset inputs. Plain values in, strings and mappings out; no store access here
except through the Tracker passed in."""

from __future__ import annotations

import json
from typing import Any

from chexops import naming
from chexops.records import EvalRecord
from chexops.tracking import tags as tag

STUDY_VIEW = "chexops-study"
# the model-training page (3.17 opens GenAI's traces unless the link or the user's last choice says otherwise)
STUDY_VIEW_QUERY = f"workflowType=machine_learning&viewStateShareKey={STUDY_VIEW}"
# the AUROC with its CI as one readable tag ("0.569 [0.400, 0.610]"); the metric itself, for sorting
STUDY_COLUMNS = (f"metrics.`{naming.TEST_HEADLINE}`", "params.`family`", "params.`initializer`", "params.`truncation`",
                 "params.`parameters_M`", "params.`imagenet_top1`", f"tags.`{tag.TEST_AUROC}`")


STUDY_VIEW_NAME = "CheXtransfer study: test AUROC"
# configuration runs only: the pretrain and study runs carry no truncation tag (they were rows of dashes)
CONFIGURATIONS_FILTER = f"tags.`{tag.TRUNCATION}` LIKE '%'"


# the Charts tab: the study's two charts in a first section, MLflow's per-metric auto-charts (dozens) collapsed below
STUDY_SECTION, MODEL_SECTION, SYSTEM_SECTION = "chexops-study", "chexops-model-metrics", "chexops-system-metrics"
STUDY_CHARTS = "CheXtransfer study"
AUROC_BAR, AUROC_VS_PARAMETERS = "chexops-auroc-by-run", "chexops-auroc-vs-parameters"


def study_view_state() -> dict[str, Any]:
    """The saved runs-table view: the configuration runs with the study's columns, best test AUROC first, the
    readable AUROC-with-CI column wide enough to read, every run in the charts. Sorted by a metric the UI lists
    every run flat; in creation order (its default) it nests the configuration runs under the study run."""
    return {"selectedColumns": list(STUDY_COLUMNS), "orderByKey": f"metrics.`{naming.TEST_HEADLINE}`",
            "orderByAsc": False, "searchFilter": CONFIGURATIONS_FILTER, "viewMaximized": False,
            "runListHidden": False, "runsHiddenMode": "SHOW_ALL",
            # the UI applies widths to the columns its order lists (ids as the grid's col-id): all of them, as shown
            "columnOrder": ["runDateAndNestInfo", "duration", *STUDY_COLUMNS],
            "columnWidths": {f"tags.`{tag.TEST_AUROC}`": 200},
            "compareRunCharts": study_charts(), "compareRunSections": chart_sections(),
            "isAccordionReordered": False, "hideEmptyCharts": True}


def study_charts() -> list[dict[str, Any]]:
    """Test AUROC-6 per run (a bar each) and against parameters (M), the paper's size question. The UI adds its
    auto-charts for the other metrics to the sections of their names (chart_sections). MLflow 3.17 titles a
    chart by its metric and ignores a configured name; the data the runs were scored on is the experiment note's
    first line, above the charts."""
    common = {"metricSectionId": STUDY_SECTION, "deleted": False, "isGenerated": False, "runsCountToCompare": 100}
    metric = {"key": naming.TEST_HEADLINE, "type": "METRIC"}
    return [common | {"uuid": AUROC_BAR, "type": "BAR", "metricKey": naming.TEST_HEADLINE},
            common | {"uuid": AUROC_VS_PARAMETERS, "type": "SCATTER",
                      "xaxis": {"key": "parameters_M", "type": "PARAM"}, "yaxis": metric}]


def chart_sections() -> list[dict[str, Any]]:
    """The study's section open first; MLflow's two sections of auto-charts (named as the UI names them)
    collapsed, a click away."""
    return [{"uuid": uuid, "name": name, "display": uuid == STUDY_SECTION, "isReordered": False,
             "deleted": False, "isGenerated": uuid != STUDY_SECTION}
            for uuid, name in ((STUDY_SECTION, STUDY_CHARTS), (MODEL_SECTION, "Model metrics"),
                               (SYSTEM_SECTION, "System metrics"))]


def study_view_tag(existing: str | None, now_ms: int) -> str:
    """The experiment tag's value in the form MLflow 3.15+ lists under the runs page's Views menu (an envelope:
    name, createdAt, updatedAt and the page state as a JSON string; older UIs load the link alone). An unchanged
    view keeps its existing value, so stages starting together write nothing."""
    state = json.dumps(study_view_state())
    try:
        old = json.loads(existing) if existing else {}
    except ValueError:
        old = {}
    if isinstance(old, dict) and old.get("name") == STUDY_VIEW_NAME and old.get("state") == state:
        return str(existing)
    created = old.get("createdAt") if isinstance(old, dict) and isinstance(old.get("createdAt"), int) else now_ms
    return json.dumps({"name": STUDY_VIEW_NAME, "createdAt": created, "updatedAt": now_ms, "state": state})


def study_view_path(experiment_id: str) -> str:
    """The study view's address on an MLflow UI (after its `http://host:port/`)."""
    return f"#/experiments/{experiment_id}/runs?{STUDY_VIEW_QUERY}"


def ui_server_command(uri: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The MLflow UI server on the store `uri` (one worker, no GenAI job runners chexops never uses) and its
    environment."""
    import os
    import sys

    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
               "--port", str(port), "--workers", "1"]
    return command, os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def experiment_note(study: str, configurations: int, data: str, experiment_id: str) -> str:
    """The experiment's description: what the study is, how runs are named, where the study view is."""
    note = (f"CheXtransfer study `{study}`: {configurations} configurations on {data}. Runs are named "
            "family/initializer/truncation (e.g. densenet121/imagenet/drop-1); filter with "
            f"tags.{tag.GROUP}, tags.{tag.INITIALIZER}, tags.{tag.TRUNCATION}; compare test_mean_auroc_6 (95% CI in "
            f"*_ci_low/_ci_high); `{naming.summary_run_name(study)}` holds the analysis report.")
    return note + (f"\n\n**[Open the study view]({study_view_path(experiment_id)})** (also under Views: "
                   f"\"{STUDY_VIEW_NAME}\"): the configuration runs, best test AUROC first, with family, "
                   "initializer, truncation, parameters (M), ImageNet top-1 and the test AUROC-6 with its CI. "
                   "`chexops ui` starts this UI on the study's store and opens it. The Models tab ranks the "
                   f"logged ensembles by metrics.{naming.TEST_HEADLINE}.")


def describe_experiment(tracker: Any, study: str, configurations: int, data: str) -> None:
    """Set the experiment's note, kind and saved view (only what differs: workers may start together)."""
    import time

    experiment = tracker.client.get_experiment(tracker.experiment_id)
    view = tag.SHARED_VIEW_PREFIX + STUDY_VIEW
    wanted = {tag.NOTE: experiment_note(study, configurations, data, tracker.experiment_id),
              tag.EXPERIMENT_KIND: tag.CUSTOM_MODEL_DEVELOPMENT,
              view: study_view_tag(experiment.tags.get(view), int(time.time() * 1000))}
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            try:
                tracker.client.set_experiment_tag(tracker.experiment_id, key, value)
            except Exception:  # noqa: BLE001 - a worker starting at the same moment set it first; UI settings only
                pass


def study_run_tags(study: str, data: str) -> dict[str, str]:
    """The study's parent run: every configuration's run is its child; analyze logs the report there."""
    return {tag.STAGE: naming.STUDY_RUN_KIND, tag.DATA: data,
            tag.NOTE: f"The study `{study}`: every configuration's run is a child of this run; the analyze stage "
                      f"logs the report and summary metrics here. Data: {data}."}


def pretrain_run_tags(family: str, initializer: str, label: str, data: str, data_hash: str) -> dict[str, str]:
    return {tag.STAGE: "pretrain", tag.FAMILY: family, tag.INITIALIZER: initializer, tag.DATA: data,
            tag.DATA_HASH: data_hash,
            tag.NOTE: f"{label} pretraining of {family} on the training split's images, labels unused; data: {data}."}


def dataset_inputs(source: str, image_size: int, digests: dict[str, str], root: str, cache_dir: str,
                   profiles: dict[str, Any], data: str, splits: tuple[str, ...]) -> list[dict[str, Any]]:
    """The prepared splits a stage reads, as MLflow dataset inputs: named by source, size and split; `digests`
    each split's own hash (DVC's md5 of its cached array, or one derived from the prepare stage's content hash)."""
    kind = "synthetic-chexpert" if source == "synthetic" else "chexpert"
    return [{"name": f"{kind}-{image_size}px-{split}", "digest": digests[split], "context": split,
             "source": f"{root} -> {cache_dir}/{split}.npy",
             "profile": profiles[split] | {"data": data}} for split in splits]


def composition_text(split: dict[str, Any]) -> str:
    """'60 studies of 30 patients, 60 frontal + 0 lateral images; dropped 2 studies: no frontal image (...)'."""
    v = split["views"]
    text = (f"{split['studies']} studies of {split['patients']} patients, {v['frontal']} frontal + {v['lateral']} "
            f"lateral images")
    lost = "; ".join(f"{d['studies']} studies: {d['why']}" for d in split["dropped"])
    return text + (f"; dropped {lost}" if lost else "; no study dropped")


def evaluation_tags(record: EvalRecord, headline: str) -> dict[str, str]:
    """The configuration run's tags after evaluation; `headline` is metrics.headline_text of its metrics."""
    return {tag.TEST_AUROC: headline, tag.UNDEFINED_TASKS: ", ".join(record.undefined_tasks) or "none",
            tag.BOOTSTRAP_UNIT: record.bootstrap["unit"], tag.TEST_SPLIT: composition_text(record.test_split)}


def version_tags(record: EvalRecord, headline: str) -> dict[str, str]:
    """A registry version's tags: the test AUROC-6 with its CI (readable, and as the numbers `registry list`
    reads, under the mean's honest name), what the model is and what data scored it; the per-task metrics stay
    on the run."""
    m, key = record.metrics, record.headline_metric
    return {"test_auroc_6": headline, "family": record.family, "initializer": record.initializer,
            "truncation": record.truncation, "data": record.data} | {
                k: str(m[k]) for k in (key, f"{key}_ci_low", f"{key}_ci_high") if m.get(k) is not None}


def model_description(record: EvalRecord, headline: str, ci: float) -> str:
    """The registry's description of a configuration's ensemble: what it is, its data, its test AUROC."""
    p = record
    top1 = f", ImageNet top-1 {p.imagenet_top1}%" if p.imagenet_top1 is not None else ""
    return (f"{p.family} ({p.group}, {p.parameters / 1e6:.2f} M parameters{top1}), {p.initializer} "
            f"initialization, truncation {p.truncation}, trained on {p.label_fraction:.0%} of the labelled "
            f"training split: an ensemble of its top checkpoints by validation AUROC. Data: {p.data}. "
            f"Test mean AUROC over {len(p.headline['tasks'])} of the 6 study tasks: {headline} "
            f"({ci:.0%} bootstrap CI over test {p.bootstrap['unit']}s). Input: uint8 grayscale images (N, H, W); "
            "output: the 14 CheXpert observations' probabilities.")
