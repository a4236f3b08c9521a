"""Lineage, statically: dvc.yaml's deps are exactly the chexops modules each stage script runs (the import closure
of tests/fixtures/lineage.py) and the plugin components it uses. Against a real pipeline: tests/e2e/."""

from __future__ import annotations

import re

import pytest
import yaml
from fixtures.lineage import REPO, module_file, stage_modules

SCRIPT = re.compile(r"pipelines/(\w+)\.py")


def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def dvc_stages() -> dict[str, dict]:
    stages = dvc_yaml()["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_deps_cover_the_import_closure_of_every_stage_script(stage: str) -> None:
    spec = dvc_stages()[stage]
    scripts = SCRIPT.findall(spec["cmd"])
    assert scripts, f"{stage}: no pipelines/*.py in its cmd"
    deps = [str(d) for d in spec["deps"]]
    runs: set[str] = set()
    for script in scripts:
        assert f"pipelines/{script}.py" in deps
        modules = stage_modules(REPO / "pipelines" / f"{script}.py")
        files = sorted(str(module_file(m).relative_to(REPO)) for m in modules)
        missing = [f for f in files if not covered(f, deps)]
        assert not missing, f"dvc.yaml stage {stage} runs {missing} but does not depend on them"
        runs.update(files)
    # narrow: a chexops dependency the stage never imports would re-run it for edits that cannot change it
    extra = [d for d in deps if d.startswith("chexops/") and not any(covered(f, [d]) for f in runs)]
    assert not extra, f"dvc.yaml stage {stage} depends on {extra}, which it does not run"
    # the plugin components a configuration's stage uses, each its own lock file; the data stages and analyze
    # use none, so installing or editing a plugin never re-runs them
    uses = set()
    if "--family" in spec["cmd"] or "${item}" in spec["cmd"]:
        uses = {"plugins.lock/families/${item.family}.json", "plugins.lock/initializers/${item.init}.json"}
        if {"train", "tune"} & set(scripts):
            uses.add("plugins.lock/label-policies/${data.label_policy}.json")
        if "train" in scripts and "foreach" in dvc_yaml()["stages"][stage]:
            uses.add("plugins.lock/truncated/${item.family}__${item.init}__drop-${item.depth}.json")
    assert {d for d in deps if d.startswith("plugins.lock")} == uses, stage


def test_the_closure_follows_function_level_imports() -> None:
    # the evaluate stage reaches the checkpoint ensemble only through imports inside functions
    evaluate = stage_modules(REPO / "pipelines/evaluate_and_register.py")
    assert {"chexops.evaluate.ensemble", "chexops.evaluate.scoring", "chexops.data.cache"} <= evaluate
    assert "chexops.tracking.pyfunc" in evaluate  # Tracker.log_ensemble imports it inside the method
    pretrain = stage_modules(REPO / "pipelines/pretrain.py")
    assert {"chexops.train.pretrain", "chexops.train.moco"} <= pretrain  # through the ssl initializer's hook
    ingest = stage_modules(REPO / "pipelines/ingest.py")
    assert "chexops.data.synthetic" in ingest and "chexops.train.loop" not in ingest
    # the data stages never open MLflow: editing what the UI shows does not re-run them
    assert not {m for m in ingest | stage_modules(REPO / "pipelines/prepare.py") if m.startswith("chexops.tracking")}
    assert "chexops.components.builtin.families" in ingest  # loaded by name by the plugin manager
