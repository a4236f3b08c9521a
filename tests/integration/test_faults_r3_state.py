"""Round-3 fault audit, #1 and #10: a resumable state.pt is untrusted input (runs/ may be shared).

A planted pickle must not run, and random bytes must be one chexops error, for both the training state
(`runs/train/<run>/state.pt`) and the pretraining state (`runs/pretrain/<family>/state.pt`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.training import prepare_study, ssl_config

from chexops import naming
from chexops.errors import ChexopsError, DataError
from chexops.naming import RunKey
from chexops.train.checkpoints import read_state
from chexops.train.pretrain import Pretrainer

FAMILY = "resnet18"
KEY = RunKey(FAMILY, "random", 0)


class _Planted:
    """What an attacker with write access to runs/ could leave: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"fingerprint": _Planted(marker), "model": {}, "optimizer": {}, "keeper": [],
                "torch_rng": torch.get_rng_state(), "progress": {}}, path)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def test_a_planted_pickle_in_a_train_state_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "run" / naming.STATE_FILE, marker)
    with pytest.raises(DataError) as info:
        read_state(tmp_path / "run", KEY)
    assert not marker.exists(), "unpickling state.pt ran code"
    text = _one_line(info.value)
    assert str(tmp_path / "run" / naming.STATE_FILE) in text and "--restart" in text


def test_random_bytes_as_a_train_state_are_one_error(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "run" / naming.STATE_FILE
    path.parent.mkdir()
    for i in range(300):
        data = rng.integers(0, 256, size=int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        if i % 3 == 0:  # a pickle header, so the bytes get past the first opcode
            data = b"\x80\x02" + data
        path.write_bytes(data)
        with pytest.raises(ChexopsError) as info:
            read_state(tmp_path / "run", KEY)
        _one_line(info.value)


def test_a_state_as_training_writes_it_loads_safely(tmp_path):
    """The allow-list admits everything a real state holds: Adam's state after a step, the RNG, the keeper."""
    from chexops.train.checkpoints import Kept, TopKKeeper
    from chexops.train.loop import Progress, _save_state

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    run = tmp_path / "run"
    keeper = TopKKeeper(run, 2, {})
    keeper.kept = [Kept('checkpoints/ckpt-0000000004.pt', 1, 4, 0, 0.5, {'val_auroc': 0.5})]
    _save_state(run, "fp", model, optimizer, keeper, Progress(epoch=1, loss_sum=0.5))  # mid-training: all kept
    state = read_state(run, KEY)
    assert state["fingerprint"] == "fp" and state["progress"]["done"] is False
    assert torch.equal(state["torch_rng"], torch.get_rng_state())
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])  # betas tuples, step tensors: all admitted


# -- pretraining -------------------------------------------------------------------------------------------------

def _config(root: Path):
    return ssl_config(root, "r3-state", patients=40, examples=64)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("r3state")
    return prepare_study(root, _config(root))


def _pretrain(prepared: Path, out: Path, **kwargs):
    out.mkdir(parents=True, exist_ok=True)
    return Pretrainer(_config(prepared), FAMILY, out, progress_bar=False, **kwargs).fit()


def test_a_planted_pickle_in_a_pretrain_state_does_not_run(prepared, tmp_path):
    marker = tmp_path / "pwned"
    _plant(tmp_path / "p" / naming.STATE_FILE, marker)
    with pytest.raises(DataError) as info:
        _pretrain(prepared, tmp_path / "p")
    assert not marker.exists(), "unpickling the pretrain state.pt ran code"
    assert "delete" in _one_line(info.value)


def test_random_bytes_and_foreign_dicts_as_a_pretrain_state_are_one_error(prepared, tmp_path):
    path = tmp_path / "p" / naming.STATE_FILE
    path.parent.mkdir()
    path.write_bytes(b"\x80\x02" + np.random.default_rng(1).bytes(2000))
    with pytest.raises(DataError) as info:
        _pretrain(prepared, tmp_path / "p")
    _one_line(info.value)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(DataError, match="lacks"):
        _pretrain(prepared, tmp_path / "p")


def test_a_killed_pretraining_still_resumes_from_its_safe_state(prepared, tmp_path):
    def die(progress):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _pretrain(prepared, tmp_path / "p", on_save=die)
    assert (tmp_path / "p" / naming.STATE_FILE).is_file()
    result = _pretrain(prepared, tmp_path / "p")
    assert result.examples == 64 and result.backbone.is_file()
