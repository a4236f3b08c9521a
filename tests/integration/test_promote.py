"""Promotion with evidence against a real SQLite registry: first promotion, refusal, --force, --rollback, listing.

Versions are registered the way the register stage links them (a version per run, the run holding the evaluate
stage's predictions.csv at the root of its artifacts); the model files themselves play no part in promotion,
so the versions here point at their runs without logging a network (test_predict.py registers real ensembles).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fixtures.registry import N_STUDIES, NAME, STUDIES, TRUTH, add_version, chexops, good_probs, random_probs

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS
from chexops.evaluate.bootstrap import paired_bootstrap
from chexops.evaluate.delong import delong_test
from chexops.evaluate.metrics import auroc_metrics
from chexops.tracking.runs import Tracker


def tags(tracker: Tracker, version: int) -> dict[str, str]:
    return tracker.client.get_model_version(NAME, str(version)).tags


def holder(tracker: Tracker, alias: str = "champion") -> int | None:
    found = tracker.client.get_registered_model(NAME).aliases.get(alias)
    return None if found is None else int(found)


def history(tracker: Tracker, alias: str = "champion") -> list[int]:
    return json.loads(tracker.client.get_registered_model(NAME).tags[f"chexops.alias_history.{alias}"])


def test_a_first_promotion_needs_no_evidence_and_is_recorded(tracker: Tracker, capsys) -> None:
    v1 = add_version(tracker, random_probs())
    code, out, _ = chexops(capsys, "promote", NAME, str(v1))
    assert code == 0 and "promoted (no version held it)" in out
    assert holder(tracker) == v1 and history(tracker) == [v1]
    t = tags(tracker, v1)
    assert {k: t[f"chexops.promotion.1.{k}"] for k in ("decision", "alias", "by", "against")} == {
        "decision": "promoted", "alias": "champion", "by": getpass.getuser(), "against": ""}
    at = datetime.fromisoformat(t["chexops.promotion.1.at"])
    assert at.tzinfo is not None and abs(datetime.now(UTC) - at) < timedelta(minutes=1)
    assert "chexops.promotion.1.delta" not in t  # nothing was compared
    assert holder(tracker, "candidate") == v1  # the register stage's alias is left alone


def test_a_worse_candidate_is_refused_with_exit_1_recorded_then_forced_and_rolled_back(tracker: Tracker,
                                                                                        capsys) -> None:
    good, bad = add_version(tracker, good_probs()), add_version(tracker, random_probs())
    assert chexops(capsys, "promote", NAME, str(good))[0] == 0
    code, out, err = chexops(capsys, "promote", NAME, str(bad))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: refused to give alias 'champion'")
    assert "pass --force" in err and "95% CI" in err
    assert f"refused (stays with version {good})" in out
    assert all(task in out for task in STUDY_TASKS)  # the per-task evidence is shown
    assert holder(tracker) == good and history(tracker) == [good]
    t = tags(tracker, bad)
    assert t["chexops.promotion.1.decision"] == "refused" and t["chexops.promotion.1.against"] == str(good)
    delta, low, high = (float(t[f"chexops.promotion.1.{k}"]) for k in ("delta", "ci_low", "ci_high"))
    assert low <= delta <= high < 0 and float(t["chexops.promotion.1.p"]) < 0.05
    delong = json.loads(t["chexops.promotion.1.delong_p"])
    assert list(delong) == list(STUDY_TASKS) and all(p < 0.05 for p in delong.values())

    code, out, err = chexops(capsys, "promote", NAME, str(bad), "--force")
    assert code == 0 and "FORCED" in out
    assert holder(tracker) == bad and history(tracker) == [good, bad]
    assert tags(tracker, bad)["chexops.promotion.2.decision"] == "forced"

    code, out, _ = chexops(capsys, "promote", "--rollback", NAME)
    assert code == 0 and "rolled back" in out
    assert holder(tracker) == good and history(tracker) == [good]
    t = tags(tracker, good)
    assert (t["chexops.promotion.2.decision"], t["chexops.promotion.2.against"]) == ("rollback", str(bad))

    code, _, err = chexops(capsys, "promote", "--rollback", NAME)
    assert code == 2 and err.count("\n") == 1 and "no earlier version to roll back to" in err
    assert holder(tracker) == good


def test_a_significantly_better_candidate_is_promoted_on_the_bootstrap_numbers(tracker: Tracker, capsys) -> None:
    old = add_version(tracker, random_probs())
    shuffled = np.random.default_rng(5).permutation(N_STUDIES)
    new = add_version(tracker, good_probs(), order=shuffled)
    chexops(capsys, "promote", NAME, str(old))
    code, out, _ = chexops(capsys, "promote", NAME, str(new))
    assert code == 0 and f"promoted (previously version {old})" in out
    assert holder(tracker) == new and history(tracker) == [old, new]
    cols = [OBSERVATIONS.index(t) for t in STUDY_TASKS]
    want = paired_bootstrap(TRUTH[:, cols], good_probs()[:, cols], random_probs()[:, cols], n_resamples=1000, seed=0)
    t = tags(tracker, new)
    assert float(t["chexops.promotion.1.delta"]) == pytest.approx(want.mean.delta, abs=1e-5)
    assert want.mean.ci_low > 0
    assert float(t["chexops.promotion.1.ci_low"]) == pytest.approx(want.mean.ci_low, abs=1e-5)
    assert float(t["chexops.promotion.1.p"]) == pytest.approx(want.mean.p_value, rel=1e-4)
    j = OBSERVATIONS.index("Edema")
    edema = delong_test(TRUTH[:, j], good_probs()[:, j], random_probs()[:, j]).p_value
    assert json.loads(t["chexops.promotion.1.delong_p"])["Edema"] == pytest.approx(edema, rel=1e-4)


def test_a_better_but_not_significantly_better_candidate_is_refused(tracker: Tracker, capsys) -> None:
    base = random_probs()
    nudged = base.copy()
    nudged[:3] = 0.6 * TRUTH[:3] + 0.4 * base[:3]  # a real gain on 3 of 150 studies: too little to be sure of
    old, new = add_version(tracker, base), add_version(tracker, nudged)
    chexops(capsys, "promote", NAME, str(old))
    code, _, err = chexops(capsys, "promote", NAME, str(new))
    assert code == 1 and "not significantly better" in err
    t = tags(tracker, new)
    assert float(t["chexops.promotion.1.delta"]) > 0 >= float(t["chexops.promotion.1.ci_low"])
    assert holder(tracker) == old


def test_versions_scored_on_different_test_studies_are_not_compared(tracker: Tracker, capsys) -> None:
    old = add_version(tracker, random_probs())
    other = [s.replace("study1", "study2") for s in STUDIES[:20]] + STUDIES[20:]
    new = add_version(tracker, good_probs(), studies=other)
    relabelled = add_version(tracker, good_probs(), truth=1 - TRUTH)
    chexops(capsys, "promote", NAME, str(old))
    code, _, err = chexops(capsys, "promote", NAME, str(new), "--force")
    assert code == 2 and err.count("\n") == 1 and "not the same ones (20 only in version 2" in err
    code, _, err = chexops(capsys, "promote", NAME, str(relabelled))
    assert code == 2 and "same studies with different labels" in err
    assert holder(tracker) == old
    assert not any(k.startswith("chexops.promotion.") for k in tags(tracker, new) | tags(tracker, relabelled))


def test_missing_evidence_and_unknown_names_are_one_line_errors(tracker: Tracker, capsys) -> None:
    old = add_version(tracker, random_probs())
    blind = add_version(tracker, good_probs(), predictions=False)
    chexops(capsys, "promote", NAME, str(old))
    code, _, err = chexops(capsys, "promote", NAME, str(blind))
    assert code == 2 and err.count("\n") == 1 and "has no predictions.csv artifact" in err
    code, _, err = chexops(capsys, "promote", NAME + "x", "1")
    assert code == 2 and f"no registered model '{NAME}x'" in err and f"Did you mean: {NAME}" in err
    code, _, err = chexops(capsys, "promote", NAME, "9")
    assert code == 2 and "has no version 9; its versions are [1, 2]" in err
    code, _, err = chexops(capsys, "promote", NAME, str(old))
    assert code == 2 and "already holds alias 'champion'" in err
    code, _, err = chexops(capsys, "promote", NAME)
    assert code == 2 and "give the VERSION" in err


def test_registry_list_shows_versions_aliases_auroc_runs_and_history(tracker: Tracker, capsys) -> None:
    good, bad = add_version(tracker, good_probs()), add_version(tracker, random_probs())
    chexops(capsys, "promote", NAME, str(good))
    chexops(capsys, "promote", NAME, str(bad))
    chexops(capsys, "promote", NAME, str(bad), "--force")
    code, out, _ = chexops(capsys, "registry", "list", "--json")
    assert code == 0
    [model] = json.loads(out)
    assert model["name"] == NAME and model["aliases"] == {"candidate": bad, "champion": bad}
    assert model["alias_history"] == {"champion": [good, bad]}
    v1, v2 = model["versions"]
    assert v1["version"] == good and v1["aliases"] == [] and v2["aliases"] == ["candidate", "champion"]
    assert v1["test_mean_auroc_6"] == pytest.approx(auroc_metrics(TRUTH, good_probs()).mean_auroc_6)
    assert v1["ci_low"] == pytest.approx(v1["test_mean_auroc_6"] - 0.02)
    assert v1["run_name"] == "resnet18/random/drop-3" and len(v1["run_id"]) == 32
    assert [r["decision"] for r in v1["promotions"]] == ["promoted"]
    assert [(r["n"], r["decision"], r["against"]) for r in v2["promotions"]] == [
        (1, "refused", str(good)), (2, "forced", str(good))]
    assert v2["promotions"][0]["delta"] < 0 and set(v2["promotions"][0]["delong_p"]) == set(STUDY_TASKS)

    code, out, _ = chexops(capsys, "registry", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["model", "version", "aliases", "test", "mean", "AUROC", "(95%", "CI)",
                                              "run", "run", "id", "promotions"]
    starts = {line.index(NAME) for line in lines[2:4]} | {lines[0].index("model")}
    assert starts == {0} and lines[2].index(v1["run_id"]) == lines[3].index(v2["run_id"])  # aligned columns
    assert f"{v1['test_mean_auroc_6']:.3f} [" in lines[2] and f"#2 forced champion vs v{good}" in lines[3]
    assert lines[-1] == f"{NAME} champion: v{good} -> v{bad}"


def test_registry_list_reads_params_yaml_and_refuses_a_missing_store(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("tracking:\n  uri: sqlite:///nowhere/mlflow.db\n")
    code, _, err = chexops(capsys, "registry", "list")
    assert code == 2 and err.count("\n") == 1 and f"no tracking store at {tmp_path}/nowhere/mlflow.db" in err
    assert not (tmp_path / "nowhere").exists()
    code, _, err = chexops(capsys, "registry", "list", "--params", "other.yaml")
    assert code == 2 and "other.yaml not found and MLFLOW_TRACKING_URI is not set" in err

