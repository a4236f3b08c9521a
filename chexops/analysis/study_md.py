"""study.md, the analyze stage's readable report: each section a function returning its markdown lines, and
`render` putting them in order. Numbers come in computed (report.write_report runs the analyses); nothing here
computes a statistic, it only words and gates them: a comparison its runs do not support (trust.verdict) is
printed with the reason, never in bold.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexops.analysis import trust
from chexops.analysis.paper import (
    MOCO_CXR,
    PAPER_BEST_WORST,
    PAPER_BOOST,
    PAPER_CITATION,
    PAPER_MEAN_BOOST,
    PAPER_SCOPE,
    PAPER_SIZE,
    PAPER_SPEARMAN,
    PAPER_TRUNCATION_DROP,
    PAPER_TRUNCATION_GAIN,
)
from chexops.analysis.results import MEASURED, Study
from chexops.analysis.tables import (
    TRUNCATION_SUMMARY_DEFINITION,
    BoostResult,
    TruncationResult,
    format_ci,
    initializer_label,
    initializers,
)


@dataclass(frozen=True)
class Analyses:
    """Every analysis study.md reports, as report.write_report computed them."""
    main: pd.DataFrame
    spearman: pd.DataFrame
    boosts: list[BoostResult]
    truncation: TruncationResult
    fractions: pd.DataFrame
    fraction_boosts: dict[float, list[BoostResult]]
    evidence: trust.Evidence
    mdes: dict[str, float]


def render(study: Study, a: Analyses, figures: dict[str, Path], skipped: dict[str, str], out_dir: Path,
           n_resamples: int, seed: int) -> str:
    """study.md: header, the evidence checks first, then every analysis, the figures and what was not measured."""
    sp, boosts, trunc, evidence = a.spearman, a.boosts, a.truncation, a.evidence
    best_worst, bw_missing = _md_best_worst(study)
    gaps = _not_measured(sp, boosts, trunc) + bw_missing + [f"figure {k}: {v}" for k, v in skipped.items()]
    gaps = [f"{g} (ImageNet)" if "imagenet" in g else g for g in gaps]
    hint = [IMAGENET_HINT, ""] if any(g.endswith("(ImageNet)") for g in gaps) else []
    head = _md_header(study, n_resamples, seed)
    lines = [*head[:2], *trust.md_section(evidence, len(study.studies), a.mdes), *head[2:], *_md_main(a.main),
             *best_worst, *_md_spearman(study, sp, evidence),
             *(line for b in boosts for line in _md_boost(study, b, evidence)), *_md_sizes(boosts[0], evidence),
             *_md_label_fractions(study, a.fractions),
             *_md_fraction_boosts(study, a.fraction_boosts, evidence),
             *_md_truncation(trunc, evidence), *_md_figures(figures, out_dir),
             "## Not measured", "", *([f"- {g}" for g in gaps] or ["Nothing: every analysis had its inputs."]), "",
             *hint]
    if study.notes:
        lines += ["## Notes", "", *(f"- {n}" for n in study.notes), ""]
    return "\n".join(lines)


# What a gap that needs ImageNet weights says, once, under "Not measured".
IMAGENET_HINT = ("Entries marked (ImageNet) need ImageNet weights, which cannot be downloaded offline: on a machine "
                 "with internet run `chexops weights fetch FAMILY --to DIR` for each family (or copy timm's "
                 "`<model>.<tag>.safetensors` files into DIR), set CHEXOPS_WEIGHTS_DIR=DIR (or model.weights_dir "
                 "in params.yaml), add `imagenet` to grid.initializers and run `dvc repro`.")


def _f(v: Any, spec: str = ".3f") -> str:
    return format(float(v), spec) if v is not None and np.isfinite(float(v)) else "-"


def _p(v: Any) -> str:
    if v is None or not np.isfinite(float(v)):
        return "-"
    return "< 0.001" if float(v) < 0.001 else f"{float(v):.3f}"


def _p_is(v: Any) -> str:
    text = _p(v)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc)]


def _status(r: Any, text: str) -> str:
    return text if r["status"] == MEASURED else r["status"]


def _supported(e: trust.Evidence, runs: list[str], effect: float | None = None,
               pretrained: tuple[str, list[str]] | None = None) -> str:
    """'yes', or 'not supported by these runs: <why>' (trust.verdict)."""
    why = trust.verdict(e, [r for r in runs if isinstance(r, str)], effect, pretrained)
    return trust.unsupported(why) if why else "yes"


def _mde(se: Any) -> str:
    return _f(trust.minimum_detectable_effect(float(se)) if se is not None else None)


def _md_header(study: Study, n_resamples: int, seed: int) -> list[str]:
    runs = study.runs
    synthetic = ("These are **synthetic** phantoms in CheXpert's file format, made so the pipeline runs anywhere: "
                 "the numbers show what the study measures, not how models do on chest radiographs. "
                 if study.synthetic else "")
    unit = study.resampling(n_resamples, seed).unit
    resampled = ("whole patients (a cluster bootstrap: a patient with several test studies is drawn with all of "
                 "them)" if unit == "patient" else "the test studies (no patient has two)")
    warning = ([f"> **Warning:** the headline is the {study.headline}; it is not comparable with a 6-task mean.", ""]
               if len(study.headline_tasks) < 6 else [])
    return [
        f"# {study.name}: CheXtransfer analysis",
        "",
        *warning,
        f"- Data: **{study.data}**; {len(study.studies)} test studies (study-level predictions shared by every "
        f"run). {synthetic}".rstrip(),
        f"- Runs: {len(runs)} ({int((runs['depth'] == 0).sum())} full, {int((runs['depth'] > 0).sum())} truncated); "
        "initializers: "
        + "; ".join(f"{i} ({initializer_label(study, i)})" for i in sorted(runs["initializer"].unique())) + ".",
        f"- Metric: {study.headline} (AUROC-6; the 5 competition tasks also shown), per study: each checkpoint's "
        "maximum over the study's views, then the checkpoints' mean. 95% CIs from "
        f"{n_resamples} bootstrap resamples of {resampled}, seed {seed}.",
        "- p-values: a mean over tasks (every comparison in this report) is tested with the paired bootstrap (two "
        "runs scored on the same resamples; p = twice the smaller share of replicate differences on either side "
        "of 0); a single task's AUROC comparison (`chexops promote`) with DeLong's test.",
        f"- Paper values are reference constants from {PAPER_CITATION}, not computed here; their scope: "
        f"{PAPER_SCOPE}.",
        "",
        *_md_test_split(study),
    ]


def _md_test_split(study: Study) -> list[str]:
    """What the test split holds and what it lost, as the evaluate stage recorded it (one record per study)."""
    records = {r for r in study.runs["test_split"] if r and r != "{}"}
    if len(records) != 1:
        why = "runs record different test splits" if records else "runs evaluated before the split was recorded"
        return ["## Test split", "", f"Composition not shown: {why}; re-run their evaluate stages.", ""]
    split = json.loads(records.pop())
    v = split["views"]
    rows = [["source", split["source"]], ["studies", split["studies"]], ["patients", split["patients"]],
            ["patients with several studies", f"{split['patients_with_several_studies']} (up to "
             f"{split['max_studies_per_patient']} studies each)" if split["patients_with_several_studies"] else "0"],
            ["images", f"{split['images']} ({v['frontal']} frontal, {v['lateral']} lateral)"],
            ["unreadable images skipped", split["images_unreadable"]]]
    rows += [["studies dropped", f"{d['studies']}: {d['why']}"] for d in split["dropped"]] or [
        ["studies dropped", "none"]]
    return ["## Test split", "", *_md_table(rows, ["", "value"]), ""]


def _paper_auroc(r: Any) -> str:
    """The paper's AUROC for a full model where it reports one (its best and worst models)."""
    for (best, worst) in ([PAPER_BEST_WORST[r["initializer"]]] if r["initializer"] in PAPER_BEST_WORST else []):
        for family, value in (best, worst):
            if family == r["family"] and r["depth"] == 0 and r["label_fraction"] == 1.0:
                return f"{value:.3f}"
    return "-"


def _md_main(main: pd.DataFrame) -> list[str]:
    rows = [[r["run"], r["group"], r["initializer"], r["depth"], _f(r["label_fraction"], "g"),
             _f(r["parameters"] / 1e6, ".2f"), _f(r["imagenet_top1"], ".2f"), _f(r["reference_top1"], ".2f"),
             r["auroc_6_ci"], r["auroc_5_ci"], _paper_auroc(r)] for _, r in main.iterrows()]
    header = ["run", "group", "init", "blocks dropped", "labels", "params (M)", "top-1 (timm tag)",
              "top-1 (paper's weights)", "AUROC-6 [95% CI]", "AUROC-5 [95% CI]", "paper AUROC (CheXpert)"]
    sources = sorted({s for s in main["reference_top1_source"] if s})
    return ["## Main table", "", *_md_table(rows, header), "",
            "ImageNet top-1: the Spearman correlations use timm's values for the pinned tags (the weights chexops "
            "loads); the paper's weights came from " + (", ".join(sources) or "sources not recorded") + ", whose "
            "documented top-1 is shown beside them: where the two differ, so do the correlation inputs.", ""]


def _md_best_worst(study: Study) -> tuple[list[str], list[str]]:
    full = study.full[np.isfinite(study.full["auroc_6"])]
    rows, missing = [], []
    for init in initializers(study):
        sub = full[full["initializer"] == init].sort_values("auroc_6")
        ref = PAPER_BEST_WORST.get(init)
        paper = f"{ref[0][0]} {ref[0][1]:.3f} / {ref[1][0]} {ref[1][1]:.3f}" if ref else "not reported"
        if sub.empty:
            missing.append(f"best/worst {init} model: not measured: no full {init} runs")
            rows.append([init, "not measured", paper])
            continue
        best, worst = sub.iloc[-1], sub.iloc[0]
        rows.append([init, f"{best['family']} {best['auroc_6']:.3f} / {worst['family']} {worst['auroc_6']:.3f}", paper])
    lines = ["## Best and worst full models", "", *_md_table(rows, ["init", "measured best / worst", "paper"]), ""]
    return lines, missing


def _spearman_runs(study: Study, r: Any) -> list[str]:
    """The runs behind a correlation's points."""
    full = study.full
    inits = [i.strip() for i in str(r["initializer"]).split(" - ")]
    return full.loc[full["initializer"].isin(inits) & full["family"].isin(str(r["families"]).split(", ")),
                    "run"].tolist()


def _md_spearman(study: Study, sp: pd.DataFrame, e: trust.Evidence) -> list[str]:
    rows = []
    for _, r in sp.iterrows():
        paper_rho, paper_p = PAPER_SPEARMAN.get((r["analysis"], r["initializer"]), (None, None))
        ok = _supported(e, _spearman_runs(study, r)) if r["status"] == MEASURED else "-"
        rows.append([r["analysis"], r["initializer"], r["n"], _status(r, _f(r["rho"])), _p(r["p"]),
                     r["p_method"] if isinstance(r["p_method"], str) else "-",
                     _f(paper_rho) if paper_rho is not None else "-",
                     _p(paper_p) if paper_p is not None else "not reported", ok, r["note"] or ""])
    header = ["correlation", "initializer", "n", "measured rho", "measured p", "p by", "paper rho", "paper p",
              "supported", "note"]
    return ["## Spearman correlations (full models)", "", *_md_table(rows, header),
            "", "The paper reports the boost-vs-parameters correlation as 0.718 in magnitude, smaller models gaining "
            "more; it is shown here with that negative sign.", ""]


def _md_boost(study: Study, boost: BoostResult, e: trust.Evidence) -> list[str]:
    c = boost.comparison
    paper = c.name == "imagenet - random"
    done = boost.per_family[boost.per_family["status"] == MEASURED]
    pre = (c.pretrained, done["family"].tolist())
    rows = [[r["family"], _f(r["parameters"] / 1e6, ".2f"), _f(r["auroc_pretrained"]), _f(r["auroc_baseline"]),
             _status(r, format_ci(r["boost"], r["ci_low"], r["ci_high"], "+.3f")), _p(r["p"]), _mde(r["se"]),
             _supported(e, [r["run_pretrained"], r["run_baseline"]], r["boost"], (c.pretrained, [r["family"]]))
             if r["status"] == MEASURED else "-"]
            + ([_f(PAPER_BOOST.get(r["family"]), "+.3f")] if paper else []) for _, r in boost.per_family.iterrows()]
    m = boost.mean
    mean = (f"{format_ci(m['boost'], m['ci_low'], m['ci_high'], '+.3f')}, {_p_is(m['p'])}, over {m['n_families']} "
            f"families (minimum detectable effect {_mde(m['se'])})" if m["status"] == MEASURED else m["status"])
    if m["status"] == MEASURED:
        ok = _supported(e, done["run_pretrained"].tolist() + done["run_baseline"].tolist(), pretrained=pre)
        mean = f"**{mean}**" if ok == "yes" else f"{ok}. Measured: {mean}"
    header = ["family", "params (M)", f"AUROC {c.pretrained}", f"AUROC {c.baseline}", "boost [95% CI]", "p",
              "min. detectable", "supported"]
    what = f"{initializer_label(study, c.pretrained)} vs {initializer_label(study, c.baseline)}"
    lines = [f"## Pretraining boost: {c.name} ({what})", "", *_md_table(rows, header + ["paper boost"] * paper), ""]
    if paper:
        paper_boost = ", ".join(f"{f} {v:+.3f}" for f, v in PAPER_BOOST.items())
        return [*lines, f"Mean boost: {mean} (paper: {PAPER_MEAN_BOOST:+.3f}).", "",
                f"Paper, per family: {paper_boost}; larger for small models than for large ones.", ""]
    ref = f" For scope: {MOCO_CXR}; this is the 6-task mean at every label fraction listed." if (
        c.baseline == "random") else ""
    return [*lines, f"Mean boost: {mean}.{ref}", ""]


def _md_sizes(boost: BoostResult, e: trust.Evidence) -> list[str]:
    sizes = []
    for _, r in boost.size_differences.iterrows():
        ref = PAPER_SIZE.get((r["group"], r["initializer"]))
        pair = f"{r['larger']} - {r['smaller']}" if r["status"] == MEASURED else "-"
        ok = (_supported(e, [r["larger_run"], r["smaller_run"]], r["difference"]) if r["status"] == MEASURED
              else "-")
        sizes.append([r["group"], r["initializer"], pair, _status(r, format_ci(r["difference"], r["ci_low"],
                      r["ci_high"], "+.3f")), _p(r["p"]), _mde(r["se"]), ok,
                      f"{ref[0]} = {ref[1]:+.3f}" if ref else "not reported"])
    size_header = ["group", "init", "largest - smallest", "difference [95% CI]", "p", "min. detectable",
                   "supported", "paper"]
    paper_size = "; ".join(f"{g}/{i}: {pair} = {v:+.3f}" for (g, i), (pair, v) in PAPER_SIZE.items())
    return ["## Largest minus smallest model within a group", "", *_md_table(sizes, size_header), "",
            "Only sizes of one architecture line are compared (the paper's ResNet101 - ResNet18), never two "
            "architectures of one group (MobileNetV3 - MobileNetV2); lines with one size in the grid are left out.",
            "",
            f"Paper: {paper_size}.", ""]


def _md_fraction_boosts(study: Study, by_fraction: dict[float, list[BoostResult]], e: trust.Evidence) -> list[str]:
    """The mean boost of each comparison at each label fraction below 1, gated like the full-label one."""
    lines = []
    for fraction, boosts in by_fraction.items():
        for b in boosts:
            m, done = b.mean, b.per_family[b.per_family["status"] == MEASURED]
            if m["status"] != MEASURED:
                lines.append(f"- {b.comparison.name} at {fraction:g} of the labels: {m['status']}.")
                continue
            text = (f"{format_ci(m['boost'], m['ci_low'], m['ci_high'], '+.3f')}, {_p_is(m['p'])}, over "
                    f"{m['n_families']} families (minimum detectable effect {_mde(m['se'])})")
            ok = _supported(e, done["run_pretrained"].tolist() + done["run_baseline"].tolist(),
                            pretrained=(b.comparison.pretrained, done["family"].tolist()))
            lines.append(f"- {b.comparison.name} at {fraction:g} of the labels: mean boost "
                         + (f"**{text}**." if ok == "yes" else f"{ok}. Measured: {text}."))
    if not lines:
        return []
    return ["Pretraining boost at each label fraction (full-label boosts are above; MoCo-CXR's claim is that "
            "pretraining matters most with few labels; its scope: " + MOCO_CXR + "):", "", *lines, ""]


def _md_label_fractions(study: Study, fractions: pd.DataFrame) -> list[str]:
    head = "## AUROC vs label fraction"
    if fractions.empty or fractions["label_fraction"].nunique() < 2:
        return [head, "", "grid.label_fractions has one fraction; list more (e.g. [0.1, 1.0]) to train each "
                "configuration on a patient-grouped fraction of the labels and compare initializers there.", ""]
    rows = [[r["initializer"], _f(r["label_fraction"], "g"), r["family"] if r["family"] != "mean" else
             f"**mean of {r['run']}**", format_ci(r["auroc"], r["ci_low"], r["ci_high"])]
            for _, r in fractions.sort_values(["initializer", "label_fraction", "family"]).iterrows()]
    return [head, "", "Each run trains on every image of a seeded fraction of the training patients (pretraining "
            "sees all images); the mean is over the families trained at every fraction.", "",
            *_md_table(rows, ["init", "label fraction", "family", "AUROC-6 [95% CI]"]), ""]


def _ratio(v: Any) -> str:
    return _f(v, ".2f") + ("x" if v is not None and np.isfinite(float(v)) else "")


def _md_truncation(trunc: TruncationResult, e: trust.Evidence) -> list[str]:
    rows = [[r["run"], _f(r["blocks_dropped"], ".0f"), _f(r["parameters"] / 1e6, ".2f"), _ratio(r["parameter_ratio"]),
             _f(r["auroc"]), _f(r["full_auroc"]),
             _status(r, format_ci(r["delta"], r["ci_low"], r["ci_high"], "+.3f")), _p(r["p"]), _mde(r["se"]),
             ("yes" if r["significant_drop"] else "no") if r["status"] == MEASURED else "-",
             _supported(e, [r["run"], r["full_run"]]) if r["status"] == MEASURED else "-"]
            for _, r in trunc.table.iterrows()]
    header = ["run", "blocks dropped", "params (M)", "parameter ratio", "AUROC", "full AUROC",
              "difference [95% CI]", "p", "min. detectable", "significant drop", "supported"]
    deepest = [[r["family"], r["initializer"], r["truncations"], r["deepest_without_significant_drop"],
                _ratio(r["parameter_ratio"]) if r["run"] else "-"] for _, r in trunc.deepest.iterrows()]
    s, done = trunc.summary, trunc.table[trunc.table["status"] == MEASURED]
    mde = trust.minimum_detectable_effect(float(done["se"].max())) if not done.empty else float("nan")
    summary = (f"{s['mean_parameter_ratio']:.2f}x fewer parameters on average (median "
               f"{s['median_parameter_ratio']:.2f}x) over the {s.get('n_distinct_truncations', '?')} distinct "
               f"truncations with a run without a significant AUROC drop ({s['n_without_significant_drop']} of "
               f"{s['n_measured']} truncated runs; {s['n_significant_drops']} dropped significantly; drops smaller "
               f"than {mde:.3f}, the largest minimum detectable effect here, could go unseen)"
               if s["status"] == MEASURED else f"Truncation summary {s['status']}")
    ok = _supported(e, done["run"].tolist() + done["full_run"].tolist()) if s["status"] == MEASURED else "-"
    summary = f"**{summary}**" if ok == "yes" else (f"{ok}. Measured: {summary}" if ok != "-" else summary)
    lines = ["## Truncation (final blocks removed)", "", *_md_table(rows, header), ""]
    if deepest:
        lines += ["Deepest truncation without a significant drop:", "",
                  *_md_table(deepest, ["family", "init", "truncations", "blocks dropped", "parameter ratio"]), ""]
    return [*lines, f"Summary: {summary}. Paper: {PAPER_TRUNCATION_GAIN:.2f}x on average, {PAPER_TRUNCATION_DROP}.",
            "", f"Definition: {s.get('definition', TRUNCATION_SUMMARY_DEFINITION)}.", ""]


def _not_measured(sp: pd.DataFrame, boosts: list[BoostResult], trunc: TruncationResult) -> list[str]:
    """Every 'not measured' entry of every analysis, prefixed with where it comes from."""
    def take(df: pd.DataFrame, what: Callable[[Any], str]) -> list[str]:
        return [f"{what(r)}: {r['status']}" for _, r in df.iterrows() if r["status"] != MEASURED]

    out = take(sp, lambda r: f"Spearman {r['analysis']} ({r['initializer']})")
    for boost in boosts:
        name = boost.comparison.name
        out += take(boost.per_family, lambda r, n=name: f"pretraining boost {n} {r['family']}".rstrip())
        if boost.mean["status"] != MEASURED:
            out.append(f"mean pretraining boost {name}: {boost.mean['status']}")
    out += take(boosts[0].size_differences, lambda r: f"largest - smallest {r['group']}/{r['initializer']}"
                if r["group"] else "largest - smallest within a group")
    out += take(trunc.table, lambda r: f"truncation {r['run']}".rstrip())
    if trunc.summary["status"] != MEASURED:
        out.append(f"mean truncation parameter ratio without a significant drop: {trunc.summary['status']}")
    return out


def _md_figures(figures: dict[str, Path], out_dir: Path) -> list[str]:
    titles = {"auroc_vs_top1": "AUROC vs ImageNet top-1", "auroc_vs_params": "AUROC vs parameters",
              "boost_vs_params": "Pretraining boost vs parameters (imagenet - random)",
              "truncation": "Truncated models", "label_fractions": "AUROC vs label fraction"}
    lines = ["## Figures", ""]
    for name, path in figures.items():
        title = titles.get(name) or f"Pretraining boost vs parameters ({name.rsplit('_', 1)[-1]})"
        lines += [f"### {title}", "", f"![{title}]({path.relative_to(out_dir).as_posix()})", ""]
    return lines if figures else [*lines, "No figure could be drawn; see Not measured.", ""]
