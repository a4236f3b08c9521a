"""End to end: a truncation strategy registered by an installed plugin is selected in grid.truncated, trained by
`dvc repro`, and shows under its own name in study.md, MLflow and the model registry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fixtures import keep_first_plugin
from fixtures.study import STUDY, build_study

pytestmark = pytest.mark.slow

RUN = "resnet18/random/keep-first-1"
FULL = "resnet18/random/full"


def install_keep_first(site: Path) -> None:
    """tests/fixtures/keep_first_plugin.py as the distribution chexops-keepfirst, as pip would leave it."""
    site.mkdir()
    shutil.copy(keep_first_plugin.__file__, site / "keep_first_plugin.py")
    info = site / "chexops_keepfirst-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: chexops-keepfirst\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[chexops]\nkeepfirst = keep_first_plugin\n")


def test_a_plugin_strategy_trains_through_dvc_repro(tmp_path):
    site = tmp_path / "site"
    install_keep_first(site)
    root = tmp_path / "repo"
    grid = {"families": ["resnet18"], "initializers": ["random"],
            "truncated": [{"family": "resnet18", "depth": 1, "init": "random", "strategy": "keep-first"}]}
    study = build_study(root, {"grid": grid}, {"PYTHONPATH": os.pathsep.join([str(root), str(site)]),
                                               "CHEXOPS_LOAD_PLUGINS": "chexops-keepfirst"})
    lock = json.loads((root / "plugins.lock.json").read_text())["plugins"]
    assert [p["distribution"] for p in lock] == ["chexops-keepfirst"]

    # DVC's folder is named by family, initializer and depth; everything a person reads names the strategy
    payload = json.loads((root / "runs/eval/resnet18__random__drop-1__labels-1.0/eval.json").read_text())
    assert (payload["run"], payload["truncation"], payload["truncation_strategy"]) == (RUN, "keep-first-1",
                                                                                      "keep-first")
    full = json.loads((root / "runs/eval/resnet18__random__full__labels-1.0/eval.json").read_text())
    assert payload["parameters"] < full["parameters"]
    assert RUN in (root / "reports/study.md").read_text()

    from mlflow import MlflowClient

    client = MlflowClient(study.tracking_uri)
    experiment = client.get_experiment_by_name(STUDY)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {RUN, FULL} <= set(runs)
    tags = runs[RUN].data.tags
    assert (tags["chexops.truncation"], tags["chexops.truncation_strategy"]) == ("keep-first-1", "keep-first")
    assert runs[RUN].data.params["truncation"] == "keep-first-1"  # the configuration names its strategy
    version = client.get_model_version_by_alias(f"{STUDY}.resnet18.random.keep-first-1", "candidate")
    assert version.run_id == runs[RUN].info.run_id
    assert json.loads(study.dvc("status", "--json").output) == {"plugins": ["always changed"]}
