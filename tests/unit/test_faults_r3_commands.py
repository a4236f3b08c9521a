"""Round-3 fault audit, #4: a printed `chexops train ... --restart` names the exact configuration.

Advice that drops --fraction (or --strategy) names another run: following it would retrain the full-label run.
"""

from __future__ import annotations

import shlex

import pytest

from chexops.errors import DataError
from chexops.naming import RunKey
from chexops.train.checkpoints import verify_checkpoints


def _advised_command(text: str) -> list[str]:
    command = text.split("`")[1]
    assert command.startswith("chexops train ")
    return shlex.split(command)[2:]


def _parsed(args: list[str]) -> dict:
    from chexops.cli.train import train_command

    return train_command.make_context("train", list(args), resilient_parsing=True).params


@pytest.mark.parametrize("key", [RunKey("resnet18", "random", 0, 0.5), RunKey("resnet18", "random", 0, 0.1, "none"),
                                 RunKey("densenet121", "imagenet", 2)])
def test_the_advice_for_a_lost_checkpoint_names_the_exact_configuration(tmp_path, key):
    with pytest.raises(DataError) as info:
        verify_checkpoints(tmp_path, key, [{"file": "checkpoints/ckpt-0000000064.pt"}])
    params = _parsed(_advised_command(str(info.value)))
    assert RunKey(params["family"], params["initializer"], params["truncate"], params["fraction"],
                  params["strategy"]) == key
    assert params["restart"] is True


def test_the_advice_for_a_run_with_other_settings_names_the_exact_configuration(tmp_path):
    import torch

    from chexops.errors import ConfigError
    from chexops.train.loop import _check_state

    key = RunKey("resnet18", "random", 0, 0.5)
    with pytest.raises(ConfigError) as info:
        _check_state({"fingerprint": "old"}, tmp_path, key, "new", torch.nn.Linear(1, 1))
    params = _parsed(_advised_command(str(info.value)))
    assert params["fraction"] == 0.5 and params["restart"] is True
