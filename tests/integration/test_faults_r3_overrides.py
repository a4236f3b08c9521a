"""Round-3 fault audit, #7: `chexops train ... --lr 0.002` on a configuration trained at 0.001 is not "up to date":
it says the run differs and names --restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.training import trained_and_registered, trained_params

from chexops import cli as cli_module
from chexops.config import config_from_dict
from chexops.naming import RunKey

KEY = RunKey("resnet18", "random", 3)


def _raw(root: Path) -> dict:
    return trained_params(root, "r3-lr")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A configuration trained to its whole budget at lr 0.001, evaluated and registered as version 1."""
    return trained_and_registered(tmp_path_factory.mktemp("r3lr"), "r3-lr")


def test_another_lr_on_a_trained_run_says_it_differs_and_names_restart(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    with pytest.raises(SystemExit) as info:
        cli_module.main(["train", "--family", "resnet18", "--init", "random", "--truncate", "3", "--lr", "0.002",
                         "--params", str(trained / "params.yaml"), "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.count("\n") == 1 and "up to date" not in err
    assert "--lr 0.002" in err and "--restart" in err and "--truncate 3" in err


def test_the_stage_does_not_call_a_run_at_another_lr_trained_to_budget(trained, monkeypatch):
    from chexops.stages.configuration import trained_to_budget as _trained_to_budget
    from chexops.stages.context import StageContext

    monkeypatch.chdir(trained)
    config = config_from_dict(_raw(trained))
    assert _trained_to_budget(StageContext(config, KEY, progress=False, lr=1e-3))
    assert not _trained_to_budget(StageContext(config, KEY, progress=False, lr=2e-3))
