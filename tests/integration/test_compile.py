"""train.compile: the mode resolution, and that a compiled training step computes what the eager one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chexops.config import config_from_dict
from chexops.data.loader import BatchLoader
from chexops.errors import ConfigError
from chexops.models.build import build_model
from chexops.train import compile as step_compile
from chexops.train.runtime import select_runtime
from chexops.train.step import train_step


def test_auto_is_eager_on_the_cpu_and_where_nothing_was_measured(monkeypatch):
    assert step_compile.resolve("auto", "resnet18", "cpu") == "off"
    assert step_compile.resolve("auto", "resnet18", "cuda") == step_compile.MEASURED_CHOICES.get("resnet18", "off")
    monkeypatch.setitem(step_compile.MEASURED_CHOICES, "resnet18", "cudagraphs")
    assert step_compile.resolve("auto", "resnet18", "cuda") == "cudagraphs"
    assert step_compile.resolve("auto", "resnet18", "cpu") == "off"  # a CUDA measurement says nothing of a CPU
    assert step_compile.resolve("compile", "resnet18", "cpu") == "compile"


def test_unusable_modes_are_refused_with_what_to_do():
    with pytest.raises(ConfigError, match="cudagraphs, which needs a CUDA device"):
        step_compile.resolve("cudagraphs", "resnet18", "cpu")
    with pytest.raises(ConfigError, match="train.compile must be one of"):
        step_compile.resolve("fast", "resnet18", "cpu")
    with pytest.raises(ConfigError, match="write it in quotes"):
        config_from_dict({"train": {"compile": False}})  # YAML's bare `off`


def test_compile_mode_is_not_part_of_the_resume_fingerprint():
    eager, compiled = config_from_dict({}), config_from_dict({"train": {"compile": "compile"}})
    assert compiled.train.compile == "compile"
    assert repr(eager.train) == repr(compiled.train)  # loop._fingerprint hashes this repr


def _losses(mode: str, steps: int = 3) -> list[float]:
    rt = select_runtime("cpu", "fp32")
    model, _ = build_model("resnet18", "random", 3, 14, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = step_compile.compile_model(model, mode)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8 * steps, 32, 32), dtype=np.uint8)
    targets = (rng.random((8 * steps, 14)) < 0.3).astype(np.float32)
    batches = BatchLoader(images, targets, np.ones_like(targets), 8, shuffle=False, prefetch=0).batches(0)
    return [float(train_step(net, optimizer, rt, batch, [0.5] * 3, [0.25] * 3)) for batch in batches]


@pytest.mark.slow
def test_compiled_step_gives_the_eager_loss_on_cpu(one_thread):
    eager, compiled = _losses("off"), _losses("compile")
    # same weights, same batches: the losses agree to float32 rounding (inductor fuses and reorders sums)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)
    assert eager[0] != eager[-1]  # the steps did train: the later losses follow updated weights
