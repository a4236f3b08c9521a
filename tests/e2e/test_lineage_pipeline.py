"""Lineage against a real pipeline: an edit in a stage's import closure, or a plugin component change, re-runs
exactly the stages that use it; repeated work changes nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from fixtures.study import Study, build_study, run


def changed_stages(study: Study) -> set[str]:
    status = json.loads(study.dvc("status", "--json").output)
    return {name for name, reasons in status.items() if reasons != ["always changed"]}


# A module in each stage's closure, and stages its edit must mark changed.
EDITS = {
    "chexops/data/splits.py": {"ingest"},
    "chexops/data/cache.py": {"prepare", "train@resnet18-random-1.0", "evaluate@resnet18-random-1.0"},
    "chexops/train/checkpoints.py": {"train@resnet18-random-1.0", "train_truncated@resnet18-random-drop-3"},
    "chexops/evaluate/ensemble.py": {"evaluate@resnet18-random-1.0", "evaluate@mobilenetv3-random-1.0"},
    "chexops/tracking/pyfunc.py": {"evaluate@resnet18-random-1.0", "evaluate_truncated@resnet18-random-drop-3"},
    "chexops/components/builtin/families.py": {"ingest", "prepare", "train@mobilenetv3-random-1.0", "analyze"},
    "chexops/analysis/figures.py": {"analyze"},
    "chexops/train/moco.py": {"pretrain@resnet18-random", "train@resnet18-random-1.0"},
}


PLUGIN = '''import chexops

UNUSED = 1  # read by no component: editing it re-runs nothing
BLOCKS = ("layer1", "layer2", "layer3", "layer4")


def _family(name, top1):
    return chexops.FamilySpec(name=name, timm_name="resnet18", tag="tv_in1k", group="ResNet", imagenet_top1=top1,
                              blocks=BLOCKS, max_drop=3)


@chexops.hookimpl
def register_families(register):
    register(_family("lineage_net", 69.76))  # the grid trains this one
    register(_family("lineage_spare", 69.76))  # installed, in no grid
'''


def fake_installed_plugin(site: Path, version: str = "0.1") -> Path:
    """A plugin distribution importlib.metadata finds on PYTHONPATH: a module plus its dist-info."""
    shutil.rmtree(site, ignore_errors=True)
    info = site / f"lineage_plugin-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lineage-plugin\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[chexops]\nlineage = lineage_plugin\n")
    (site / "lineage_plugin.py").write_text(PLUGIN)
    return site / "lineage_plugin.py"


NET = {"pretrain@lineage_net-random", "tune@lineage_net-random-1.0", "train@lineage_net-random-1.0",
       "evaluate@lineage_net-random-1.0"}


def chexops_cli(study: Study, *args: str) -> object:
    return run([sys.executable, "-m", "chexops", *args], study.root, study.env, timeout=600, check=False)


@pytest.mark.slow
def test_an_edit_in_a_stage_closure_marks_the_stage_changed(tiny_study: Study) -> None:
    assert changed_stages(tiny_study) == set()
    for rel, expected in EDITS.items():
        path = tiny_study.root / rel
        original = path.read_bytes()
        try:
            path.write_bytes(original + b"\n# an edit\n")
            changed = changed_stages(tiny_study)
            assert expected <= changed, f"editing {rel} left {sorted(expected - changed)} up to date"
        finally:
            path.write_bytes(original)
    assert changed_stages(tiny_study) == set()


@pytest.mark.slow
def test_a_plugin_change_reruns_exactly_the_stages_of_its_changed_component(tmp_path: Path) -> None:
    from chexops.naming import registered_model_name

    module = fake_installed_plugin(tmp_path / "site")
    root = tmp_path / "repo"
    env = {"PYTHONPATH": f"{root}:{tmp_path / 'site'}", "CHEXOPS_LOAD_PLUGINS": "lineage"}
    study = build_study(root, {"grid": {"families": ["lineage_net"], "truncated": {}}}, env)
    plugins_stage = ("repro", "--single-item", "plugins")
    lock = json.loads((root / "plugins.lock.json").read_text())["plugins"]
    assert [(p["distribution"], p["version"]) for p in lock] == [("lineage-plugin", "0.1")]
    assert changed_stages(study) == set()

    # an edit no component reads, and an edit to a component no stage uses: nothing re-runs
    module.write_text(PLUGIN.replace("UNUSED = 1", "UNUSED = 2"))
    study.dvc(*plugins_stage)
    assert changed_stages(study) == set()
    module.write_text(PLUGIN.replace('_family("lineage_spare", 69.76)', '_family("lineage_spare", 70.0)'))
    study.dvc(*plugins_stage)
    assert changed_stages(study) == set()

    # the grid's family changes: its four stages re-run, nothing else (not the data, not the analysis)
    module.write_text(PLUGIN.replace('_family("lineage_net", 69.76)', '_family("lineage_net", 69.75)'))
    stale = run([sys.executable, "pipelines/train.py", "--quiet", "--family", "lineage_net", "--init", "random"],
                root, study.env, check=False)
    assert stale.returncode == 2 and "family 'lineage_net'" in stale.output and "changed" in stale.output, stale.output
    study.dvc(*plugins_stage)
    assert changed_stages(study) == NET
    # the re-run trains the same weights (imagenet_top1 does not reach a random init): no new registry version
    again = study.dvc("repro").output
    assert "identical to" in again and "no new version registered" in again, again[-3000:]
    from mlflow import MlflowClient

    name = registered_model_name("chextransfer-e2e", "lineage_net/random/full")
    client = MlflowClient(tracking_uri=study.tracking_uri)
    assert [int(v.version) for v in client.search_model_versions(f"name = '{name}'")] == [1]
    assert {k: int(v) for k, v in client.get_registered_model(name).aliases.items()} == {"candidate": 1}
    assert changed_stages(study) == set()


@pytest.mark.slow
def test_preparing_the_same_data_again_changes_nothing(tiny_study: Study) -> None:
    cache_json = (tiny_study.root / "data/cache/cache.json").read_bytes()
    out = tiny_study.dvc("repro", "--force", "--single-item", "prepare").output
    assert "Running stage 'prepare'" in out, out
    assert (tiny_study.root / "data/cache/cache.json").read_bytes() == cache_json
    assert changed_stages(tiny_study) == set()


@pytest.mark.slow
def test_chexops_train_after_dvc_repro_is_a_noop(tiny_study: Study) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tiny_study.tracking_uri)
    experiment = client.get_experiment_by_name(tiny_study.params()["study"]["name"])
    runs = len(client.search_runs([experiment.experiment_id], max_results=1000))
    result = chexops_cli(tiny_study, "train", "--family", "resnet18", "--init", "random", "--quiet")
    assert result.returncode == 0, result.output
    assert "is up to date" in result.output and "--restart" in result.output, result.output
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == runs
    assert changed_stages(tiny_study) == set()


@pytest.mark.slow
def test_chexops_train_refuses_a_cache_prepared_for_other_settings(tiny_study: Study) -> None:
    params = tiny_study.params()
    original = dict(params["data"])
    params["data"]["image_size"] = original["image_size"] + 16
    tiny_study.write_params(params)
    try:
        result = chexops_cli(tiny_study, "train", "--family", "resnet18", "--init", "random", "--quiet")
    finally:
        params["data"] = original
        tiny_study.write_params(params)
    assert result.returncode == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "dvc repro prepare" in lines[0] and "image_size" in lines[0], result.output
