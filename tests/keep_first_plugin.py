"""A plugin-registered truncation strategy, as a third party would write one: keep the first k blocks.

Tests register this module as an in-test plugin object, and the slow end-to-end test installs it as a
distribution so `dvc repro` trains a run cut by it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import chexops


def keep_first(model: Any, family: chexops.FamilySpec, depth: int) -> tuple[Any, int]:
    import torch
    from torch import nn

    if not 1 <= depth <= family.max_drop:
        raise chexops.BuildError(f"keep-first keeps 1 to {family.max_drop} blocks of {family.name}; got {depth}.")
    last = family.blocks[depth - 1]
    if "." in last:
        raise chexops.BuildError(f"keep-first cuts only at top-level blocks; {family.name}'s {last!r} is nested.")
    kept = []
    for name, child in model.named_children():
        kept.append((name, child))
        if name == last:
            break
    features = nn.Sequential(OrderedDict(kept))
    with torch.no_grad():
        width = features.eval()(torch.zeros(1, 3, family.min_size, family.min_size)).shape[1]
    return features.train(), int(width)


@chexops.hookimpl
def register_truncations(register: Any) -> None:
    register(chexops.TruncationSpec("keep-first", keep_first, "keep the first k blocks, then pooling and a new head"))
