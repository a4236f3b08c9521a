"""The study's figures as 150-dpi PNGs: AUROC vs ImageNet top-1, AUROC vs parameters, pretraining boost vs
parameters, and truncation curves.

Figures are drawn on matplotlib's object API with an explicit Agg canvas, so importing this module neither
needs a display nor changes the process-wide pyplot backend. Each `figure_*` function returns the Figure, or,
when its inputs are missing, the "not measured: why" reason for the report instead of a figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import Bbox

from chexops.analysis.paper import PAPER_BOOST, PAPER_MEAN_BOOST
from chexops.analysis.tables import (
    MEASURED,
    BoostResult,
    Study,
    TruncationResult,
    initializer_label,
    initializers,
    not_measured,
)

DPI = 150
_COLOURS = {"random": "tab:orange", "imagenet": "tab:blue", "ssl": "tab:green"}
_OTHER = ("tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
_AUROC_LABEL = "test mean AUROC, 6 tasks (95% CI)"
# Label positions tried in turn, in points from the marker: right, then left, then further up or down.
_OFFSETS = ((6, 4), (6, -5), (-6, 4), (-6, -5), (6, 12), (6, -13), (-6, 12), (-6, -13), (6, 20), (6, -21))


def colour(initializer: str, order: list[str]) -> str:
    if initializer in _COLOURS:
        return _COLOURS[initializer]
    return _OTHER[[i for i in order if i not in _COLOURS].index(initializer) % len(_OTHER)]


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")


def _yerr(point: pd.Series, low: pd.Series, high: pd.Series) -> np.ndarray:
    """Asymmetric error bars; a missing CI draws no bar rather than failing the figure."""
    err = np.vstack([point.to_numpy(float) - low.to_numpy(float), high.to_numpy(float) - point.to_numpy(float)])
    return np.nan_to_num(np.clip(err, 0, None), nan=0.0)


def _points(ax: Axes, x: pd.Series, y: pd.Series, yerr: np.ndarray, **style: object) -> None:
    ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3, markersize=5, elinewidth=1, **style)


def _label(ax: Axes, points: list[tuple[float, float, str, str]]) -> None:
    """Label each (x, y, text, colour) point at the first nearby spot inside the axes that overlaps no earlier
    label or marker and is nearer its own point than any other; failing that, the least bad spot. A thin leader
    line joins every label to its point, so no label can be read as another point's.

    Axis limits and scales must be final: placement works in display coordinates.
    """
    renderer = FigureCanvasAgg(ax.figure).get_renderer()
    frame = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for x, y, _, _ in points]
    taken = [Bbox.from_bounds(m[0] - 4, m[1] - 4, 8, 8) for m in markers]
    for x, y, text, c in sorted(points, key=lambda p: (p[0], p[1])):
        own = ax.transData.transform((x, y))
        scored = []
        for k, (dx, dy) in enumerate(_OFFSETS):
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color=c,
                              ha="left" if dx > 0 else "right", va="center")
            box = ann.get_window_extent(renderer)
            ann.remove()
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            # a label nearer another marker than its own reads as that marker's label
            centre = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
            nearest_other = min((np.linalg.norm(centre - m) for m in markers if not np.allclose(m, own)),
                                default=np.inf)
            misleading = nearest_other < np.linalg.norm(centre - own)
            scored.append((4 * (not inside) + 2 * misleading + any(box.overlaps(t) for t in taken), k, box))
        _, k, box = min(scored, key=lambda s: (s[0], s[1]))
        dx, dy = _OFFSETS[k]
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color=c,
                    ha="left" if dx > 0 else "right", va="center",
                    arrowprops={"arrowstyle": "-", "color": c, "lw": 0.5, "alpha": 0.6, "shrinkA": 0, "shrinkB": 3})
        taken.append(box)


def _log_axis(axis: Any) -> None:
    """Log scale with plain tick labels at 1, 2, 5 x 10^k: '20' reads better than '2 x 10^1'."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _rho_text(sp: pd.DataFrame, analysis: str, init: str) -> str:
    row = sp[(sp["analysis"] == analysis) & (sp["initializer"] == init)]
    if row.empty:
        return "Spearman: not computed"
    r = row.iloc[0]
    if r["status"] != MEASURED:
        return f"Spearman {r['status']}"
    p = "p < 0.001" if r["p"] < 0.001 else f"p = {r['p']:.3f}"
    return f"Spearman rho = {r['rho']:.3f} ({p}, n = {r['n']})"


def _freeze(ax: Axes) -> None:
    """Fix the autoscaled limits (with room for labels) so label placement in display coordinates stays valid."""
    ax.margins(x=0.08, y=0.05)
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())


def _labelled(sub: pd.DataFrame, x: pd.Series, y: str, c: str) -> list[tuple[float, float, str, str]]:
    return [(float(a), float(b), str(f), c) for a, b, f in zip(x, sub[y], sub["family"], strict=True)]


def figure_auroc_vs_top1(study: Study, sp: pd.DataFrame) -> Figure | str:
    """Two panels (random, ImageNet init): AUROC vs the architecture's ImageNet top-1, full models."""
    full = study.full[np.isfinite(study.full["imagenet_top1"]) & np.isfinite(study.full["auroc_6"])]
    if full.empty:
        return not_measured("no full run has both an ImageNet top-1 and a test AUROC")
    inits = initializers(study)
    fig = Figure(figsize=(6 * len(inits), 5.5))
    axes = fig.subplots(1, len(inits), sharey=True, sharex=True)
    fig.subplots_adjust(top=0.8, wspace=0.08)
    for ax, init in zip(axes, inits, strict=True):
        sub = full[full["initializer"] == init]
        ax.set_title(f"{init} initialization\n{_rho_text(sp, 'top1_vs_auroc', init)}", fontsize=10)
        ax.set_xlabel("ImageNet top-1 accuracy of the architecture (%)")
        ax.grid(alpha=0.3)
        if sub.empty:
            ax.text(0.5, 0.5, not_measured(f"no full {init} runs"), transform=ax.transAxes, ha="center")
        else:
            _points(ax, sub["imagenet_top1"], sub["auroc_6"], _yerr(sub["auroc_6"], sub["auroc_6_ci_low"],
                    sub["auroc_6_ci_high"]), color=colour(init, [init]))
    for ax, init in zip(axes, inits, strict=True):
        _freeze(ax)
        sub = full[full["initializer"] == init]
        _label(ax, _labelled(sub, sub["imagenet_top1"], "auroc_6", colour(init, [init])))
    axes[0].set_ylabel(_AUROC_LABEL)
    fig.suptitle(f"{study.name}: test AUROC vs ImageNet top-1 (full models)\n{study.data}", fontsize=11)
    return fig


def figure_auroc_vs_params(study: Study, sp: pd.DataFrame) -> Figure | str:
    """AUROC vs parameter count (log x), full models, coloured by initializer."""
    full = study.full[np.isfinite(study.full["auroc_6"])]
    if full.empty:
        return not_measured("no full run has a test AUROC")
    fig = Figure(figsize=(10, 6.5))
    ax = fig.subplots()
    order = list(dict.fromkeys(full["initializer"]))
    labels = []
    for k, init in enumerate(order):
        sub = full[full["initializer"] == init]
        # Both initializers of a family share its parameter count; a small shift keeps their CI bars apart.
        x = sub["parameters"] / 1e6 * 10 ** (0.01 * (k - (len(order) - 1) / 2))
        _points(ax, x, sub["auroc_6"], _yerr(sub["auroc_6"], sub["auroc_6_ci_low"], sub["auroc_6_ci_high"]),
                color=colour(init, order), label=f"{init}: {_rho_text(sp, 'params_vs_auroc', init)}")
        labels += _labelled(sub, x, "auroc_6", colour(init, order))
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel("parameters (millions, log scale; initializers shifted slightly apart)")
    ax.set_ylabel(_AUROC_LABEL)
    ax.set_title(f"{study.name}: test AUROC vs model size (full models)\n{study.data}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    _freeze(ax)
    _label(ax, labels)
    return fig


def figure_boost_vs_params(boost: BoostResult, sp: pd.DataFrame, study: Study | None = None) -> Figure | str:
    """Pretraining boost (AUROC pretrained - baseline, e.g. imagenet - random) per family vs parameters, with
    paired-bootstrap CI bars."""
    c = boost.comparison
    pts = boost.per_family[boost.per_family["status"] == MEASURED]
    if pts.empty:
        return not_measured(f"no family has both a full {c.pretrained} and a full {c.baseline} run")
    fig = Figure(figsize=(10, 6.5))
    ax = fig.subplots()
    ax.axhline(0.0, color="grey", lw=1, ls="--", label="no boost")
    x = pts["parameters"] / 1e6
    _points(ax, x, pts["boost"], _yerr(pts["boost"], pts["ci_low"], pts["ci_high"]), color="tab:blue",
            label="boost (95% paired-bootstrap CI)")
    m = boost.mean
    ax.axhline(m["boost"], color="tab:blue", lw=1, alpha=0.5, label=f"mean boost {m['boost']:+.3f}")
    if c.name == "imagenet - random":  # the paper's boosts for the families it reports, beside the measured ones
        paper = pts[pts["family"].isin(list(PAPER_BOOST))]
        if not paper.empty:
            ax.scatter(paper["parameters"] / 1e6, [PAPER_BOOST[f] for f in paper["family"]], marker="D",
                       facecolors="none", edgecolors="0.3", s=30, label="paper's boost (Ke et al. 2021, CheXpert)")
        ax.axhline(PAPER_MEAN_BOOST, color="0.3", lw=1, ls=":", label=f"paper's mean boost {PAPER_MEAN_BOOST:+.3f}")
    ax.set_xscale("log")
    _log_axis(ax.xaxis)
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel(f"AUROC({c.pretrained} init) - AUROC({c.baseline} init)")
    what = (f"{initializer_label(study, c.pretrained)} vs {initializer_label(study, c.baseline)}" if study else c.name)
    data = f"\n{study.data}" if study else ""
    ax.set_title(f"Pretraining boost vs model size: {what}\n{_rho_text(sp, 'boost_vs_params', c.name)}{data}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    _freeze(ax)
    _label(ax, _labelled(pts, x, "boost", "tab:blue"))
    return fig


def _truncation_series(study: Study) -> list[tuple[str, pd.DataFrame]]:
    """Per family+initializer with truncated runs: its runs by blocks dropped, the full model (if any) at 0."""
    runs = study.runs
    keys = runs.loc[runs["depth"] > 0, ["family", "initializer"]].drop_duplicates().itertuples(index=False)
    out = []
    for family, init in keys:
        sub = runs[(runs["family"] == family) & (runs["initializer"] == init)].sort_values("depth")
        out.append((f"{family} ({init})", sub))
    return out


def figure_truncation(study: Study, trunc: TruncationResult) -> Figure | str:
    """AUROC vs blocks dropped per family (left) and parameters vs blocks dropped (right, log y)."""
    series = _truncation_series(study)
    if not series:
        return not_measured("no truncated runs")
    fig = Figure(figsize=(13, 5.5))
    auc_ax, par_ax = fig.subplots(1, 2)
    fig.subplots_adjust(top=0.84, wspace=0.25)
    for k, (label, sub) in enumerate(series):
        c = f"C{k % 10}"
        # Families often share depths and similar AUROCs; a small shift keeps their CI bars apart.
        err = _yerr(sub["auroc_6"], sub["auroc_6_ci_low"], sub["auroc_6_ci_high"])
        auc_ax.errorbar(sub["depth"] + 0.04 * (k - (len(series) - 1) / 2), sub["auroc_6"], yerr=err, fmt="o-",
                        capsize=3, color=c, label=label)
        par_ax.plot(sub["depth"], sub["parameters"] / 1e6, "o-", color=c, label=label)
    all_depths = pd.concat([sub["depth"] for _, sub in series])
    depths = list(range(int(all_depths.min()), int(all_depths.max()) + 1))
    gain = trunc.summary.get("mean_parameter_ratio")
    gain_text = (f"{gain:.2f}x fewer parameters on average without a significant drop" if gain is not None
                 else trunc.summary["status"])
    auc_ax.set_title(f"AUROC after removing final blocks\n({gain_text})", fontsize=10)
    auc_ax.set_ylabel(_AUROC_LABEL)
    par_ax.set_title("Parameters after removing final blocks", fontsize=10)
    par_ax.set_yscale("log")
    _log_axis(par_ax.yaxis)
    par_ax.set_ylabel("parameters (millions, log scale)")
    for ax in (auc_ax, par_ax):
        ax.set_xlabel("blocks dropped (0 = full model; families shifted slightly apart)" if ax is auc_ax
                      else "blocks dropped (0 = full model)")
        ax.set_xticks(depths)
        ax.set_xlim(depths[0] - 0.5, depths[-1] + 0.5)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(f"{study.name}: truncated models", fontsize=12)
    return fig


def figure_label_fractions(study: Study, fractions: pd.DataFrame) -> Figure | str:
    """Mean AUROC over families vs the fraction of training labels, one line per initializer, with CIs."""
    means = fractions[fractions["family"] == "mean"]
    if fractions.empty or means["label_fraction"].nunique() < 2:
        return not_measured("fewer than two label fractions (grid.label_fractions)")
    fig = Figure(figsize=(9, 6))
    ax = fig.subplots()
    order = initializers(study)
    for init, sub in means.groupby("initializer", sort=False):
        sub = sub.sort_values("label_fraction")
        ax.errorbar(sub["label_fraction"], sub["auroc"], yerr=_yerr(sub["auroc"], sub["ci_low"], sub["ci_high"]),
                    fmt="o-", capsize=3, color=colour(init, order),
                    label=f"{init}: {initializer_label(study, init)} ({sub['run'].iloc[0]})")
    ax.set_xscale("log")
    ax.set_xticks(sorted(means["label_fraction"].unique()))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("fraction of training labels (patients; log scale)")
    ax.set_ylabel("mean over families of " + _AUROC_LABEL)
    ax.set_title(f"{study.name}: AUROC vs label fraction\n{study.data}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return fig


def write_figures(
    study: Study, sp: pd.DataFrame, boosts: list[BoostResult], trunc: TruncationResult, out_dir: Path,
    fractions: pd.DataFrame | None = None,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every figure into out_dir; returns (name -> PNG path, name -> 'not measured: why' for skipped)."""
    figures: dict[str, Figure | str] = {
        "auroc_vs_top1": figure_auroc_vs_top1(study, sp),
        "auroc_vs_params": figure_auroc_vs_params(study, sp),
    }
    for b in boosts:  # boost_vs_params (the paper's imagenet - random), boost_vs_params_ssl-random, ...
        c = b.comparison
        name = "boost_vs_params" if c.name == "imagenet - random" else f"boost_vs_params_{c.pretrained}-{c.baseline}"
        figures[name] = figure_boost_vs_params(b, sp, study)
    figures["truncation"] = figure_truncation(study, trunc)
    if fractions is not None and fractions["label_fraction"].nunique() > 1:
        figures["label_fractions"] = figure_label_fractions(study, fractions)
    written, skipped = {}, {}
    for name, fig in figures.items():
        path = Path(out_dir) / f"{name}.png"
        if isinstance(fig, Figure):
            _save(fig, path)
            written[name] = path
        else:
            # A figure left from an earlier report would contradict this one's "not measured" entry.
            path.unlink(missing_ok=True)
            skipped[name] = fig
    return written, skipped
