"""Built-in truncations: `none` (the whole network) and `drop-last-k` (cut the final k blocks).

Both return the network without its classifier; build_model attaches global average pooling and a new linear
head sized to the kept width, as CheXtransfer did for its truncated models.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from chexops.components.hookspecs import hookimpl
from chexops.components.specs import FamilySpec, TruncationSpec
from chexops.errors import BuildError


def _execution_order(model: Any, blocks: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Top-level modules in forward order, descending one level into the containers that hold the blocks.

    This relies on the same property timm's `features_only` relies on for these architectures: their
    forward pass is the children applied in registration order.
    """
    containers = {b.rsplit(".", 1)[0] for b in blocks if "." in b}
    for name, child in model.named_children():
        if name in containers:
            for sub, module in child.named_children():
                yield f"{name}.{sub}", module
        else:
            yield name, child


def feature_width(features: Any, family: FamilySpec) -> int:
    """Channels the kept network outputs, measured with one small no-grad forward pass."""
    import torch

    was_training = features.training
    features.eval()
    with torch.no_grad():
        out = features(torch.zeros(1, 3, family.min_size, family.min_size))
    features.train(was_training)
    return int(out.shape[1])


def _none(model: Any, family: FamilySpec, depth: int) -> tuple[Any, int]:
    if depth != 0:
        raise BuildError(f"truncation 'none' keeps every block; got depth {depth}. Use 'drop-last-k'.")
    model.reset_classifier(0)  # the network now returns pooled features
    # Measured, not model.num_features: MobileNetV3 keeps a 960 -> 1280 conv_head after the pooling.
    return model, feature_width(model, family)


def _drop_last_k(model: Any, family: FamilySpec, depth: int) -> tuple[Any, int]:
    from torch import nn

    if not 1 <= depth <= family.max_drop:
        raise BuildError(
            f"{family.name} allows dropping 1 to {family.max_drop} blocks (its blocks: "
            f"{', '.join(family.blocks)}); got {depth}. Use a depth in that range, or 0 for the whole network."
        )
    # Every block, not only the last one kept: a misspelled block would otherwise pass at the depths that skip it.
    modules = dict(model.named_modules())
    missing = [b for b in family.blocks if b not in modules]
    if missing:
        raise BuildError(f"{family.name}: blocks {', '.join(missing)} are not modules of {family.timm_name}; fix the "
                         f"family's blocks (`chexops plugins --check` shows the names).")
    last_kept = family.blocks[-1 - depth]
    layers: OrderedDict[str, Any] = OrderedDict()
    for name, module in _execution_order(model, family.blocks):
        layers[name.replace(".", "_")] = module
        if name == last_kept:
            break
    else:
        raise BuildError(f"{family.name}: block {last_kept!r} is not a module of {family.timm_name}.")
    features = nn.Sequential(layers)
    return features, feature_width(features, family)


@hookimpl
def register_truncations(register: Any) -> None:
    register(TruncationSpec("none", _none, "the whole network, classifier replaced", takes_depth=False))
    register(
        TruncationSpec(
            "drop-last-k",
            _drop_last_k,
            "remove the final k blocks at the family's stage boundaries, then pooling and a new linear head",
        )
    )
