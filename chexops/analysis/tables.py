"""The CheXtransfer analyses over finished runs: main table, Spearman correlations, pretraining boost,
within-group size differences and truncation efficiency.

Pure numpy/pandas/scipy over what each run's evaluate stage leaves in `runs/<slug>/` (eval.json and
predictions.csv). Missing inputs never crash an analysis and never leave a silent gap: every result table has
a `status` column that is either "measured" or "not measured: <why>", so the report can list each gap.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from chexops.data.labels import OBSERVATIONS, STUDY_TASKS, task_index
from chexops.errors import DataError
from chexops.evaluate.bootstrap import Resampling, auroc_replicates, bootstrap_p_value, paired_bootstrap
from chexops.evaluate.metrics import auroc_metrics, headline_key
from chexops.naming import COMPETITION_MEAN, EVAL_FILE, HEADLINE_MEAN, PREDICTIONS_FILE

MEASURED = "measured"
_Y = [f"y_{o}" for o in OBSERVATIONS]
_P = [f"p_{o}" for o in OBSERVATIONS]
_EVAL_KEYS = ("run", "family", "group", "initializer", "truncation", "depth", "parameters", "metrics")
_MEANS = {"auroc_6": HEADLINE_MEAN, "auroc_5": COMPETITION_MEAN}
# eval.json and predictions.csv come from one evaluate call; a larger gap means they are from different runs.
_CONSISTENCY_TOL = 1e-6


def not_measured(why: str) -> str:
    return f"not measured: {why}"


@dataclass(frozen=True)
class Study:
    """All runs of one study: `runs` (one row per run, indexed by run name) and the aligned test predictions.

    `truth` is (n_studies, 14) in OBSERVATIONS order; `probs[run]` has the same shape and row order;
    `patients[i]` is the patient of studies[i] (the bootstrap resamples a patient's studies together).
    `notes` holds anything odd found while loading that the report should show (never silently dropped).
    """

    name: str
    runs: pd.DataFrame
    studies: tuple[str, ...]
    truth: np.ndarray
    probs: Mapping[str, np.ndarray]
    notes: tuple[str, ...] = field(default=())
    patients: tuple[str, ...] | None = None

    def resampling(self, n_resamples: int, seed: int) -> Resampling:
        """The test-set bootstrap every analysis shares: whole patients when a patient has several studies."""
        return Resampling.of(len(self.studies), n_resamples, seed, self.patients)

    @property
    def headline_tasks(self) -> tuple[str, ...]:
        """The study tasks the headline mean covers (all six unless one has a single class in the test truth)."""
        return tuple(t for t in STUDY_TASKS if len(np.unique(self.truth[:, OBSERVATIONS.index(t)])) == 2)

    @property
    def headline(self) -> str:
        """What the AUROC-6 column is: 'mean AUROC over the 6 study tasks', or over fewer, saying which not."""
        missing = [t for t in STUDY_TASKS if t not in self.headline_tasks]
        if not missing:
            return "mean AUROC over the 6 study tasks"
        return (f"mean AUROC over {len(self.headline_tasks)} of the 6 study tasks ({', '.join(missing)} undefined: "
                "one class only in the test studies)")

    @property
    def full(self) -> pd.DataFrame:
        """The untruncated runs trained on all labels (what the paper's analyses compare)."""
        return self.runs[(self.runs["depth"] == 0) & (self.runs["label_fraction"] == 1.0)]

    @property
    def data(self) -> str:
        """What data made the numbers, as the evaluate stage described it ('synthetic ...' for phantoms)."""
        described = sorted({d for d in self.runs.get("data", pd.Series(dtype=str)).astype(str) if d})
        sources = ", ".join(sorted(self.runs["test_source"].astype(str).unique()))
        return "; ".join(described) or f"test source {sources} (runs evaluated before chexops described their data)"

    @property
    def synthetic(self) -> bool:
        return self.data.startswith("synthetic")


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _read_eval(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path} is missing; run the evaluate stage for this run first.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); rerun the evaluate stage for this run.") from exc
    missing = [k for k in _EVAL_KEYS if k not in data]
    if missing:
        raise DataError(f"{path} lacks {missing}; it was not written by the evaluate stage, rerun it.")
    metrics = data["metrics"]
    try:
        keys = {short: headline_key(metrics, "test", mean) for short, mean in _MEANS.items()}
    except DataError:
        raise DataError(f"{path} holds no test mean AUROC; it was not written by the evaluate stage, rerun "
                        "it.") from None
    row: dict[str, Any] = {k: data[k] for k in _EVAL_KEYS[:-1]}
    row["depth"], row["parameters"] = int(row["depth"]), int(row["parameters"])
    row.update(
        imagenet_top1=_num(data.get("imagenet_top1")),
        timm_tag=data.get("timm_tag"),
        test_source=data.get("test_source", "unknown"),
        n_test_studies=data.get("n_test_studies"),
        best_single_auroc_6=_num((data.get("best_single") or {}).get("test_mean_auroc")),
        reference_top1=_num(data.get("reference_top1")),
        reference_top1_source=data.get("reference_top1_source") or "",
        bootstrap_unit=(data.get("bootstrap") or {}).get("unit", "study"),
        test_split=json.dumps(data.get("test_split") or {}, sort_keys=True),
        label_fraction=float(data.get("label_fraction", 1.0)),
        initializer_pretrained=bool(data.get("initializer_pretrained", data["initializer"] != "random")),
        initializer_label=data.get("initializer_label") or data["initializer"],
        data=data.get("data") or "",
        mlflow_run_id=data.get("mlflow_run_id"),
        path=str(path.parent),
    )
    for short, key in keys.items():
        for suffix in ("", "_ci_low", "_ci_high"):
            row[short + suffix] = _num(metrics.get(key + suffix))
    return row


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path} is missing; run the evaluate stage for this run first.")
    df = pd.read_csv(path, dtype={"study": str})
    missing = [c for c in ["study", *_Y, *_P] if c not in df.columns]
    if missing:
        raise DataError(
            f"{path} lacks columns {missing[:4]}{' ...' if len(missing) > 4 else ''}; expected `study`, then "
            "y_<Observation> and p_<Observation> for the 14 CheXpert observations."
        )
    if "patient" not in df.columns:  # predictions from before patients were recorded: each study its own patient
        df["patient"] = df["study"]
    dup = df["study"][df["study"].duplicated()]
    if not dup.empty:
        raise DataError(f"{path} repeats studies {dup.unique()[:3].tolist()}; predictions must be one row per study.")
    y, p = df[_Y].to_numpy(dtype=float), df[_P].to_numpy(dtype=float)
    if not np.isin(y, (0.0, 1.0)).all():
        raise DataError(f"{path}: y_ columns must be 0 or 1 (study-level test truth), found {np.unique(y)[:5]}.")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise DataError(f"{path}: p_ columns must be probabilities in [0, 1] with no missing values.")
    return df.set_index("study")[["patient", *_Y, *_P]]


def _align(frames: Mapping[str, pd.DataFrame]
           ) -> tuple[tuple[str, ...], np.ndarray, dict[str, np.ndarray], tuple[str, ...]]:
    """One study order for every run; a different test set or different truth is an error naming both runs."""
    (ref_run, ref), *rest = frames.items()
    order = ref.index
    truth = ref[_Y].to_numpy(dtype=np.int8)
    for run, df in rest:
        if set(df.index) != set(order):
            a, b = order.difference(df.index), df.index.difference(order)
            raise DataError(
                f"runs {ref_run!r} and {run!r} were tested on different studies: {len(a)} only in the first "
                f"(e.g. {a[:3].tolist()}), {len(b)} only in the second (e.g. {b[:3].tolist()}). All runs of a "
                "study must share one test set; re-evaluate them on the same test split."
            )
        bad = (df.loc[order, _Y].to_numpy(dtype=np.int8) != truth).any(axis=1)
        if bad.any():
            raise DataError(
                f"runs {ref_run!r} and {run!r} disagree on the test labels of {int(bad.sum())} studies "
                f"(e.g. {order[bad][:3].tolist()}); they were evaluated against different ground truth."
            )
    patients = tuple(ref.loc[order, "patient"].astype(str))
    return tuple(order), truth, {run: df.loc[order, _P].to_numpy(dtype=float) for run, df in frames.items()}, patients


def _consistency_notes(runs: pd.DataFrame, truth: np.ndarray, probs: Mapping[str, np.ndarray]) -> list[str]:
    notes = []
    for run, p in probs.items():
        recomputed = auroc_metrics(truth, p, STUDY_TASKS).mean_auroc_6
        stated = runs.loc[run, "auroc_6"]
        if recomputed is not None and abs(recomputed - stated) > _CONSISTENCY_TOL:
            notes.append(
                f"{run}: eval.json gives mean AUROC {stated:.4f} but its predictions.csv gives {recomputed:.4f}; "
                "the tables use eval.json, the paired tests use predictions.csv. Re-run its evaluate stage."
            )
    return notes


def load_runs(run_dirs: Iterable[Path], name: str = "study") -> Study:
    """Read eval.json and predictions.csv of each run folder; DataError on anything malformed or misaligned."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise DataError("no run folders given; train and evaluate at least one run before the analysis.")
    rows = [_read_eval(d / EVAL_FILE) for d in dirs]
    runs = pd.DataFrame(rows).set_index("run", drop=False)
    for cols, what in ((["run"], "run name"),
                       (["family", "initializer", "depth", "label_fraction"], "family/initializer/depth/labels")):
        dup = runs[runs.duplicated(cols, keep=False)]
        if not dup.empty:
            raise DataError(
                f"runs in {dup['path'].tolist()} share one {what}; the analysis needs exactly one run per "
                "configuration. Remove the stale folder."
            )
    studies, truth, probs, patients = _align(
        {r["run"]: _read_predictions(Path(r["path"]) / PREDICTIONS_FILE) for r in rows})
    notes = _consistency_notes(runs, truth, probs)
    sources = sorted(runs["test_source"].astype(str).unique())
    if len(sources) > 1:
        notes.append(f"runs name different test sources {sources} although they share the same test studies.")
    return Study(name=name, runs=runs, studies=studies, truth=truth, probs=probs, notes=tuple(notes),
                 patients=patients)


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
    for short in _MEANS:
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
        res = stats.spearmanr(xs, ys)
        rec.update(rho=float(res.statistic), p=float(res.pvalue), status=MEASURED)
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
    cols = ["analysis", "initializer", "x", "y", "n", "rho", "p", "status", "families", "note"]
    return pd.DataFrame(rows)[cols]


def _paired(study: Study, run_a: str, run_b: str, n_resamples: int, seed: int) -> dict[str, float]:
    """AUROC(a) - AUROC(b), 6-task mean, with the paired-bootstrap CI and p on the shared test studies."""
    d = paired_bootstrap(study.truth, study.probs[run_a], study.probs[run_b], n_resamples, seed,
                         groups=study.patients).mean
    return {"delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p_value}


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
    return {"boost": float(np.mean(points)), "ci_low": float(low), "ci_high": float(high),
            "p": bootstrap_p_value(mean_reps), "n_families": len(pairs), "status": MEASURED}


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
                     "ci_high": d["ci_high"], "p": d["p"], "status": MEASURED})
    if not rows:
        rows.append({"comparison": c.name, "family": "", "status": not_measured("no full runs")})
    cols = ["comparison", "family", "group", "parameters", "run_pretrained", "run_baseline", "auroc_pretrained",
            "auroc_baseline", "boost", "ci_low", "ci_high", "p", "status"]
    per_family = pd.DataFrame(rows).reindex(columns=cols)
    pairs = [(r.run_pretrained, r.run_baseline) for r in per_family.itertuples() if r.status == MEASURED]
    mean = (_mean_delta(study, pairs, n_resamples, seed) if pairs else
            {"n_families": 0,
             "status": not_measured(f"no family has both a full {c.pretrained} and a full {c.baseline} run")})
    return BoostResult(per_family, mean, size_differences(study, n_resamples, seed), c)


def pretraining_boosts(study: Study, n_resamples: int = 1000, seed: int = 0) -> list[BoostResult]:
    """pretraining_boost for every comparison of the study (see `comparisons`)."""
    return [pretraining_boost(study, n_resamples, seed, c) for c in comparisons(study)]


def size_differences(study: Study, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (group, initializer): AUROC of the family with most parameters minus the one with fewest."""
    rows = []
    for (group, init), sub in study.full.groupby(["group", "initializer"], sort=True):
        rec: dict[str, Any] = {"group": group, "initializer": init}
        big, small = sub.loc[sub["parameters"].idxmax()], sub.loc[sub["parameters"].idxmin()]
        if len(sub) < 2:  # nothing to compare within the group: not a gap, and not listed as one
            continue
        if big["parameters"] == small["parameters"]:
            rec["status"] = not_measured(f"all full {group}/{init} families have the same parameter count")
        else:
            d = _paired(study, big["run"], small["run"], n_resamples, seed)
            rec.update(larger=big["family"], smaller=small["family"], larger_parameters=big["parameters"],
                       smaller_parameters=small["parameters"], difference=d["delta"], ci_low=d["ci_low"],
                       ci_high=d["ci_high"], p=d["p"], status=MEASURED)
        rows.append(rec)
    if not rows:
        rows.append({"group": "", "status": not_measured("no group has two full families of one initializer")})
    cols = ["group", "initializer", "larger", "smaller", "larger_parameters", "smaller_parameters", "difference",
            "ci_low", "ci_high", "p", "status"]
    return pd.DataFrame(rows).reindex(columns=cols)


# The study's truncation summary, as the paper states it ("3.25x more parameter-efficient on average with no
# statistically significant AUC drop"): over the truncated runs whose paired 95% CI of the AUROC change does not lie
# below zero, the mean (and median) of full-model parameters / truncated parameters. Runs that lost AUROC
# significantly are left out: a 1540x smaller network that has stopped working is no efficiency gain.
TRUNCATION_SUMMARY_DEFINITION = (
    "parameter ratio = full model's parameters / truncated model's parameters; a drop is significant when the "
    "paired-bootstrap 95% CI of the AUROC change lies below 0; the summary is the mean (and median) ratio over the "
    "truncated runs without a significant drop, as the paper's 3.25x")


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
            "ci_high": d["ci_high"], "p": d["p"], "significant_drop": bool(d["ci_high"] < 0), "status": MEASURED}


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
            "full_auroc", "parameter_ratio", "delta", "ci_low", "ci_high", "p", "significant_drop", "status"]
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
        summary.update(mean_parameter_ratio=float(kept["parameter_ratio"].mean()),
                       median_parameter_ratio=float(kept["parameter_ratio"].median()), status=MEASURED)
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
