"""Structural spec checks, run when a plugin registers a spec: names, fields, types, block lists; no torch.

A FamilySpec mistake (a misspelled block, blocks out of order, a wrong timm name or tag) otherwise shows up
only when a study reaches the depth or the initializer that uses it, as a traceback from timm or torch. The
structural checks run on every registration and need no torch; the deep checks (`chexops plugins --check`,
`chexops.testing.check_family`) build the network on the meta device, so every depth of every family is
exercised in seconds without allocating weights. Every failure is one line naming the plugin, the spec and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chexops.components.specs import FamilySpec, InitializerSpec, LabelPolicySpec, TruncationSpec
from chexops.errors import PluginError

# Names end up in run names, folder names and registered model names (`family/init/truncation`).
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REFERENCE_FAMILY = "resnet18"  # built in, small, four plain stages: what strategies and initializers are tried on


def where(kind_noun: str, name: Any, plugin: Any) -> str:
    return f"plugin {plugin.name!r} ({plugin.distribution}): {kind_noun} {name!r}"


def fail(kind_noun: str, spec: Any, plugin: Any, problem: str, fix: str) -> PluginError:
    return PluginError(f"{where(kind_noun, getattr(spec, 'name', '?'), plugin)}: {problem}; {fix}.")


def check_structure(spec: Any, kind_noun: str, plugin: Any) -> None:
    """Types and ranges of a spec as registered; raises a one-line PluginError."""
    def need(ok: bool, problem: str, fix: str) -> None:
        if not ok:
            raise fail(kind_noun, spec, plugin, problem, fix)

    name = spec.name
    need(isinstance(name, str) and bool(NAME.fullmatch(name)), f"the name {name!r} is not usable in run names",
         "use letters, digits, '_', '.' and '-' only, starting with a letter or digit")
    if isinstance(spec, FamilySpec):
        _check_family_structure(spec, need)
    elif isinstance(spec, InitializerSpec):
        need(callable(spec.apply), f"apply is {spec.apply!r}, not a function",
             "pass apply(model, family, argument, context) -> chexops.InitReport")
        need(isinstance(spec.pretrained, bool) and isinstance(spec.needs_argument, bool),
             "pretrained and needs_argument must be True or False", "pass booleans")
    elif isinstance(spec, TruncationSpec):
        need(callable(spec.apply), f"apply is {spec.apply!r}, not a function",
             "pass apply(model, family, depth) -> (feature extractor, feature width)")
        need(isinstance(spec.takes_depth, bool), f"takes_depth is {spec.takes_depth!r}", "pass True or False")
    elif isinstance(spec, LabelPolicySpec):
        need(callable(spec.apply), f"apply is {spec.apply!r}, not a function",
             "pass apply(labels) -> (targets, mask)")


def _check_family_structure(spec: FamilySpec, need: Callable[[bool, str, str], None]) -> None:
    for attr in ("timm_name", "tag", "group"):
        value = getattr(spec, attr)
        need(isinstance(value, str) and bool(value.strip()), f"{attr} is {value!r}",
             f"set {attr} to a non-empty string")
    need(not spec.tag.startswith(".") and "." not in spec.timm_name,
         f"timm_name {spec.timm_name!r} / tag {spec.tag!r} look like timm's combined 'model.tag' name",
         "put the model in timm_name and only the part after the dot in tag")
    for attr in ("imagenet_top1", "reference_top1"):
        top1 = getattr(spec, attr)
        need(top1 is None or (isinstance(top1, int | float) and not isinstance(top1, bool) and 0 < top1 <= 100),
             f"{attr} is {top1!r}", "give an ImageNet top-1 accuracy in percent (0-100), or None")
    need(spec.reference_top1 is None or bool(spec.reference_top1_source),
         "reference_top1 is given without reference_top1_source", "say whose weights the reference top-1 is of")
    need(isinstance(spec.blocks, tuple) and len(spec.blocks) > 0
         and all(isinstance(b, str) and b.strip() for b in spec.blocks),
         f"blocks is {spec.blocks!r}", "give a tuple of module names, e.g. ('layer1', 'layer2', 'layer3', 'layer4')")
    twice = sorted({b for b in spec.blocks if spec.blocks.count(b) > 1})
    need(not twice, f"blocks lists {', '.join(twice)} more than once", "list each block once, in forward order")
    need(isinstance(spec.max_drop, int) and not isinstance(spec.max_drop, bool) and spec.max_drop >= 0,
         f"max_drop is {spec.max_drop!r}", "give the number of final blocks truncation may remove (0 for none)")
    need(spec.max_drop < len(spec.blocks),
         f"max_drop is {spec.max_drop} but there are only {len(spec.blocks)} blocks (one must always stay)",
         f"set max_drop to at most {len(spec.blocks) - 1}")
    need(isinstance(spec.min_size, int) and not isinstance(spec.min_size, bool) and spec.min_size >= 1,
         f"min_size is {spec.min_size!r}", "give the smallest input size in pixels the network accepts")
    need(spec.create is None or callable(spec.create), f"create is {spec.create!r}",
         "pass a function create(family) -> nn.Module, or leave it None for timm.create_model(timm_name)")
