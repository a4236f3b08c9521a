"""End to end: `dvc repro` of a tiny study in a copy of the repository, then what it left on disk, in MLflow and
in DVC's view of the pipeline (no-op second run, only `analyze` after an analysis setting changes)."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
from fixtures.study import FULL_RUNS, RUN_NAMES, STUDY, SUMMARY_RUN, Study

from chexops.evaluate.metrics import headline_key  # noqa: E402

pytestmark = pytest.mark.slow

RAN = re.compile(r"Running stage '([^']+)'")
RUN_TAGS = ("chexops.git_commit", "chexops.data_hash", "chexops.timm_tag", "chexops.plugin", "chexops.device",
            "chexops.precision", "chexops.version")
NOOP_SECONDS = 30  # a no-op `dvc repro` only hashes what it tracks: seconds, where the study took minutes


def slug(name: str) -> str:
    return name.replace("/", "__") + "__labels-1.0"  # folders always carry the label fraction


def client(study: Study):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=study.tracking_uri)


def experiment_runs(study: Study) -> list:
    c = client(study)
    experiment = c.get_experiment_by_name(STUDY)
    assert experiment is not None, f"no MLflow experiment {STUDY!r} in {study.tracking_uri}"
    return c.search_runs([experiment.experiment_id], max_results=1000)


def runs_by_name(study: Study) -> dict[str, list]:
    found: dict[str, list] = {}
    for run in experiment_runs(study):
        found.setdefault(run.info.run_name, []).append(run)
    return found


def artifact_paths(c, run_id: str, path: str | None = None) -> set[str]:
    paths: set[str] = set()
    for item in c.list_artifacts(run_id, path):
        paths |= artifact_paths(c, run_id, item.path) if item.is_dir else {item.path}
    return paths


def test_every_stage_ran_once(tiny_study: Study) -> None:
    ran = RAN.findall(tiny_study.first_repro.output)
    assert sorted(ran) == sorted(tiny_study.stages), tiny_study.first_repro.output[-3000:]
    # the plugins lock, 2 data stages, 4 per full configuration, 2 for the truncated one, analyze
    assert len(tiny_study.stages) == 1 + 2 + 4 * len(FULL_RUNS) + 2 + 1, tiny_study.stages
    assert {"ingest", "prepare", "analyze"} <= set(ran)


@pytest.mark.parametrize("name", RUN_NAMES)
def test_eval_json_has_test_auroc_with_ci(tiny_study: Study, name: str) -> None:
    out = tiny_study.root / "runs" / "eval" / slug(name)
    payload = json.loads((out / "eval.json").read_text())
    assert payload["run"] == name
    m, key = payload["metrics"], payload["headline"]["metric"]  # 6 tasks, or fewer named as such (tiny test split)
    low, mean, high = m[f"{key}_ci_low"], m[key], m[f"{key}_ci_high"]
    assert 0.0 <= low <= mean <= high <= 1.0, m
    assert high > low, f"a 95% bootstrap CI over the test studies cannot have zero width: {low}, {high}"
    assert (out / "predictions.csv").stat().st_size > 0 and (out / "roc.png").stat().st_size > 0


def test_reports(tiny_study: Study) -> None:
    reports = tiny_study.root / "reports"
    text = (reports / "study.md").read_text()
    assert text.startswith(f"# {STUDY}")
    for name in RUN_NAMES:
        assert f"| {name} |" in text, f"{name} missing from the main table of study.md"
    metrics = json.loads((reports / "metrics.json").read_text())
    assert metrics["n_runs"] == len(RUN_NAMES)
    assert set(metrics["runs"]) == set(RUN_NAMES)
    evals = {n: json.loads((tiny_study.root / "runs/eval" / slug(n) / "eval.json").read_text()) for n in RUN_NAMES}
    for name, values in metrics["runs"].items():
        key = evals[name]["headline"]["metric"]
        assert values["mean_auroc_6"] == pytest.approx(evals[name]["metrics"][key])
    figures = sorted(p.name for p in (reports / "figures").glob("*.png") if p.stat().st_size > 0)
    assert "auroc_vs_params.png" in figures, figures
    assert (reports / "plots" / "auroc_vs_params.csv").stat().st_size > 0


@pytest.mark.parametrize("name", RUN_NAMES)
def test_mlflow_run_per_configuration(tiny_study: Study, name: str) -> None:
    runs = runs_by_name(tiny_study).get(name, [])
    assert len(runs) == 1, f"expected one MLflow run named {name!r}, found {len(runs)}"
    run = runs[0]
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    missing = [t for t in RUN_TAGS if not tags.get(t)]
    assert not missing, f"{name} lacks tags {missing}"
    payload = json.loads((tiny_study.root / "runs/eval" / slug(name) / "eval.json").read_text())
    cache = json.loads((tiny_study.root / "data/cache/cache.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", tags["chexops.git_commit"]), tags["chexops.git_commit"]
    assert tags["chexops.data_hash"] == cache["data_hash"]
    assert tags["chexops.timm_tag"] == payload["timm_tag"]
    assert tags["chexops.plugin"] == "chexops"
    assert (tags["chexops.device"], tags["chexops.precision"]) == ("cpu", "fp32")
    assert tags["chexops.version"] == metadata.version("chexops")
    assert payload["mlflow_run_id"] == run.info.run_id
    key = payload["headline"]["metric"]
    assert run.data.metrics[key] == pytest.approx(payload["metrics"][key])
    assert tags["chexops.undefined_tasks"] == (", ".join(payload["undefined_tasks"]) or "none")
    assert tags["chexops.test_split"].startswith(f"{payload['test_split']['studies']} studies of ")
    family, init, truncation = name.split("/")
    # only the configuration's own params (the study-wide settings are on the study run), with its size
    p = run.data.params
    assert (p["family"], p["initializer"], p["truncation"]) == (family, init, truncation)
    assert float(p["parameters_M"]) == pytest.approx(payload["parameters"] / 1e6, abs=0.01)
    assert p["imagenet_top1"] == str(payload["imagenet_top1"])
    assert not any(k.startswith(("grid", "analysis", "data.synthetic", "tracking")) for k in p), sorted(p)
    assert len(p) <= 20, sorted(p)


@pytest.mark.parametrize("name", RUN_NAMES)
def test_configuration_runs_are_children_of_the_study_run(tiny_study: Study, name: str) -> None:
    (study,) = runs_by_name(tiny_study)[SUMMARY_RUN]
    (run,) = runs_by_name(tiny_study)[name]
    assert run.data.tags["mlflow.parentRunId"] == study.info.run_id
    assert study.data.tags["chexops.study_run"] == STUDY


@pytest.mark.parametrize("name", RUN_NAMES)
def test_runs_record_their_dataset_inputs(tiny_study: Study, name: str) -> None:
    import yaml

    (run,) = runs_by_name(tiny_study)[name]
    lock = yaml.safe_load((tiny_study.root / "dvc.lock").read_text())
    dvc_dir = next(o["md5"] for o in lock["stages"]["prepare"]["outs"] if o["path"] == "data/cache")
    listing = json.loads((tiny_study.root / ".dvc/cache/files/md5" / dvc_dir[:2] / dvc_dir[2:]).read_text())
    dvc_md5 = {e["relpath"]: e["md5"] for e in listing}
    splits = json.loads((tiny_study.root / "data/index/splits.json").read_text())
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {f"synthetic-chexpert-32px-{s}" for s in ("train", "valid", "test")}, set(inputs)
    for split in ("train", "valid", "test"):
        d = inputs[f"synthetic-chexpert-32px-{split}"]
        assert d.dataset.digest == dvc_md5[f"{split}.npy"]  # each split its own array's md5, as DVC recorded it
        profile = json.loads(d.dataset.profile)
        assert profile["images"] == splits[split]["images"] and "synthetic" in profile["data"]
        assert f"data/cache/{split}.npy" in json.loads(d.dataset.source)["uri"]
        assert {t.key: t.value for t in d.tags}["mlflow.data.context"] == split


@pytest.mark.parametrize("name", RUN_NAMES)
def test_mlflow_metrics_are_logged_against_examples_seen(tiny_study: Study, name: str) -> None:
    (run,) = runs_by_name(tiny_study)[name]
    c = client(tiny_study)
    trained = json.loads((tiny_study.root / "runs/train" / slug(name) / "train.json").read_text())
    val_key = headline_key(run.data.metrics, "val")  # val_mean_auroc_6, or fewer tasks named as such
    for metric in (val_key, "train_loss"):
        steps = [m.step for m in c.get_metric_history(run.info.run_id, metric)]
        assert len(steps) >= 3, f"{name} {metric}: only steps {steps}"
        assert steps == sorted(set(steps)), f"{name} {metric}: steps not strictly increasing: {steps}"
        # eval_every is 64 examples: steps are counts of examples, not optimizer steps or epochs
        assert steps[0] >= 64 and steps[-1] == trained["examples"], (steps, trained)


@pytest.mark.parametrize("name", RUN_NAMES)
def test_mlflow_artifacts(tiny_study: Study, name: str) -> None:
    (run,) = runs_by_name(tiny_study)[name]
    paths = artifact_paths(client(tiny_study), run.info.run_id)
    assert {"roc.png", "predictions.csv", "manifest.json"} <= paths, paths


@pytest.mark.parametrize("name", RUN_NAMES)
def test_registered_ensemble_with_candidate_alias(tiny_study: Study, name: str) -> None:
    (run,) = runs_by_name(tiny_study)[name]
    c = client(tiny_study)
    model = f"{STUDY}.{name.replace('/', '.')}"
    version = c.get_model_version_by_alias(model, "candidate")
    assert version.run_id == run.info.run_id
    record = json.loads((tiny_study.root / "runs/registry" / f"{slug(name)}.json").read_text())
    assert (record["registered_model"], record["version"], record["alias"]) == (model, int(version.version),
                                                                                "candidate")
    # the logged model is named after its configuration; the version describes itself in a few readable tags
    assert c.get_logged_model(version.source.removeprefix("models:/")).name == name.replace("/", "-")
    payload = json.loads((tiny_study.root / "runs/eval" / slug(name) / "eval.json").read_text())
    m, key = payload["metrics"], payload["headline"]["metric"]
    auroc = f"{m[key]:.3f} [{m[f'{key}_ci_low']:.3f}, {m[f'{key}_ci_high']:.3f}]"
    assert version.tags["test_auroc_6"].startswith(auroc) and len(version.tags) <= 10, version.tags
    assert auroc in version.description and "synthetic" in version.description, version.description
    assert c.get_registered_model(model).description == version.description


def test_registry_holds_one_model_per_configuration(tiny_study: Study) -> None:
    names = {m.name for m in client(tiny_study).search_registered_models(max_results=1000)}
    assert names == {f"{STUDY}.{n.replace('/', '.')}" for n in RUN_NAMES}


def test_summary_run_holds_the_report(tiny_study: Study, tmp_path: Path) -> None:
    summaries = runs_by_name(tiny_study).get(SUMMARY_RUN, [])
    assert len(summaries) == 1, f"expected one study run {SUMMARY_RUN!r}, found {len(summaries)}"
    latest = summaries[0]
    assert latest.data.tags.get("chexops.stage") == "study"
    summary = json.loads((tiny_study.root / "reports/summary.json").read_text())
    # the tiny study measures its truncation (two full runs of one initializer rank no Spearman)
    assert "truncation.significant_drops" in summary, summary
    assert {k: round(latest.data.metrics[k], 4) for k in summary} == summary, (summary, latest.data.metrics)
    c = client(tiny_study)
    paths = artifact_paths(c, latest.info.run_id)
    assert {"reports/study.md", "reports/metrics.json"} <= paths, paths
    assert any(p.startswith("reports/figures/") and p.endswith(".png") for p in paths), paths
    local = c.download_artifacts(latest.info.run_id, "reports/study.md", str(tmp_path))
    assert Path(local).read_text() == (tiny_study.root / "reports/study.md").read_text()


def test_second_repro_is_a_noop(tiny_study: Study) -> None:
    before = len(experiment_runs(tiny_study))
    again = tiny_study.dvc("repro")
    print(f"\nno-op dvc repro: {again.seconds:.1f} s")
    # only the plugins lock runs (it re-reads the installed plugins every time) and finds nothing changed
    assert RAN.findall(again.output) == ["plugins"], again.output
    assert "plugins.lock.json, plugins.lock/: unchanged" in again.output, again.output
    assert again.seconds < NOOP_SECONDS, f"a no-op dvc repro took {again.seconds:.0f} s"
    assert len(experiment_runs(tiny_study)) == before, "a no-op repro must not start MLflow runs"
    assert json.loads(tiny_study.dvc("status", "--json").output) == {"plugins": ["always changed"]}


def test_changing_analysis_bootstrap_reruns_only_analyze(tiny_study: Study) -> None:
    params = tiny_study.params()
    resamples = params["analysis"]["bootstrap"] + 50
    params["analysis"]["bootstrap"] = resamples
    tiny_study.write_params(params)
    status = json.loads(tiny_study.dvc("status", "--json").output)
    assert set(status) == {"plugins", "analyze"} and status["plugins"] == ["always changed"], status
    summaries = len(runs_by_name(tiny_study).get(SUMMARY_RUN, []))
    out = tiny_study.dvc("repro").output
    assert RAN.findall(out) == ["plugins", "analyze"], out
    assert f"from {resamples} bootstrap resamples" in (tiny_study.root / "reports/study.md").read_text()
    assert len(runs_by_name(tiny_study)[SUMMARY_RUN]) == summaries == 1  # the same study run, logged again
    assert json.loads(tiny_study.dvc("status", "--json").output) == {"plugins": ["always changed"]}


def test_dvc_metrics_and_plots_show(tiny_study: Study, tmp_path: Path) -> None:
    shown = tiny_study.dvc("metrics", "show").output
    print(f"\ndvc metrics show: {max(map(len, shown.splitlines()))} columns wide\n{shown}")
    # a row per run, with its CI, and one for the study's summary
    for name in RUN_NAMES:
        row = next((line for line in shown.splitlines() if slug(name) in line), None)
        assert row is not None, shown
        values = json.loads((tiny_study.root / "runs/metrics" / f"{slug(name)}.json").read_text())
        headline = json.loads((tiny_study.root / "runs/eval" / slug(name) / "eval.json").read_text())["headline"]
        # test_auroc_6, or the mean over fewer tasks under its own name (e.g. test_auroc_5of6) on a tiny test split
        auroc = headline["metric"].removeprefix("test_mean_").replace("auroc_", "test_auroc_")
        assert set(values) == {auroc, "ci_low", "ci_high", "params_M"}
        assert f"{values['ci_low']:.4g}"[:5] in row, (row, values)
    assert max(map(len, shown.splitlines())) < 200, shown
    # the study's numbers on their own row, so their columns never widen the per-run table
    assert "reports/summary.json" not in shown
    as_json = json.loads(tiny_study.dvc("metrics", "show", "reports/summary.json", "--json").output)
    on_disk = json.loads((tiny_study.root / "reports/summary.json").read_text())
    assert next(iter(as_json.values()))["data"]["reports/summary.json"]["data"] == on_disk
    tiny_study.dvc("plots", "show", "-o", str(tmp_path / "plots"))
    html = (tmp_path / "plots" / "index.html").read_text()
    assert "auroc_vs_params" in html and "vega" in html.lower(), html[:2000]
    # points labelled by family with CI bars, not a line through points sorted by size
    assert '"ci_low"' in html and '"text"' in html and '"rule"' in html, html[:3000]


def test_truncated_stages_are_named_after_their_configuration(tiny_study: Study) -> None:
    assert {"train_truncated@resnet18-random-drop-3", "evaluate_truncated@resnet18-random-drop-3"} <= set(
        tiny_study.stages), tiny_study.stages
    assert not [s for s in tiny_study.stages if re.search(r"@\d+$", s)], tiny_study.stages


def test_repro_prints_a_line_per_evaluation(tiny_study: Study) -> None:
    # not a terminal: no progress bars, but each evaluation says where the run is and how long is left
    # (the tiny validation split may leave the AUROC undefined: nan)
    lines = re.findall(r"resnet18/random/full: (\d+)/(\d+) examples, val AUROC (?:\d\.\d{3}|nan), (?:\d+ s left|"
                       r"time left unknown)", tiny_study.first_repro.output)
    # the last evaluation is at the end of the budget (a whole batch may pass it)
    assert len(lines) >= 3 and int(lines[-1][0]) >= int(lines[-1][1]), tiny_study.first_repro.output[-3000:]


def test_grid_seeds_add_exactly_their_stages_and_the_seed_spread(tiny_study: Study) -> None:
    """Last in this module (it adds runs the others do not expect): grid.seeds [1] re-runs nothing but the
    repeats' train and evaluate stages and analyze, registers nothing new, and study.md reads the spread."""
    params = tiny_study.params()
    params["grid"]["seeds"] = [1]
    tiny_study.write_params(params)
    status = json.loads(tiny_study.dvc("status", "--json").output)
    repeats = {f"{stage}@{family}-random-1" for stage in ("train_seeds", "evaluate_seeds")
               for family in params["grid"]["families"]}
    assert set(status) == {"plugins", "analyze"} | repeats, status
    versions = len(client(tiny_study).search_model_versions())
    out = tiny_study.dvc("repro").output
    assert set(RAN.findall(out)) == {"plugins", "analyze"} | repeats, out
    assert "not registered (a grid.seeds repeat)" in out
    assert len(client(tiny_study).search_model_versions()) == versions
    for family in params["grid"]["families"]:
        record = json.loads((tiny_study.root / f"runs/eval/{family}__random__full__labels-1.0__seed-1/eval.json")
                            .read_text())
        assert (record["run"], record["train_seed"], record["seed_repeat"]) == (f"{family}/random/full/seed-1", 1, True)
    assert "Across train seeds a configuration's AUROC-6 spans up to" in (tiny_study.root / "reports/study.md"
                                                                           ).read_text()
