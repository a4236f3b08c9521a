"""Stage analyze: the paper's analyses over every run of the grid -> reports/ (study.md, tables, figures,
metrics.json, summary.json), also logged to the study's summary run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from chexops import naming, records
from chexops.config import grid_keys
from chexops.stages.context import StageContext
from chexops.stages.experiment import study_run, tracker_of

REPORTS = "reports"  # the study run's artifact folder for the report (the README's name)


def run(ctx: StageContext) -> dict[str, Any]:
    """The paper's analyses over every run of the grid -> reports/, also logged to the study's summary run."""
    from chexops.analysis.probes import references
    from chexops.analysis.report import write_report
    from chexops.analysis.results import load_runs
    from chexops.analysis.trust import mlflow_tags

    config = ctx.config
    # Only the runs of the current grid: folders left by configurations removed from params.yaml don't count.
    keys = grid_keys(config)
    study = load_runs([k.eval_dir(ctx.runs_dir) for k in keys], name=config.study.name)
    a = config.analysis
    refs = references(config, study, keys, ctx.runs_dir)  # the pixel baseline and the probes (evidence checks)
    outputs = write_report(study, Path(a.reports_dir), a.bootstrap, a.seed, refs)
    tracker = tracker_of(ctx)
    run_id = study_run(config, tracker)
    tracker.start_run(naming.summary_run_name(config.study.name), {}, {}, run_id=run_id)
    with tracker.run_guard(run_id):
        metrics = json.loads(Path(outputs["metrics"]).read_text())
        summary = study_metrics(metrics)
        tracker.set_tags(run_id, mlflow_tags(metrics.get("trust", {})))
        (Path(a.reports_dir) / naming.SUMMARY_METRICS_FILE).write_text(
            json.dumps({k: records.rounded(v) for k, v in summary.items()}, indent=2))
        tracker.log_metrics(run_id, summary, len(keys))
        tracker.log_dict(run_id, config.to_dict() | {"runs": [k.name for k in keys]}, "params.json")
        for path in outputs.values():
            if Path(path).is_file():  # the folder the README names: reports/ (figures in reports/figures)
                tracker.log_artifact(run_id, path, REPORTS if Path(path).suffix != ".png" else f"{REPORTS}/figures")
    tracker.end_run(run_id)
    report = Path(a.reports_dir) / naming.REPORT_FILE
    return {"report": str(report), "runs": len(keys), "summary_run_id": run_id,
            "summary": headline(study, summary, report)}


def headline(study: Any, summary: dict[str, float], report: Path) -> str:
    """The study in one line: its best configuration, the mean boost of each measured comparison, and where the
    report is."""
    runs = study.runs
    parts = [f"{len(runs)} runs"]
    if len(runs) and "auroc_6" in runs:
        best = runs["auroc_6"].idxmax()
        parts.append(f"best {best} (test mean AUROC {runs.loc[best, 'auroc_6']:.3f})")
    for key, value in summary.items():
        if key.startswith("boost.") and key.endswith(".mean"):
            low, high = summary.get(f"{key}_ci_low"), summary.get(f"{key}_ci_high")
            ci = f" [{low:+.3f}, {high:+.3f}]" if low is not None and high is not None else ""
            parts.append(f"mean boost {key.split('.')[1]} {value:+.3f}{ci}")
    return "; ".join(parts) + f"; report {report}"


def study_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of reports/metrics.json for the study run: Spearman rho and p of each measured
    analysis, the mean pretraining boost with its CI and p, the truncation summary (the mean parameter ratio over
    the truncations without a significant drop, and how many dropped significantly)."""
    out: dict[str, float] = {}
    for name, r in metrics.get("spearman", {}).items():
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        out |= {f"spearman.{key}.rho": r.get("rho"), f"spearman.{key}.p": r.get("p")}
    # every measured comparison's mean boost (imagenet-random is unmeasured when no ImageNet weights were there)
    for comparison, boost in metrics.get("boosts", {}).items():
        key = re.sub(r"[^A-Za-z0-9_.-]+", "_", comparison)
        out |= {f"boost.{key}.{k}": boost.get(k) for k in ("mean", "mean_ci_low", "mean_ci_high", "mean_p")}
    t = metrics.get("truncation", {})
    # short keys: `dvc metrics show` prints one column per key (the median is in metrics.json and study.md)
    out |= {"truncation.mean_ratio": t.get("mean_parameter_ratio_without_significant_drop"),
            "truncation.significant_drops": t.get("n_significant_drops")}
    for name, b in metrics.get("boosts", {}).items():  # every comparison (ssl-random too) under its own name
        out |= {f"boost.{name}.{k}": b.get(k) for k in ("mean", "mean_ci_low", "mean_ci_high")}
    t = metrics.get("trust", {})
    out |= {"trust.runs_passing": t.get("runs_passing"), "trust.pixel_baseline": t.get("pixel_baseline_auroc_6")}
    out |= {f"trust.probe.{init}.learned": n for init, n in (t.get("probes_learned") or {}).items()}
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float)}
