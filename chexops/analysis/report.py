"""The analyze stage's outputs: CSV tables, figures, metrics.json for `dvc metrics`, plots/ CSVs for
`dvc plots`, and study.md (worded by analysis/study_md.py), which puts the measured numbers beside the paper's.

Everything the analyses could not measure is listed in study.md's "Not measured" section with its reason.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexops.analysis import study_md, trust
from chexops.analysis.figures import write_figures
from chexops.analysis.probes import References
from chexops.analysis.results import MEASURED, Study
from chexops.analysis.tables import (
    BoostResult,
    TruncationResult,
    fraction_boosts,
    label_fraction_table,
    main_table,
    pretraining_boosts,
    spearman,
    truncation_table,
)
from chexops.naming import COMPETITION_MEAN, HEADLINE_MEAN, REPORT_FILE


def _finite(obj: Any) -> Any:
    """Only finite numbers survive (dvc metrics cannot show NaN); empty dicts left behind are dropped."""
    if isinstance(obj, dict):
        kept = {str(k): _finite(v) for k, v in obj.items()}
        return {k: v for k, v in kept.items() if v is not None and v != {}}
    if isinstance(obj, bool | np.bool_):
        return int(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating) and math.isfinite(float(obj)):
        return float(obj)
    return None


def _boost_metrics(boost: BoostResult) -> dict[str, Any]:
    fam = boost.per_family[boost.per_family["status"] == MEASURED]
    m = boost.mean
    return {"mean": m.get("boost"), "mean_ci_low": m.get("ci_low"), "mean_ci_high": m.get("ci_high"),
            "mean_p": m.get("p"), "per_family": dict(zip(fam["family"], fam["boost"], strict=True))}


def metrics_dict(study: Study, sp: pd.DataFrame, boosts: list[BoostResult], trunc: TruncationResult) -> dict[str, Any]:
    """Headline numbers for `dvc metrics show`, nested by analysis and keyed by run/family for readability."""
    runs = {r: {HEADLINE_MEAN: row["auroc_6"], COMPETITION_MEAN: row["auroc_5"]} for r, row in study.runs.iterrows()}
    rho = {f"{r.analysis}/{r.initializer.replace(' ', '')}": {"rho": r.rho, "p": r.p, "n": r.n}
           for r in sp.itertuples() if r.status == MEASURED}
    boost = boosts[0]
    sizes = boost.size_differences[boost.size_differences["status"] == MEASURED]
    tt = trunc.table[trunc.table["status"] == MEASURED]
    return _finite({
        "n_runs": len(study.runs),
        "runs": runs,
        "spearman": rho,
        # the paper's imagenet - random first, under its old key; every comparison under its own name too
        "boost": _boost_metrics(boost),
        "boosts": {b.comparison.name.replace(" ", ""): _boost_metrics(b) for b in boosts},
        "size_differences": {f"{r.group}/{r.initializer}": r.difference for r in sizes.itertuples()},
        "truncation": {
            "mean_parameter_ratio_without_significant_drop": trunc.summary.get("mean_parameter_ratio"),
            "median_parameter_ratio_without_significant_drop": trunc.summary.get("median_parameter_ratio"),
            "n_significant_drops": trunc.summary.get("n_significant_drops"),
            "n_without_significant_drop": trunc.summary.get("n_without_significant_drop"),
            "per_run": {r.run: {"delta": r.delta, "parameter_ratio": r.parameter_ratio,
                                "significant_drop": r.significant_drop} for r in tt.itertuples()},
        },
    })


def _plot_tables(study: Study, boosts: list[BoostResult]) -> dict[str, pd.DataFrame]:
    """Long-format CSVs for `dvc plots` (one x and one y column each, plus identifying columns)."""
    full, runs = study.full, study.runs
    pairs = runs["family"] + "/" + runs["initializer"]  # truncation curves run from each truncated pair's full model
    fam = pd.concat([b.per_family[b.per_family["status"] == MEASURED] for b in boosts])
    tables = {
        # with its CI: `dvc plots` draws each run as a labelled point with a CI bar (pipelines/plots/points_ci.json)
        "auroc_vs_params": full[["run", "family", "initializer", "parameters", "auroc_6", "auroc_6_ci_low",
                                 "auroc_6_ci_high"]].rename(columns={"auroc_6_ci_low": "ci_low",
                                                                     "auroc_6_ci_high": "ci_high"}),
        "auroc_vs_top1": full[["run", "family", "initializer", "imagenet_top1", "auroc_6"]],
        "boost_vs_params": fam[["comparison", "family", "parameters", "boost", "ci_low", "ci_high"]],
        "truncation": runs[pairs.isin(pairs[runs["depth"] > 0])][
            ["run", "family", "initializer", "depth", "parameters", "auroc_6"]
        ].rename(columns={"depth": "blocks_dropped"}),
    }
    return {k: t.rename(columns={"auroc_6": "auroc"}).dropna() for k, t in tables.items()}


def _mdes(boosts: list[BoostResult], trunc: TruncationResult) -> dict[str, float]:
    """Minimum detectable effects: the median over one-pair comparisons, and each mean boost's."""
    pairs = pd.concat([b.per_family["se"] for b in boosts] + [boosts[0].size_differences["se"], trunc.table["se"]])
    pairs = pairs.dropna()
    out = {"one pair of runs (median)": trust.minimum_detectable_effect(float(pairs.median())) if len(pairs) else
           float("nan")}
    for b in boosts:
        if b.mean["status"] == MEASURED:
            out[f"mean boost {b.comparison.name}"] = trust.minimum_detectable_effect(b.mean["se"])
    return out


def write_report(study: Study, out_dir: Path, n_resamples: int = 1000, seed: int = 0,
                 references: References | None = None) -> dict[str, Path]:
    """Run every analysis and the evidence checks (against `references`: the pixel baseline and probes the analyze
    stage fits; without them those checks are not made) and write the outputs to out_dir; returns name -> path."""
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    everything, study = study, study.without_repeats()  # grid.seeds repeats: in the evidence checks only
    main, sp = main_table(study), spearman(study)
    boosts = pretraining_boosts(study, n_resamples, seed)
    trunc = truncation_table(study, n_resamples, seed)
    fractions = label_fraction_table(study, n_resamples, seed)
    evidence = trust.gather(everything, references, n_resamples, seed)
    mdes = _mdes(boosts, trunc)
    tables = {"main_table": main, "spearman": sp, "boost": pd.concat([b.per_family for b in boosts]),
              "size_differences": boosts[0].size_differences, "truncation": trunc.table,
              "truncation_deepest": trunc.deepest, "trust_runs": evidence.checks.drop(columns="problems").assign(
                  problems=evidence.checks["problems"].map("; ".join)), "trust_probes": evidence.probes,
              "label_fractions": fractions}
    paths: dict[str, Path] = {}
    for name, df in tables.items():
        paths[name] = out_dir / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    for name, df in _plot_tables(study, boosts).items():
        paths[f"plots/{name}"] = out_dir / "plots" / f"{name}.csv"
        df.to_csv(paths[f"plots/{name}"], index=False)
    paths["metrics"] = out_dir / "metrics.json"
    paths["metrics"].write_text(json.dumps(metrics_dict(study, sp, boosts, trunc)
                                           | _finite({"trust": trust.metrics(evidence, mdes)}), indent=2) + "\n")
    # reports/figures/ is the folder dvc.yaml tracks and `dvc plots` shows as images.
    figures, skipped = write_figures(study, sp, boosts, trunc, out_dir / "figures", fractions)
    paths.update({f"figure/{k}": v for k, v in figures.items()})
    analyses = study_md.Analyses(main, sp, boosts, trunc, fractions, fraction_boosts(study, n_resamples, seed),
                                 evidence, mdes)
    paths["study_md"] = out_dir / REPORT_FILE
    paths["study_md"].write_text(study_md.render(study, analyses, figures, skipped, out_dir, n_resamples,
                                                 seed))
    return paths
