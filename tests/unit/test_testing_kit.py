"""chexops.testing, the public kit for plugin authors: the fixture loads exactly what a test names, and the deep
checks accept a good plugin and reject a broken one with a one-line error; and a plugin's truncation strategy
is selectable per run, named in the run only when it is not the default."""

from __future__ import annotations

import types

import numpy as np
import pytest
from fixtures import keep_first_plugin

import chexops
from chexops.config import config_from_dict, grid_runs, validate
from chexops.errors import ConfigError, PluginError, UnknownComponentError
from chexops.naming import RunKey
from chexops.testing import check_component, check_family


def test_the_fixture_loads_only_what_it_is_given(chexops_plugins, monkeypatch):
    monkeypatch.delenv("CHEXOPS_LOAD_PLUGINS")  # every installed plugin would load; the fixture's choice wins
    loaded = chexops_plugins(keep_first_plugin)
    strategy = loaded.component("truncations", "keep-first")
    assert (strategy.plugin, strategy.distribution) == ("fixtures.keep_first_plugin", "(in-test)")
    assert loaded.names("truncations") == ["none", "drop-last-k", "keep-first"]
    assert loaded.plugins()[-1] == "fixtures.keep_first_plugin"
    with pytest.raises(UnknownComponentError, match=r"Available: none, drop-last-k\. "):
        chexops_plugins().component("truncations", "keep-first")
    with pytest.raises(PluginError, match="not an installed chexops plugin"):
        chexops_plugins("chexops-not-installed")


def test_a_plugin_strategy_passes_its_checks(chexops_plugins):
    chexops_plugins(keep_first_plugin)
    report = check_component("truncations", "keep-first")
    assert sorted(report.parameters) == [1, 2, 3]
    assert report.parameters[1] < report.parameters[2] < report.parameters[3]  # keeping more blocks keeps more


def test_check_family_reports_parameters_per_depth(chexops_plugins):
    chexops_plugins()
    report = check_family("resnet18")
    counts = [report.parameters[d] for d in range(4)]
    assert counts == sorted(counts, reverse=True) and len(set(counts)) == 4
    assert counts[0] == sum(p.numel() for p in chexops.build_model("resnet18")[0].parameters())


def test_broken_components_fail_their_checks_in_one_line(chexops_plugins):
    def bad_policy(labels):
        return np.nan_to_num(labels), np.ones_like(labels)  # float64 and -1 left in the targets

    def wrong_width(model, family, depth):
        features, width = keep_first_plugin.keep_first(model, family, depth)
        return features, width + 1

    class Broken:
        @chexops.hookimpl
        def register_label_policies(self, register):
            register(chexops.LabelPolicySpec("u-bad", bad_policy))

        @chexops.hookimpl
        def register_truncations(self, register):
            register(chexops.TruncationSpec("off-by-one", wrong_width))

    chexops_plugins(Broken())
    with pytest.raises(PluginError) as info:
        check_component("label-policies", "u-bad")
    assert str(info.value).startswith("plugin 'Broken' ((in-test)): label policy 'u-bad': targets has shape")
    assert "\n" not in str(info.value)
    with pytest.raises(PluginError, match="reported width 65.*return the channel count"):
        check_component("truncations", "off-by-one")


def test_a_bad_family_is_refused_when_the_plugin_loads(chexops_plugins):
    plugin = types.SimpleNamespace(register_families=chexops.hookimpl(lambda register: register(chexops.FamilySpec(
        "tiny", "resnet18", "tv_in1k", "Test", None, ("layer1", "layer2"), max_drop=2))))
    with pytest.raises(PluginError, match="family 'tiny': max_drop is 2 but there are only 2 blocks"):
        chexops_plugins(plugin)


# --- the strategy in runs --------------------------------------------------------------------------------------

def test_the_default_strategy_keeps_every_existing_name():
    assert RunKey("resnet18", "random", 1).name == "resnet18/random/drop-1"
    assert RunKey("resnet18", "random", 1, strategy="drop-last-k") == RunKey("resnet18", "random", 1)
    key = RunKey("resnet18", "random", 2, strategy="keep-first")
    assert key.name == "resnet18/random/keep-first-2" and key != RunKey("resnet18", "random", 2)
    assert key.slug == RunKey("resnet18", "random", 2).slug == "resnet18__random__drop-2__labels-1.0"  # DVC's folder


def grid(*truncated: dict) -> dict:
    return {"data": {"image_size": 64}, "grid": {"families": ["resnet18"], "initializers": ["random"],
                                                 "truncated": list(truncated)}}


def test_the_grid_selects_a_plugin_strategy_per_truncated_run(chexops_plugins):
    chexops_plugins(keep_first_plugin)
    config = validate(config_from_dict(grid({"family": "resnet18", "depth": 1, "init": "random"},
                                            {"family": "resnet18", "depth": 2, "init": "random",
                                             "strategy": "keep-first"})))
    names = [RunKey(*r).name for r in grid_runs(config)]
    assert names == ["resnet18/random/full", "resnet18/random/drop-1", "resnet18/random/keep-first-2"]


@pytest.mark.parametrize("entry,message", [
    ({"strategy": "keep-frist"}, "unknown truncation 'keep-frist'.*Did you mean: keep-first"),
    ({"strategy": "none"}, "strategy 'none', which takes no depth"),
    ({"strategy": "keep-first", "depth": 4}, "allows dropping 1 to 3 blocks"),
])
def test_the_grid_refuses_a_strategy_it_cannot_run(chexops_plugins, entry, message):
    chexops_plugins(keep_first_plugin)
    with pytest.raises((ConfigError, UnknownComponentError), match=message):
        validate(config_from_dict(grid({"family": "resnet18", "depth": 2, "init": "random"} | entry)))


def test_two_strategies_cannot_share_a_run_folder(chexops_plugins):
    chexops_plugins(keep_first_plugin)
    entries = [{"family": "resnet18", "depth": 2, "init": "random", "strategy": s} for s in ("drop-last-k",
                                                                                              "keep-first")]
    with pytest.raises(ConfigError, match="strategies drop-last-k and keep-first.*give them other depths"):
        validate(config_from_dict(grid(*entries)))


def test_build_model_goes_through_the_named_strategy(chexops_plugins):
    chexops_plugins(keep_first_plugin)
    _, kept = chexops.build_model("resnet18", truncate=1, truncation="keep-first")
    _, dropped = chexops.build_model("resnet18", truncate=3)
    _, default = chexops.build_model("resnet18", truncate=3, truncation="drop-last-k")
    assert (kept.truncation, kept.truncation_strategy, kept.blocks_dropped) == ("keep-first-1", "keep-first", [])
    assert (dropped.truncation, dropped.truncation_strategy) == ("drop-3", "drop-last-k")
    assert kept.parameters == dropped.parameters == default.parameters  # layer1 alone, cut from either end
    with pytest.raises(chexops.BuildError, match="cuts at a depth of 1 or more"):
        chexops.build_model("resnet18", truncation="keep-first")
