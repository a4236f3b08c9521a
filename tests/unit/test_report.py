"""chexops.analysis.report.write_report: files, metrics.json, plots CSVs, figures and study.md on hand-made studies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fixtures.analysis import FAMILIES, RHO_IMAGENET, B, write_full_grid, write_run, write_truncations
from PIL import Image
from scipy import stats

from chexops.analysis.figures import (
    figure_auroc_vs_params,
    figure_auroc_vs_top1,
    figure_boost_vs_params,
    figure_truncation,
)
from chexops.analysis.report import write_report
from chexops.analysis.tables import Study, load_runs, pretraining_boost, spearman, truncation_table
from chexops.data.labels import STUDY_TASKS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ("auroc_vs_top1", "auroc_vs_params", "boost_vs_params", "truncation")


def _strict_json(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}; dvc metrics needs finite numbers")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("runs")
    return load_runs(write_full_grid(root) + write_truncations(root), name="toy study")


@pytest.fixture(scope="module")
def full_report(toy_study: Study, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    """Written once for the module: drawing the figures dominates the run time of these tests."""
    out = tmp_path_factory.mktemp("reports")
    return write_report(toy_study, out, n_resamples=B, seed=0), out


def test_writes_every_table_figure_and_plot(full_report) -> None:
    paths, out = full_report
    for name in ("main_table", "spearman", "boost", "size_differences", "truncation", "metrics", "study_md"):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    for name in FIGURES:
        png = paths[f"figure/{name}"]
        assert png == out / "figures" / f"{name}.png" and png.read_bytes()[:8] == PNG_MAGIC
        with Image.open(png) as im:
            assert min(im.size) > 500, f"{name} is {im.size}, too small to read at 150 dpi"
            assert len(np.unique(np.asarray(im.convert("L")))) > 10, f"{name} looks blank"
    plots = pd.read_csv(paths["plots/auroc_vs_params"])
    assert list(plots.columns) == ["run", "family", "initializer", "parameters", "auroc", "ci_low", "ci_high"]
    assert len(plots) == 8 and (plots["ci_low"] <= plots["auroc"]).all()
    assert (plots["auroc"] <= plots["ci_high"]).all()
    trunc = pd.read_csv(paths["plots/truncation"])
    assert sorted(trunc["blocks_dropped"]) == [0, 1, 2] and set(trunc["initializer"]) == {"imagenet"}


def test_spearman_csv_equals_scipy_exactly(full_report) -> None:
    paths, _ = full_report
    sp = pd.read_csv(paths["spearman"]).set_index(["analysis", "initializer"])
    main = pd.read_csv(paths["main_table"])
    im = main[(main["initializer"] == "imagenet") & (main["depth"] == 0)]
    expected = stats.spearmanr(im["parameters"], im["auroc_6"])
    assert sp.loc[("params_vs_auroc", "imagenet"), "rho"] == expected.statistic
    assert sp.loc[("params_vs_auroc", "imagenet"), "p"] == expected.pvalue
    assert expected.statistic == pytest.approx(RHO_IMAGENET, abs=1e-12)


def test_metrics_json_is_finite_and_holds_the_headlines(full_report) -> None:
    paths, _ = full_report
    m = _strict_json(paths["metrics"])
    boost = pd.read_csv(paths["boost"])
    trunc = pd.read_csv(paths["truncation"])
    assert m["n_runs"] == 10 and set(m["runs"]) >= {"alpha/random/full", "alpha/imagenet/drop-last-2"}
    assert m["spearman"]["top1_vs_auroc/random"]["rho"] == 1.0
    assert m["boost"]["mean"] == pytest.approx(boost["boost"].mean(), abs=1e-12) and m["boost"]["mean_ci_low"] > 0
    # drop-1 (2x fewer parameters, no drop) is the only run without a significant drop; drop-2 (4x) lost AUROC
    assert list(trunc["parameter_ratio"]) == [2.0, 4.0] and list(trunc["significant_drop"]) == [False, True]
    assert m["truncation"]["mean_parameter_ratio_without_significant_drop"] == 2.0
    assert m["truncation"]["n_significant_drops"] == 1
    assert set(m["size_differences"]) == {"G1/random", "G1/imagenet", "G2/random", "G2/imagenet"}


def test_study_md_ties_it_together(full_report) -> None:
    paths, out = full_report
    md = paths["study_md"].read_text()
    assert md.startswith("# toy study: CheXtransfer analysis")
    assert ("Data: **test source synthetic (runs evaluated before chexops described their data)**; "
            "200 test studies") in md and "Runs: 10 (8 full, 2 truncated)" in md
    # the paper's reference values beside the measured ones
    for ref in ("| 0.082 | 0.762 |", "| 0.059 | 0.829 |", "| 0.791 | not reported |", "| 0.565 | 0.023 |",
                "| -0.718 | 0.002 |", "(paper: +0.015)", "Paper: 3.25x on average, no statistically significant",
                "inception_v3 0.866 / mobilenetv2 0.814", "ResNet/random: ResNet101 - ResNet18 = +0.005",
                "EfficientNet/imagenet: EfficientNetB3 - B0 = -0.006", "mobilenetv2 +0.040", "inception_v4 -0.002"):
        assert ref in md, ref
    assert "| params_vs_auroc | imagenet | 4 | 0.600 |" in md
    assert "| top1_vs_auroc | random | 4 | 1.000 |" in md
    for name in FIGURES:
        assert f"](figures/{name}.png)" in md and (out / "figures" / f"{name}.png").is_file()
    assert "Nothing: every analysis had its inputs." in md
    assert ("Summary: **2.00x** fewer parameters on average (median 2.00x) over the 1 of 2 truncated runs without a "
            "significant AUROC drop; 1 dropped significantly") in md
    assert "Definition: parameter ratio = full model's parameters / truncated model's parameters" in md
    assert "| alpha | imagenet | 2 | 1 | 2.00x |" in md  # the deepest truncation without a significant drop


def test_missing_inputs_are_listed_not_crashed_on(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "boost_vs_params.png").write_bytes(b"stale figure from an earlier report")
    study = load_runs(write_full_grid(tmp_path / "runs", inits=("random",)))
    paths = write_report(study, out, n_resamples=B)
    md = paths["study_md"].read_text()
    section = md.split("## Not measured", 1)[1]
    for entry in ("- Spearman top1_vs_auroc (imagenet): not measured: no full imagenet runs",
                  "- pretraining boost imagenet - random alpha: not measured: no full alpha/imagenet run",
                  "- mean pretraining boost imagenet - random: not measured: no family has both",
                  "- truncation: not measured: no truncated runs",
                  "- figure boost_vs_params: not measured: no family has both",
                  "- figure truncation: not measured: no truncated runs",
                  "- best/worst imagenet model: not measured: no full imagenet runs"):
        assert entry in section, entry
    assert "(ImageNet)" in section and "CHEXOPS_WEIGHTS_DIR" in section  # and how to provide the weights
    assert not (out / "figures" / "boost_vs_params.png").exists() and "figure/boost_vs_params" not in paths
    assert "figure/auroc_vs_top1" in paths  # the random panel still has its points
    assert pd.read_csv(paths["truncation"])["status"].tolist() == ["not measured: no truncated runs"]
    m = _strict_json(paths["metrics"])
    assert "boost" not in m and "imagenet - random" not in json.dumps(m["spearman"])


def test_one_run_only(tmp_path: Path) -> None:
    paths = write_report(load_runs([write_run(tmp_path, "alpha", "random", 0.2)]), tmp_path / "r", n_resamples=B)
    md = paths["study_md"].read_text()
    assert "Runs: 1 (1 full, 0 truncated)" in md
    assert "Spearman params_vs_auroc (random): not measured: 1 point(s)" in md
    assert ("largest - smallest within a group: not measured: no group has two full families of one "
            "initializer") in md
    assert _strict_json(paths["metrics"])["runs"]["alpha/random/full"]["mean_auroc_6"] > 0.5


def test_paper_values_sit_beside_matching_families(tmp_path: Path) -> None:
    dirs = [write_run(tmp_path, f, init, sep, params=n, group="ResNet", top1=t)
            for f, n, t in (("resnet18", 11_700_000, 69.8), ("resnet101", 44_500_000, 77.4))
            for init, sep in (("random", 0.3), ("imagenet", 1.5))]
    md = write_report(load_runs(dirs), tmp_path / "r", n_resamples=B)["study_md"].read_text()
    size_row = next(line for line in md.splitlines() if line.startswith("| ResNet | random |"))
    assert "| resnet101 - resnet18 |" in size_row and size_row.endswith("| ResNet101 - ResNet18 = +0.005 |")
    boost_row = next(line for line in md.splitlines() if line.startswith("| resnet101 | 44.50 |"))
    assert boost_row.endswith("| +0.013 |")


def _readable(ax) -> None:
    assert ax.get_title() and ax.get_xlabel(), "every panel needs a title and an x label"
    assert ax.containers and all(c.has_yerr for c in ax.containers), "points need CI error bars"


def test_figures_label_every_point_with_its_family(toy_study: Study) -> None:
    sp, boost = spearman(toy_study), pretraining_boost(toy_study, B)
    fig = figure_auroc_vs_top1(toy_study, sp)
    for ax, rho in zip(fig.axes, ("rho = 1.000", "rho = 0.600"), strict=True):
        _readable(ax)
        assert sorted(t.get_text() for t in ax.texts) == sorted(FAMILIES) and rho in ax.get_title()
    assert fig.axes[0].get_ylabel()
    ax = figure_auroc_vs_params(toy_study, sp).axes[0]
    _readable(ax)
    assert ax.get_xscale() == "log" and sorted(t.get_text() for t in ax.texts) == sorted(list(FAMILIES) * 2)
    assert [t.get_text()[:9] for t in ax.get_legend().get_texts()] == ["random: S", "imagenet:"]
    ax = figure_boost_vs_params(boost, sp).axes[0]
    _readable(ax)
    assert sorted(t.get_text() for t in ax.texts) == sorted(FAMILIES)
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.get_lines()), "boost figure needs its zero line"
    auc_ax, par_ax = figure_truncation(toy_study, truncation_table(toy_study, B)).axes
    _readable(auc_ax)
    assert par_ax.get_yscale() == "log" and [t.get_text() for t in auc_ax.get_legend().get_texts()] == [
        "alpha (imagenet)"]


def test_figures_without_inputs_give_reasons(tmp_path: Path) -> None:
    study = load_runs([write_run(tmp_path, "alpha", "random", 0.2)])
    assert figure_boost_vs_params(pretraining_boost(study, B), spearman(study)) == (
        "not measured: no family has both a full imagenet and a full random run")
    assert figure_truncation(study, truncation_table(study, B)) == "not measured: no truncated runs"
    panels = figure_auroc_vs_top1(study, spearman(study)).axes
    assert [t.get_text() for t in panels[1].texts] == ["not measured: no full imagenet runs"]


def test_study_md_warns_when_the_headline_mean_covers_fewer_tasks(tmp_path: Path) -> None:
    split = {"source": "synthetic patient hold-out (0.1 of train patients, seed0)", "images": 230, "studies": 200,
             "patients": 150, "views": {"frontal": 230, "lateral": 0}, "patients_with_several_studies": 30,
             "max_studies_per_patient": 3, "images_unreadable": 0,
             "dropped": [{"studies": 4, "why": "no frontal image (data.frontal_only is true)"}]}
    extra = {"test_split": split, "reference_top1": 71.5, "reference_top1_source": "torchvision IMAGENET1K_V1"}
    dirs = [write_run(tmp_path / "runs", f, "random", 0.3, single_class=("Cardiomegaly",), eval_fields=extra)
            for f in ("alpha", "beta")]
    study = load_runs(dirs)
    assert study.headline_tasks == tuple(t for t in STUDY_TASKS if t != "Cardiomegaly")
    md = write_report(study, tmp_path / "reports", n_resamples=B)["study_md"].read_text()
    assert ("> **Warning:** the headline is the mean AUROC over 5 of the 6 study tasks (Cardiomegaly undefined: "
            "one class only in the test studies)") in md
    # the test split as recorded, with what it lost and why
    assert "| studies dropped | 4: no frontal image (data.frontal_only is true) |" in md
    assert "| patients with several studies | 30 (up to 3 studies each) |" in md
    # the reference top-1 beside timm's, and the p-value rule
    assert "top-1 (timm tag) | top-1 (paper's weights)" in md and "| 70.00 | 71.50 |" in md
    assert "the paper's weights came from torchvision IMAGENET1K_V1" in md
    assert "a single task's AUROC comparison (`chexops promote`) with DeLong's test" in md


@pytest.mark.slow  # builds the 22 networks to count their parameters
def test_the_paper_profiles_truncations_render_the_papers_summary(tmp_path: Path) -> None:
    """The paper profile's 18 truncations with their real parameter counts (the pinned timm models, built here), on
    synthetic predictions: up to 2 blocks dropped the predictions equal the full model's, beyond that they are
    clearly worse. The summary is the mean parameter ratio over the truncations without a significant drop, the
    paper's definition, not the mean over all 18 (which the tiny drop-6 networks would push into the hundreds)."""
    from chexops.config import grid_runs, load_config
    from chexops.models.build import build_model

    config = load_config(Path(__file__).parents[2] / "pipelines" / "profiles" / "paper.yaml")
    truncated = [(f, i, d) for f, i, d, _, _ in grid_runs(config) if d > 0]
    assert len(truncated) == 18
    params = {(f, d): build_model(f, "random", d, 14)[1].parameters
              for f in {f for f, _, _ in truncated} for d in [0] + [d for g, _, d in truncated if g == f]}
    dirs = [write_run(tmp_path, f, "imagenet", 1.6, params=params[(f, 0)]) for f in {f for f, _, _ in truncated}]
    dirs += [write_run(tmp_path, f, i, 1.6 if d <= 2 else 0.2, depth=d, params=params[(f, d)])
             for f, i, d in truncated]
    paths = write_report(load_runs(dirs), tmp_path / "reports", n_resamples=B)
    table = pd.read_csv(paths["truncation"])
    kept = table[table["blocks_dropped"] <= 2]
    assert not kept["significant_drop"].any() and table[table["blocks_dropped"] > 2]["significant_drop"].all()
    expected = np.mean([params[(f, 0)] / params[(f, d)] for f, _, d in truncated if d <= 2])
    m = _strict_json(paths["metrics"])["truncation"]
    assert m["mean_parameter_ratio_without_significant_drop"] == pytest.approx(expected, rel=1e-12)
    assert m["n_without_significant_drop"] == 8 and m["n_significant_drops"] == 10
    everything = np.mean([params[(f, 0)] / params[(f, d)] for f, _, d in truncated])
    assert everything > 100 > expected  # the old all-runs mean would have read like this
    md = paths["study_md"].read_text()
    assert f"Summary: **{expected:.2f}x** fewer parameters on average" in md
    assert "Paper: 3.25x on average, no statistically significant AUC drop." in md
    assert "Definition: parameter ratio = full model's parameters / truncated model's parameters" in md
    for family in ("densenet121", "mnasnet", "resnet18", "efficientnet_b0"):
        assert f"| {family} | imagenet | " in md and " | 2 | " in md.split(f"| {family} | imagenet | ", 1)[1][:30]
