"""The CheXtransfer analyses over finished runs: main table, Spearman correlations, pretraining boost,
within-group size differences and truncation efficiency.

Pure numpy/pandas/scipy over the runs `chexops.analysis.results.load_runs` reads (eval.json and
predictions.csv). Missing inputs never crash an analysis and never leave a silent gap: every result table has
a `status` column that is either "measured" or "not measured: <why>", so the report can list each gap.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chexops.analysis.results import MEANS, MEASURED, Study, not_measured
from chexops.analysis.trust import spearman_test
from chexops.data.labels import STUDY_TASKS, task_index
from chexops.evaluate.bootstrap import auroc_replicates, bootstrap_p_value, paired_bootstrap


def format_ci(point: float, low: float, high: float, spec: str = ".3f") -> str:
    """'0.812 [0.790, 0.833]' (spec '+.3f' for differences); a missing point or interval says so, never 'nan'."""
    if not np.isfinite(point):
        return not_measured("undefined AUROC")
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{point:{spec}} [CI not measured]"
    return f"{point:{spec}} [{low:{spec}}, {high:{spec}}]"


def main_table(study: Study) -> pd.DataFrame:
    """One row per run: configuration, size, ImageNet top-1 and test mean AUROC over 6 and 5 tasks with CIs."""
    r = study.runs.sort_values(["depth", "label_fraction", "group", "parameters", "family", "initializer"],
                               ascending=[True, False, True, True, True, True])
    out = r[["run", "family", "group", "initializer", "truncation", "depth", "label_fraction", "parameters",
             "imagenet_top1", "reference_top1", "reference_top1_source"]].copy()
    for short in MEANS:
        for suffix in ("", "_ci_low", "_ci_high"):
            out[short + suffix] = r[short + suffix]
        out[short + "_ci"] = [format_ci(*v) for v in r[[short, short + "_ci_low", short + "_ci_high"]].to_numpy()]
    out["best_single_auroc_6"] = r["best_single_auroc_6"]
    return out.reset_index(drop=True)


def initializers(study: Study) -> list[str]:
    """random and imagenet always (so their absence is reported), then any other initializer present."""
    return list(dict.fromkeys(["random", "imagenet", *study.runs["initializer"]]))


def initializer_label(study: Study, init: str) -> str:
    """What an initializer is, as its spec says (recorded in eval.json): e.g. 'in-domain self-supervised ...'."""
    labels = study.runs.loc[study.runs["initializer"] == init, "initializer_label"]
    if not labels.empty and labels.iloc[0] != init:
        return str(labels.iloc[0])
    return {"imagenet": "ImageNet (supervised), as CheXtransfer", "random": "random initialisation"}.get(init, init)


@dataclass(frozen=True)
class Comparison:
    """A pretrained initializer against a baseline: boost = AUROC(pretrained) - AUROC(baseline)."""

    pretrained: str
    baseline: str = "random"

    @property
    def name(self) -> str:
        return f"{self.pretrained} - {self.baseline}"


def comparisons(study: Study) -> list[Comparison]:
    """imagenet vs random always (the paper's question; reported as not measured without ImageNet weights), every
    other pretrained initializer present vs random, and vs imagenet when imagenet runs are present too."""
    full = study.full
    present = list(dict.fromkeys(full["initializer"]))
    pretrained = [i for i in present if i not in ("random", "imagenet")
                  and bool(full.loc[full["initializer"] == i, "initializer_pretrained"].iloc[0])]
    out = [Comparison("imagenet")] + [Comparison(i) for i in pretrained]
    if "imagenet" in present:
        out += [Comparison(i, "imagenet") for i in pretrained]
    return out


def _rho(x: pd.Series, y: pd.Series, labels: pd.Series) -> dict[str, Any]:
    ok = np.isfinite(x.to_numpy(dtype=float)) & np.isfinite(y.to_numpy(dtype=float))
    xs, ys, n = x[ok].to_numpy(dtype=float), y[ok].to_numpy(dtype=float), int(ok.sum())
    rec: dict[str, Any] = {"n": n, "rho": np.nan, "p": np.nan, "families": ", ".join(map(str, labels[ok]))}
    if n < 3:
        rec["status"] = not_measured(f"{n} point(s); a Spearman correlation needs at least 3")
    elif np.ptp(xs) == 0 or np.ptp(ys) == 0:
        rec["status"] = not_measured(f"{'x' if np.ptp(xs) == 0 else 'AUROC'} is constant over the {n} points")
    else:
        rho, p, method = spearman_test(xs, ys)
        rec.update(rho=rho, p=p, p_method=method, status=MEASURED)
    skipped = labels[~ok].tolist()
    rec["note"] = f"left out (no value): {', '.join(map(str, skipped))}" if skipped else ""
    return rec


def boost_points(study: Study, comparison: Comparison | None = None) -> pd.DataFrame:
    """Per family with both full runs of the comparison (default imagenet - random): both AUROCs (eval.json)
    and boost = AUROC(pretrained) - AUROC(baseline)."""
    c = comparison or Comparison("imagenet")
    full = study.full
    pre = full[full["initializer"] == c.pretrained].set_index("family")
    base = full[full["initializer"] == c.baseline].set_index("family")
    both = pre.index.intersection(base.index)
    out = pd.DataFrame(
        {
            "family": both,
            "group": pre.loc[both, "group"].to_numpy(),
            "parameters": pre.loc[both, "parameters"].to_numpy(),
            "run_pretrained": pre.loc[both, "run"].to_numpy(),
            "run_baseline": base.loc[both, "run"].to_numpy(),
            "auroc_pretrained": pre.loc[both, "auroc_6"].to_numpy(dtype=float),
            "auroc_baseline": base.loc[both, "auroc_6"].to_numpy(dtype=float),
        }
    )
    out["boost"] = out["auroc_pretrained"] - out["auroc_baseline"]
    return out.sort_values(["parameters", "family"]).reset_index(drop=True)


def spearman(study: Study) -> pd.DataFrame:
    """Spearman rho and p (scipy.stats.spearmanr) over full models: ImageNet top-1 vs AUROC and parameters vs
    AUROC per initializer, and pretraining boost vs parameters. Fewer than 3 points -> not measured."""
    rows = []
    full = study.full
    for init in initializers(study):
        sub = full[full["initializer"] == init]
        for analysis, x in (("top1_vs_auroc", "imagenet_top1"), ("params_vs_auroc", "parameters")):
            rec = {"analysis": analysis, "initializer": init, "x": x, "y": "test mean AUROC (6 tasks)"}
            rec.update(_rho(sub[x], sub["auroc_6"], sub["family"]))
            if sub.empty:
                rec["status"] = not_measured(f"no full {init} runs")
            rows.append(rec)
    for c in comparisons(study):
        pts = boost_points(study, c)
        rec = {"analysis": "boost_vs_params", "initializer": c.name, "x": "parameters", "y": "boost"}
        rec.update(_rho(pts["parameters"], pts["boost"], pts["family"]))
        if pts.empty:
            rec["status"] = not_measured(f"no family has both a full {c.pretrained} and a full {c.baseline} run")
        rows.append(rec)
    cols = ["analysis", "initializer", "x", "y", "n", "rho", "p", "p_method", "status", "families", "note"]
    return pd.DataFrame(rows).reindex(columns=cols)


def _paired(study: Study, run_a: str, run_b: str, n_resamples: int, seed: int) -> dict[str, float]:
    """AUROC(a) - AUROC(b), 6-task mean, with the paired-bootstrap CI and p on the shared test studies."""
    d = paired_bootstrap(study.truth, study.probs[run_a], study.probs[run_b], n_resamples, seed,
                         groups=study.patients).mean
    return {"delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p_value,
            "se": _mean_delta(study, [(run_a, run_b)], n_resamples, seed)["se"]}


@dataclass(frozen=True)
class BoostResult:
    """Per-family pretraining boost of one comparison, its mean over families, and largest-minus-smallest
    model per group (over every initializer)."""

    per_family: pd.DataFrame
    mean: dict[str, Any]
    size_differences: pd.DataFrame
    comparison: Comparison = field(default_factory=lambda: Comparison("imagenet"))


def _mean_delta(study: Study, pairs: list[tuple[str, str]], n_resamples: int, seed: int) -> dict[str, Any]:
    """Mean over pairs of AUROC(a) - AUROC(b), bootstrapped on the resamples paired_bootstrap uses (same seed),
    so the interval keeps the correlation between families measured on the same studies."""
    y = study.truth[:, task_index(STUDY_TASKS)]
    idx = study.resampling(n_resamples, seed)
    full = np.arange(y.shape[0])[None, :]
    points, reps = [], []
    for a, b in pairs:
        pa, pb = study.probs[a][:, task_index(STUDY_TASKS)], study.probs[b][:, task_index(STUDY_TASKS)]
        point = auroc_replicates(y, pa, full)[0] - auroc_replicates(y, pb, full)[0]
        keep = ~np.isnan(point)
        points.append(point[keep].mean())
        reps.append((auroc_replicates(y, pa, idx) - auroc_replicates(y, pb, idx))[:, keep].mean(axis=1))
    mean_reps = np.mean(reps, axis=0)
    ok = mean_reps[~np.isnan(mean_reps)]
    low, high = np.percentile(ok, [2.5, 97.5]) if ok.size else (np.nan, np.nan)
    # se: the replicates' standard deviation, what the minimum detectable effect at this test size is made of
    return {"boost": float(np.mean(points)), "ci_low": float(low), "ci_high": float(high),
            "p": bootstrap_p_value(mean_reps), "se": float(np.std(ok, ddof=1)) if ok.size > 1 else float("nan"),
            "n_families": len(pairs), "status": MEASURED}


def pretraining_boost(study: Study, n_resamples: int = 1000, seed: int = 0,
                      comparison: Comparison | None = None) -> BoostResult:
    """boost = AUROC(pretrained) - AUROC(baseline) per family (full models; default imagenet - random), with
    paired-bootstrap CI and p; the mean boost over families; and within each group the largest minus the
    smallest model per initializer."""
    c = comparison or Comparison("imagenet")
    full = study.full
    rows = []
    for family, sub in full.sort_values("parameters").groupby("family", sort=False):
        run = {init: sub.loc[sub["initializer"] == init, "run"] for init in (c.pretrained, c.baseline)}
        rec: dict[str, Any] = {"comparison": c.name, "family": family, "group": sub["group"].iloc[0],
                               "parameters": sub["parameters"].max()}
        absent = [init for init, r in run.items() if r.empty]
        if absent:
            rows.append({**rec, "status": not_measured(f"no full {family}/{absent[0]} run")})
            continue
        a, b = run[c.pretrained].iloc[0], run[c.baseline].iloc[0]
        d = _paired(study, a, b, n_resamples, seed)
        rows.append({**rec, "run_pretrained": a, "run_baseline": b, "auroc_pretrained": full.loc[a, "auroc_6"],
                     "auroc_baseline": full.loc[b, "auroc_6"], "boost": d["delta"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"], "p": d["p"], "se": d["se"], "status": MEASURED})
    if not rows:
        rows.append({"comparison": c.name, "family": "", "status": not_measured("no full runs")})
    cols = ["comparison", "family", "group", "parameters", "run_pretrained", "run_baseline", "auroc_pretrained",
            "auroc_baseline", "boost", "ci_low", "ci_high", "p", "se", "status"]
    per_family = pd.DataFrame(rows).reindex(columns=cols)
    pairs = [(r.run_pretrained, r.run_baseline) for r in per_family.itertuples() if r.status == MEASURED]
    mean = (_mean_delta(study, pairs, n_resamples, seed) if pairs else
            {"n_families": 0,
             "status": not_measured(f"no family has both a full {c.pretrained} and a full {c.baseline} run")})
    return BoostResult(per_family, mean, size_differences(study, n_resamples, seed), c)


def pretraining_boosts(study: Study, n_resamples: int = 1000, seed: int = 0) -> list[BoostResult]:
    """pretraining_boost for every comparison of the study (see `comparisons`)."""
    return [pretraining_boost(study, n_resamples, seed, c) for c in comparisons(study)]


def fraction_boosts(study: Study, n_resamples: int = 1000, seed: int = 0) -> dict[float, list[BoostResult]]:
    """Per label fraction below 1: every comparison's boost among the full-depth runs trained at that fraction
    (MoCo-CXR's question: does pretraining matter most with few labels?)."""
    out = {}
    runs = study.runs[study.runs["depth"] == 0]
    for fraction in sorted(f for f in runs["label_fraction"].unique() if f < 1.0):
        at = dataclasses.replace(study, runs=runs[runs["label_fraction"] == fraction].assign(label_fraction=1.0))
        out[float(fraction)] = [pretraining_boost(at, n_resamples, seed, c) for c in comparisons(at)
                                if c.pretrained != "imagenet" or "imagenet" in set(at.runs["initializer"])]
    return out


def architecture_line(family: str) -> str:
    """The line a family is one size of: its name without the size suffix (resnet18 and resnet101 -> resnet,
    efficientnet_b0 -> efficientnet; densenet121 -> densenet). A version is not a size: mobilenetv2 and
    mobilenetv3, inception_v3 and inception_v4 are different architectures, each its own line."""
    name = family.lower()
    stripped = re.sub(r"(_?b\d+|(?<![v\d])\d+)$", "", name)
    return stripped.rstrip("_-") or name


def size_differences(study: Study, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (group, architecture line, initializer): AUROC of the family with most parameters minus the one with
    fewest. Only sizes of one line are compared (the paper's ResNet101 - ResNet18), never two architectures of one
    group (MobileNetV3 vs MobileNetV2)."""
    rows = []
    full = study.full.assign(line=[architecture_line(f) for f in study.full["family"]])
    for (group, line, init), sub in full.groupby(["group", "line", "initializer"], sort=True):
        rec: dict[str, Any] = {"group": group, "line": line, "initializer": init}
        big, small = sub.loc[sub["parameters"].idxmax()], sub.loc[sub["parameters"].idxmin()]
        if len(sub) < 2:  # nothing to compare within the line: not a gap, and not listed as one
            continue
        if big["parameters"] == small["parameters"]:
            rec["status"] = not_measured(f"all full {line}/{init} families have the same parameter count")
        else:
            d = _paired(study, big["run"], small["run"], n_resamples, seed)
            rec.update(larger=big["family"], smaller=small["family"], larger_parameters=big["parameters"],
                       smaller_parameters=small["parameters"], larger_run=big["run"], smaller_run=small["run"],
                       difference=d["delta"], ci_low=d["ci_low"], ci_high=d["ci_high"], p=d["p"],
                       se=d["se"], status=MEASURED)
        rows.append(rec)
    if not rows:
        rows.append({"group": "", "status": not_measured("no architecture line has two sizes of one initializer "
                                                         "among the full runs")})
    cols = ["group", "line", "initializer", "larger", "smaller", "larger_parameters", "smaller_parameters",
            "larger_run", "smaller_run", "difference", "ci_low", "ci_high", "p", "se", "status"]
    return pd.DataFrame(rows).reindex(columns=cols)


# The study's truncation summary, as the paper states it ("3.25x more parameter-efficient on average with no
# statistically significant AUC drop"): over the truncated runs whose paired 95% CI of the AUROC change does not lie
# below zero, the mean (and median) of full-model parameters / truncated parameters. Runs that lost AUROC
# significantly are left out: a 1540x smaller network that has stopped working is no efficiency gain.
TRUNCATION_SUMMARY_DEFINITION = (
    "parameter ratio = full model's parameters / truncated model's parameters; a drop is significant when the "
    "paired-bootstrap 95% CI of the AUROC change lies below 0; the summary is the mean (and median) ratio over the "
    "distinct truncations (family and blocks dropped; one truncation run under two initializers counts once) with "
    "a run without a significant drop, as the paper's 3.25x")


@dataclass(frozen=True)
class TruncationResult:
    """One row per truncated run against its full model, the deepest truncation without a significant drop per
    family and initializer, and the summary over the runs without one (see TRUNCATION_SUMMARY_DEFINITION)."""

    table: pd.DataFrame
    summary: dict[str, Any]
    deepest: pd.DataFrame = field(default_factory=pd.DataFrame)


def _truncation_row(study: Study, r: pd.Series, n_resamples: int, seed: int) -> dict[str, Any]:
    rec = {"run": r["run"], "family": r["family"], "initializer": r["initializer"], "blocks_dropped": r["depth"],
           "parameters": r["parameters"], "auroc": r["auroc_6"]}
    full = study.full
    match = full[(full["family"] == r["family"]) & (full["initializer"] == r["initializer"])]
    if match.empty:
        return {**rec, "status": not_measured(f"no full {r['family']}/{r['initializer']} run")}
    f = match.iloc[0]
    d = _paired(study, r["run"], f["run"], n_resamples, seed)
    return {**rec, "full_run": f["run"], "full_parameters": f["parameters"], "full_auroc": f["auroc_6"],
            "parameter_ratio": f["parameters"] / r["parameters"], "delta": d["delta"], "ci_low": d["ci_low"],
            "ci_high": d["ci_high"], "p": d["p"], "se": d["se"], "significant_drop": bool(d["ci_high"] < 0),
            "status": MEASURED}


def _deepest(done: pd.DataFrame) -> pd.DataFrame:
    """Per family and initializer: the most blocks dropped without a significant drop (0: every truncation lost)."""
    rows = []
    for (family, init), sub in done.groupby(["family", "initializer"], sort=True):
        ok = sub[~sub["significant_drop"].astype(bool)].sort_values("blocks_dropped")
        best = ok.iloc[-1] if not ok.empty else None
        rows.append({"family": family, "initializer": init, "truncations": len(sub),
                     "deepest_without_significant_drop": int(best["blocks_dropped"]) if best is not None else 0,
                     "run": best["run"] if best is not None else "",
                     "parameter_ratio": float(best["parameter_ratio"]) if best is not None else 1.0})
    return pd.DataFrame(rows, columns=["family", "initializer", "truncations", "deepest_without_significant_drop",
                                       "run", "parameter_ratio"])


def truncation_table(study: Study, n_resamples: int = 1000, seed: int = 0) -> TruncationResult:
    """Each truncated run vs the full model of its family+initializer: parameter ratio, AUROC change with its paired
    CI and p; the deepest truncation without a significant drop per family; and the summary over the runs without
    a significant drop (TRUNCATION_SUMMARY_DEFINITION)."""
    trunc = study.runs[study.runs["depth"] > 0].sort_values(["family", "initializer", "depth"])
    rows = [_truncation_row(study, r, n_resamples, seed) for _, r in trunc.iterrows()]
    if not rows:
        rows.append({"run": "", "status": not_measured("no truncated runs")})
    cols = ["run", "family", "initializer", "blocks_dropped", "parameters", "auroc", "full_run", "full_parameters",
            "full_auroc", "parameter_ratio", "delta", "ci_low", "ci_high", "p", "se", "significant_drop", "status"]
    table = pd.DataFrame(rows).reindex(columns=cols)
    done = table[table["status"] == MEASURED]
    if done.empty:
        why = "no truncated runs" if trunc.empty else "no truncated run has its full model"
        return TruncationResult(table, {"n_measured": 0, "status": not_measured(why)})
    kept = done[~done["significant_drop"].astype(bool)]
    summary: dict[str, Any] = {"n_measured": len(done), "n_significant_drops": int(done["significant_drop"].sum()),
                               "n_without_significant_drop": len(kept), "definition": TRUNCATION_SUMMARY_DEFINITION}
    if kept.empty:
        summary["status"] = not_measured(f"all {len(done)} truncated runs lost AUROC significantly")
    else:
        distinct = kept.drop_duplicates(["family", "blocks_dropped"])["parameter_ratio"]
        summary.update(mean_parameter_ratio=float(distinct.mean()), median_parameter_ratio=float(distinct.median()),
                       n_distinct_truncations=len(distinct), status=MEASURED)
    return TruncationResult(table, summary, _deepest(done))


def _mean_auroc(study: Study, runs: list[str], n_resamples: int, seed: int) -> dict[str, float]:
    """Mean over `runs` of their 6-task AUROC, with a percentile CI from resampling the test studies (the same
    resamples for every run, so the interval keeps their correlation)."""
    y = study.truth[:, task_index(STUDY_TASKS)]
    idx = study.resampling(n_resamples, seed)
    full = np.arange(y.shape[0])[None, :]
    point = np.mean([np.nanmean(auroc_replicates(y, study.probs[r][:, task_index(STUDY_TASKS)], full)[0])
                     for r in runs])
    reps = np.mean([np.nanmean(auroc_replicates(y, study.probs[r][:, task_index(STUDY_TASKS)], idx), axis=1)
                    for r in runs], axis=0)
    ok = reps[np.isfinite(reps)]
    low, high = np.percentile(ok, [2.5, 97.5]) if ok.size else (np.nan, np.nan)
    return {"auroc": float(point), "ci_low": float(low), "ci_high": float(high)}


def label_fraction_table(study: Study, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """AUROC vs label fraction: per (initializer, fraction) the mean 6-task AUROC over the families trained at
    every fraction (so each point averages the same families), with a bootstrap CI; one row per
    (family, initializer, fraction) too (`family` = 'mean' marks the averages)."""
    runs = study.runs[study.runs["depth"] == 0]
    fractions = sorted(runs["label_fraction"].unique())
    rows = []
    for init, sub in runs.groupby("initializer", sort=True):
        counts = sub.groupby("family")["label_fraction"].nunique()
        families = sorted(counts[counts == len(fractions)].index)
        for fraction in fractions:
            at = sub[sub["label_fraction"] == fraction].set_index("family")
            for family, r in at.iterrows():
                rows.append({"initializer": init, "label_fraction": fraction, "family": family, "run": r["run"],
                             "auroc": r["auroc_6"], "ci_low": r["auroc_6_ci_low"], "ci_high": r["auroc_6_ci_high"],
                             "status": MEASURED})
            if families:
                m = _mean_auroc(study, at.loc[families, "run"].tolist(), n_resamples, seed)
                rows.append({"initializer": init, "label_fraction": fraction, "family": "mean",
                             "run": f"{len(families)} families", **m, "status": MEASURED})
    cols = ["initializer", "label_fraction", "family", "run", "auroc", "ci_low", "ci_high", "status"]
    return pd.DataFrame(rows).reindex(columns=cols)
