"""Evidence checks: can the study's numbers be trusted? Study.md prints a comparison as a finding only when its
runs pass them; otherwise it says "not supported by these runs" and why.

Per run: its budget (examples, epochs, evaluations, ensemble size) and whether validation AUROC was still rising
at the last evaluation; whether its test AUROC-6 CI includes chance (0.5); whether it beats a pixel baseline (a
logistic regression on downsampled pixels, same splits); its training variance (the spread of its checkpoints'
test AUROC, and of seeds when several train seeds ran one configuration) beside the test-resampling CI. Per
pretrained initializer: a linear probe on its frozen features against one on random features (did pretraining
learn anything?). Per comparison: the minimum detectable effect at the test split's size.

The checks are pure numpy/pandas/scipy over the loaded runs and the reference models of
`chexops.analysis.probes` (the pixel baseline and the probes, which the analyze stage fits).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from chexops.analysis.probes import Reference, References
from chexops.analysis.results import Study

CHANCE = 0.5
# validation AUROC gained at the last evaluation over the best before it: more means the run was still learning
RISING_TOLERANCE = 0.005
# a two-sided 5% test with 80% power detects a true effect of (z_0.975 + z_0.8) standard errors
MDE_FACTOR = float(stats.norm.ppf(0.975) + stats.norm.ppf(0.8))
EXACT_SPEARMAN_MAX_N = 10
NOT_SUPPORTED = "not supported by these runs"


# --- statistics ---------------------------------------------------------------------------------------------------

def exact_spearman_p(x: Sequence[float], y: Sequence[float]) -> float:
    """Two-sided exact permutation p of Spearman's rho: the share of the n! pairings of x's ranks with y's whose
    |rho| is at least the observed |rho| (ties take average ranks, rho is Pearson's r of the ranks)."""
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    observed = abs(float(rx @ ry)) / norm
    perms = np.array(list(itertools.permutations(range(len(ry)))), dtype=np.int8)
    rhos = np.abs(ry[perms] @ rx) / norm
    return float(np.mean(rhos >= observed - 1e-12))


def spearman_test(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, str]:
    """(rho, two-sided p, how p was computed): exact permutation for n <= 10, scipy's t approximation above."""
    rho = float(stats.spearmanr(x, y).statistic)
    if len(x) <= EXACT_SPEARMAN_MAX_N:
        return rho, exact_spearman_p(x, y), "exact permutation"
    return rho, float(stats.spearmanr(x, y).pvalue), "t approximation"


def minimum_detectable_effect(se: float) -> float:
    """The smallest true difference a two-sided 5% test detects with 80% power, given the difference's standard
    error (the bootstrap replicates' standard deviation at the test split's size)."""
    return MDE_FACTOR * se if se is not None and np.isfinite(se) else float("nan")


def still_rising(history: Sequence[tuple[float, float]], tolerance: float = RISING_TOLERANCE) -> bool | None:
    """Whether the last validation beat every earlier one by more than `tolerance` (None: fewer than 2)."""
    scores = [s for _, s in history if s is not None and np.isfinite(s)]
    if len(scores) < 2:
        return None
    return bool(scores[-1] - max(scores[:-1]) > tolerance)


def spread(values: Sequence[float]) -> float:
    """max - min of the finite values (NaN with fewer than 2)."""
    ok = [v for v in values if v is not None and np.isfinite(v)]
    return float(max(ok) - min(ok)) if len(ok) > 1 else float("nan")


# --- the checks ---------------------------------------------------------------------------------------------------

def _paired_delta(study: Study, a: np.ndarray, b: np.ndarray, n_resamples: int, seed: int) -> Any:
    from chexops.evaluate.bootstrap import paired_bootstrap

    return paired_bootstrap(study.truth, a, b, n_resamples, seed, groups=study.patients).mean


def _run_problems(r: pd.Series, baseline: Reference | None) -> list[str]:
    problems = []
    if np.isfinite(r["auroc_6_ci_low"]) and r["auroc_6_ci_low"] <= CHANCE:
        problems.append(f"its test AUROC-6 CI [{r['auroc_6_ci_low']:.3f}, {r['auroc_6_ci_high']:.3f}] includes "
                        "chance (0.5)")
    if baseline is not None and r["auroc_6"] <= baseline.auroc_6:
        problems.append(f"its test AUROC-6 {r['auroc_6']:.3f} is not above the pixel baseline's "
                        f"{baseline.auroc_6:.3f}")
    if r["still_rising"] is not None and bool(r["still_rising"]):
        problems.append(f"its validation AUROC was still rising at the last evaluation ({r['examples']:.0f} "
                        f"examples, {r['epochs']:.2f} epochs)")
    return problems


def run_checks(study: Study, refs: References | None = None, n_resamples: int = 1000, seed: int = 0
               ) -> pd.DataFrame:
    """One row per run: budget, still rising, CI vs chance, paired difference from the pixel baseline, training
    variance (checkpoint and seed spreads) beside the CI width, and `problems` (empty: the run passes)."""
    refs = refs or References()
    runs = study.runs
    config = ["family", "initializer", "depth", "label_fraction"]
    seed_spread = runs.groupby(config)["auroc_6"].transform(lambda s: spread(list(s)) if len(s) > 1 else np.nan)
    rows = []
    for run, r in runs.iterrows():
        rec = {"run": run, "examples": r["examples"], "epochs": r["epochs"], "evaluations": r["evaluations"],
               "ensemble_size": r["ensemble_size"], "still_rising": still_rising(r["validation_history"]),
               "auroc_6": r["auroc_6"], "ci_low": r["auroc_6_ci_low"], "ci_high": r["auroc_6_ci_high"],
               "ci_width": r["auroc_6_ci_high"] - r["auroc_6_ci_low"],
               "checkpoint_spread": spread(r["checkpoint_aurocs"]), "seed_spread": seed_spread.loc[run]}
        if refs.baseline is not None:
            d = _paired_delta(study, study.probs[run], refs.baseline.probs, n_resamples, seed)
            rec.update(vs_baseline=d.delta, vs_baseline_ci_low=d.ci_low, vs_baseline_ci_high=d.ci_high)
        rec["problems"] = _run_problems(pd.Series({**r.to_dict(), **rec}), refs.baseline)
        rows.append(rec)
    cols = ["run", "examples", "epochs", "evaluations", "ensemble_size", "still_rising", "auroc_6", "ci_low",
            "ci_high", "ci_width", "checkpoint_spread", "seed_spread", "vs_baseline", "vs_baseline_ci_low",
            "vs_baseline_ci_high", "problems"]
    return pd.DataFrame(rows).reindex(columns=cols).set_index("run", drop=False)


def probe_table(study: Study, refs: References | None, n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (pretrained initializer, family): the probe's test AUROC-6 on its frozen features and on random
    features, the paired difference with its CI, and `learned` (the CI lies above 0)."""
    rows = []
    for (init, family), (pre, rand) in (refs.probes if refs else {}).items():
        d = _paired_delta(study, pre.probs, rand.probs, n_resamples, seed)
        rows.append({"initializer": init, "family": family, "probe_auroc": pre.auroc_6, "random_auroc": rand.auroc_6,
                     "delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "p": d.p_value,
                     "learned": bool(d.ci_low > 0)})
    cols = ["initializer", "family", "probe_auroc", "random_auroc", "delta", "ci_low", "ci_high", "p", "learned"]
    return pd.DataFrame(rows, columns=cols)


@dataclass(frozen=True)
class Evidence:
    """Everything the report's trust section and its gates need."""

    checks: pd.DataFrame
    probes: pd.DataFrame
    baseline: Reference | None = None
    notes: tuple[str, ...] = ()
    pretraining: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    train_images: int = 0

    def failing(self, runs: Sequence[str]) -> list[str]:
        """'run: problem; problem' for each of `runs` that fails a run check."""
        out = []
        for run in runs:
            problems = self.checks.loc[run, "problems"] if run in self.checks.index else []
            if problems:
                out.append(f"{run}: {'; '.join(problems)}")
        return out

    def not_learned(self, initializer: str, families: Sequence[str]) -> list[str]:
        """Families whose `initializer` probe did not beat random features (nothing: not probed, not listed)."""
        p = self.probes[(self.probes["initializer"] == initializer) & self.probes["family"].isin(families)]
        return [f"{r.family} ({r.probe_auroc:.3f} vs {r.random_auroc:.3f} random)" for r in p.itertuples()
                if not r.learned]

    def spread_of(self, runs: Sequence[str]) -> float:
        """The largest checkpoint or seed spread among `runs` (the training variance a difference must exceed)."""
        values = [self.checks.loc[r, col] for r in runs if r in self.checks.index
                  for col in ("checkpoint_spread", "seed_spread")]
        values = [v for v in values if np.isfinite(v)]
        return max(values) if values else float("nan")


def gather(study: Study, refs: References | None = None, n_resamples: int = 1000, seed: int = 0) -> Evidence:
    refs = refs or References()
    return Evidence(run_checks(study, refs, n_resamples, seed), probe_table(study, refs, n_resamples, seed),
                    refs.baseline, refs.notes, refs.pretraining, refs.train_images)


def verdict(evidence: Evidence, runs: Sequence[str], effect: float | None = None,
            pretrained: tuple[str, Sequence[str]] | None = None) -> str:
    """'' when a comparison of `runs` is supported; else why not: runs failing their checks, a pretrained
    initializer (name, families) whose probe did not beat random features, or an `effect` within the runs'
    training variance (the largest checkpoint spread)."""
    reasons = []
    failing = [r for r in runs if r in evidence.checks.index and evidence.checks.loc[r, "problems"]]
    if failing:
        reasons.append(f"{len(failing)} of {len(runs)} runs fail the evidence checks ({', '.join(failing)}; see "
                       "\"Can these numbers be trusted?\")")
    if pretrained is not None:
        lost = evidence.not_learned(pretrained[0], pretrained[1])
        if lost:
            reasons.append(f"{pretrained[0]} features do no better than random ones in a linear probe for "
                           f"{', '.join(lost)}")
    width = evidence.spread_of(runs)
    if effect is not None and np.isfinite(effect) and np.isfinite(width) and abs(effect) <= width:
        reasons.append(f"the difference {effect:+.3f} is within the runs' training variance (their checkpoints' "
                       f"test AUROC-6 spans up to {width:.3f})")
    return "; ".join(reasons)


def unsupported(reason: str) -> str:
    return f"{NOT_SUPPORTED}: {reason}"


# --- what the report, metrics and MLflow say ---------------------------------------------------------------------

def _f(v: Any, spec: str = ".3f") -> str:
    return format(float(v), spec) if v is not None and np.isfinite(float(v)) else "-"


def _rising(v: Any) -> str:
    return "not recorded" if v is None or v != v else ("**yes**" if bool(v) else "no")


def _budget(r: Any) -> str:
    if not np.isfinite(r["examples"]):
        return "not recorded"
    return f"{r['examples']:.0f} ({_f(r['epochs'], '.1f')} epochs)"


def _run_rows(e: Evidence) -> list[list[str]]:
    rows = []
    for _, r in e.checks.iterrows():
        base = (f"{r['vs_baseline']:+.3f} [{r['vs_baseline_ci_low']:+.3f}, {r['vs_baseline_ci_high']:+.3f}]"
                if np.isfinite(r["vs_baseline"]) else "-")
        rows.append([r["run"], _budget(r), _f(r["evaluations"], ".0f"), _f(r["ensemble_size"], ".0f"),
                     _rising(r["still_rising"]), f"{_f(r['auroc_6'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                     _f(r["checkpoint_spread"]), _f(r["seed_spread"]), base,
                     "pass" if not r["problems"] else "**fails**: " + "; ".join(r["problems"])])
    return rows


def _pretraining_lines(e: Evidence) -> list[str]:
    if not e.pretraining:
        return []
    rows = [[init, family, _f(b.get("examples"), ".0f"), _f(b.get("steps"), ".0f"), _f(b.get("final_loss")),
             _f(b.get("chance_loss"))] for (init, family), b in sorted(e.pretraining.items())]
    return ["Pretraining budget (the pretrain stage's record; a contrastive loss near chance learned little):", "",
            *md_table(rows, ["init", "family", "images seen", "steps", "final loss", "chance loss ln(queue+1)"]),
            ""]


def _probe_lines(e: Evidence) -> list[str]:
    if e.probes.empty:
        return ["- Linear probes: none (no pretrained initializer in the grid, or not computed).", ""]
    rows = [[r.initializer, r.family, _f(r.probe_auroc), _f(r.random_auroc),
             f"{r.delta:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]", "yes" if r.learned else "**no**"]
            for r in e.probes.itertuples()]
    lines = ["Did pretraining learn anything? A logistic regression on each backbone's frozen, pooled features "
             f"({e.train_images} training images, same splits), pretrained against random features of the same "
             "network:", "", *md_table(rows, ["init", "family", "probe AUROC-6", "random features",
                                                "difference [95% CI]", "learned"]), ""]
    for init, sub in e.probes.groupby("initializer", sort=True):
        lines.append(f"- {init}: its features beat random ones (paired CI above 0) for {int(sub['learned'].sum())} "
                     f"of {len(sub)} families.")
    return [*lines, ""]


def md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    esc = [[str(c).replace("|", "\\|") for c in r] for r in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in esc)]


def md_section(e: Evidence, n_studies: int, mdes: dict[str, float]) -> list[str]:
    """study.md's "Can these numbers be trusted?" section."""
    c = e.checks
    failing = c[c["problems"].map(bool)]
    base = (f"{e.baseline.what}, fitted on {e.train_images} training images (same splits and label policy): test "
            f"AUROC-6 **{e.baseline.auroc_6:.3f}**. A run at or below it learned nothing a linear model on raw "
            "pixels does not." if e.baseline is not None else "not computed (the analysis was given no prepared data).")
    spreads, widths = c["checkpoint_spread"].dropna(), c["ci_width"].dropna()
    variance = (f"- Training variance: a run's checkpoints differ in test AUROC-6 by up to {spreads.max():.3f} "
                f"(median {spreads.median():.3f}), against a median 95% CI width of {widths.median():.3f} from "
                "resampling the test studies; the CIs below cover test resampling only, not retraining."
                if not spreads.empty and not widths.empty else "- Training variance: not recorded.")
    seeds = c["seed_spread"].dropna()
    variance += (f" Across train seeds a configuration's AUROC-6 spans up to {seeds.max():.3f}." if not seeds.empty
                 else " One train seed per configuration: the spread across seeds is not measured.")
    mde = [f"{name} {v:.3f}" for name, v in mdes.items() if np.isfinite(v)]
    lines = ["## Can these numbers be trusted?", "",
             "Evidence checks, made before any finding: a comparison whose runs fail them is printed below as "
             "\"not supported by these runs\" with the reason, never as a finding.", "",
             f"- Runs passing every check: **{len(c) - len(failing)} of {len(c)}** (a run fails when its test "
             "AUROC-6 CI includes 0.5, it is not above the pixel baseline, or its validation AUROC gained more than "
             f"{RISING_TOLERANCE} at the last evaluation over every earlier one: still rising, undertrained).",
             f"- Pixel baseline: {base}", variance,
             f"- Minimum detectable effect at this test split ({n_studies} studies; two-sided 5% test, 80% power, "
             f"{MDE_FACTOR:.2f} bootstrap standard errors): " + ("; ".join(mde) if mde else "no comparison measured")
             + ". A difference smaller than that can go unseen: no significant difference is not no difference.",
             *(f"- Note: {n}" for n in e.notes), "",
             *md_table(_run_rows(e), ["run", "examples seen", "evaluations", "ensemble", "val AUROC still rising",
                                       "test AUROC-6 [95% CI]", "checkpoints' spread", "seeds' spread",
                                       "minus pixel baseline [95% CI]", "checks"]), "",
             *_pretraining_lines(e), *_probe_lines(e)]
    return lines


def metrics(e: Evidence, mdes: dict[str, float]) -> dict[str, Any]:
    """The evidence as numbers for metrics.json (and, summarised, for summary.json and MLflow)."""
    c = e.checks
    probes: dict[str, Any] = {}
    for r in e.probes.itertuples():
        probes.setdefault(r.initializer, {})[r.family] = {"probe": r.probe_auroc, "random": r.random_auroc,
                                                         "delta": r.delta, "learned": r.learned}
    return {"runs_passing": int((~c["problems"].map(bool)).sum()), "runs": len(c),
            "pixel_baseline_auroc_6": e.baseline.auroc_6 if e.baseline is not None else None,
            "max_checkpoint_spread": c["checkpoint_spread"].max(),
            "runs_still_rising": sum(v is not None and bool(v) for v in c["still_rising"]),
            "per_run": {r.run: {"passes": not r.problems, "still_rising": r.still_rising, "epochs": r.epochs,
                                "checkpoint_spread": r.checkpoint_spread, "vs_pixel_baseline": r.vs_baseline}
                        for r in c.itertuples()},
            "probes": probes,
            "probes_learned": {i: int(sum(v["learned"] for v in f.values())) for i, f in probes.items()},
            "minimum_detectable_effect": mdes}


def mlflow_tags(m: dict[str, Any]) -> dict[str, str]:
    """The study run's trust tags, from metrics()'s dict (as metrics.json holds it)."""
    tags = {"chexops.trust.runs_passing": f"{m.get('runs_passing', 0)} of {m.get('runs', 0)}",
            "chexops.trust.runs_still_rising": str(m.get("runs_still_rising", 0))}
    if m.get("pixel_baseline_auroc_6") is not None:
        tags["chexops.trust.pixel_baseline_auroc_6"] = f"{m['pixel_baseline_auroc_6']:.3f}"
    for init, fams in (m.get("probes") or {}).items():
        tags[f"chexops.trust.probe.{init}"] = (f"beats random features for {m['probes_learned'][init]} of "
                                               f"{len(fams)} families")
    return tags
