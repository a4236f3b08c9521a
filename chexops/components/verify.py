"""Deep checks of a registered component: build its networks on the meta device (every depth of a family, each
strategy on the reference family), try an initializer and a label policy on small inputs. Run by `chexops plugins
--check`, `chexops.testing.check_family` / `check_component`, and automatically before a component is first used
(cached by its fingerprint, see components.lineage). Every failure is one line naming the plugin, the spec and the
fix. The structural checks that run at registration, torch-free, are components.checks.
"""

from __future__ import annotations

import copy
import difflib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexops.components.checks import fail
from chexops.components.registry import get_registry
from chexops.components.specs import FamilySpec, InitializerSpec, LabelPolicySpec, TruncationSpec
from chexops.errors import ChexopsError, did_you_mean
from chexops.naming import DEFAULT_STRATEGY


def check(kind: str, name: str) -> CheckReport:
    """The deep check of one registered component (builds networks on the meta device; imports torch)."""
    registry = get_registry()
    registry.entries(kind)  # an unknown kind is an error listing the kinds
    entry = registry.entry(kind, name)
    spec, plugin = entry.spec, entry.plugin
    if kind == "families":
        return check_family(spec, plugin, {e.name: e.spec for e in registry.entries("truncations")})
    if kind == "truncations":
        return check_truncation(spec, plugin, registry.reference_family())
    if kind == "initializers":
        return check_initializer(spec, plugin, registry.reference_family())
    return check_label_policy(spec, plugin)


@dataclass
class CheckReport:
    """What a deep check measured: parameters per depth (families), the time it took."""

    kind: str
    name: str
    plugin: str
    parameters: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    note: str = ""

    def summary(self) -> str:
        depths = f", depths {min(self.parameters)}-{max(self.parameters)}" if len(self.parameters) > 1 else ""
        note = f", {self.note}" if self.note else ""
        return f"ok  {self.kind} {self.name} ({self.plugin}){depths}{note}, {self.seconds:.1f} s"


def check_timm_name(spec: FamilySpec, plugin: Any) -> None:
    """timm knows the architecture and the pinned pretrained tag."""
    import timm

    if not timm.is_model(spec.timm_name):
        close = difflib.get_close_matches(spec.timm_name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (did you mean: {', '.join(close)}?)" if close else ""
        raise fail("family", spec, plugin, f"timm has no model {spec.timm_name!r}",
                    f"set timm_name to one of timm.list_models(){hint}")
    tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{spec.timm_name}.*")]
    if spec.tag not in tags:
        raise fail("family", spec, plugin, f"timm's {spec.timm_name} has no pretrained tag {spec.tag!r}",
                    f"set tag to one of: {', '.join(tags) or 'none (this model has no pretrained weights)'}")


def _meta_network(spec: FamilySpec, plugin: Any) -> Any:
    import timm
    import torch

    try:
        with torch.device("meta"):
            net = spec.create(spec) if spec.create else timm.create_model(spec.timm_name, pretrained=False)
    except Exception as exc:  # noqa: BLE001 - the plugin's own create function: any failure is its bug
        raise fail("family", spec, plugin, f"building the network failed ({type(exc).__name__}: {exc})",
                    "fix create() or timm_name") from exc
    return net.eval()


def _forward(net: Any, spec: FamilySpec, plugin: Any, what: str) -> Any:
    import torch

    try:
        with torch.device("meta"), torch.no_grad():
            return net(torch.zeros(1, 3, spec.min_size, spec.min_size))
    except Exception as exc:  # noqa: BLE001 - a forward pass of plugin code
        raise fail("family", spec, plugin, f"a forward pass of {what} at {spec.min_size} px failed "
                    f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                    "raise min_size to the smallest input the network accepts, or fix the blocks") from exc


def check_blocks(spec: FamilySpec, plugin: Any, net: Any) -> None:
    """Every block is a module of the network that runs exactly once per forward pass, in the listed order."""
    modules = dict(net.named_modules())
    for block in spec.blocks:
        if block not in modules:
            siblings = [n for n in modules if n.count(".") == block.count(".") and n]
            raise fail("family", spec, plugin, f"block {block!r} is not a module of {spec.timm_name}",
                        f"use module names from model.named_modules(){did_you_mean(block, siblings).rstrip('?')}")
    calls: list[str] = []
    handles = [modules[b].register_forward_hook(lambda *_, b=b: calls.append(b)) for b in spec.blocks]
    try:
        _forward(net, spec, plugin, "the whole network")
    finally:
        for handle in handles:
            handle.remove()
    for block in spec.blocks:
        n = calls.count(block)
        if n != 1:
            raise fail("family", spec, plugin, f"block {block!r} runs {n} times in one forward pass",
                        "list modules that run exactly once (stage boundaries), not shared or unused ones")
    if calls != list(spec.blocks):
        raise fail("family", spec, plugin, f"blocks are listed as {', '.join(spec.blocks)} but run in the order "
                    f"{', '.join(calls)}", f"list them in forward order: blocks=({', '.join(map(repr, calls))})")


def check_depths(spec: FamilySpec, plugin: Any, net: Any, truncations: dict[str, TruncationSpec]) -> dict[int, int]:
    """The full network and every allowed depth build, and each depth has fewer parameters than the one before."""
    import torch

    from chexops.models.build import ChexModel

    counts: dict[int, int] = {}
    for depth in range(spec.max_drop + 1):
        strategy = truncations["none" if depth == 0 else DEFAULT_STRATEGY]
        try:
            with torch.device("meta"):
                features, width = strategy.apply(copy.deepcopy(net), spec, depth)
                model = ChexModel(features, width, 14)
        except ChexopsError as exc:
            raise fail("family", spec, plugin, f"depth {depth} does not build ({exc})",
                        "fix blocks or max_drop") from exc
        except Exception as exc:  # noqa: BLE001 - plugin code ran inside the truncation
            raise fail("family", spec, plugin, f"depth {depth} does not build ({type(exc).__name__}: {exc})",
                        "fix blocks or max_drop") from exc
        out = _forward(model.eval(), spec, plugin, f"depth {depth}")
        if tuple(out.shape) != (1, 14):
            raise fail("family", spec, plugin, f"depth {depth} outputs shape {tuple(out.shape)}, not (1, 14)",
                        "check that the kept blocks end in a (N, C, H, W) or (N, C) feature map")
        counts[depth] = sum(p.numel() for p in model.parameters())
        if depth and counts[depth] >= counts[depth - 1]:
            raise fail("family", spec, plugin,
                        f"dropping {depth} blocks leaves {counts[depth]:,} parameters, not fewer than "
                        f"{counts[depth - 1]:,} at depth {depth - 1}",
                        "list the blocks in forward order, ending with the network's last stage")
    return counts


def check_family(spec: FamilySpec, plugin: Any, truncations: dict[str, TruncationSpec]) -> CheckReport:
    start = time.perf_counter()
    check_timm_name(spec, plugin)
    net = _meta_network(spec, plugin)
    check_blocks(spec, plugin, net)
    counts = check_depths(spec, plugin, net, truncations)
    return CheckReport("family", spec.name, plugin.distribution, counts, time.perf_counter() - start)


def check_truncation(spec: TruncationSpec, plugin: Any, family: FamilySpec) -> CheckReport:
    """Every depth the reference family allows (or depth 0 when the strategy takes none) builds a smaller network
    whose output width is what apply reported."""
    import torch

    from chexops.models.build import ChexModel

    start = time.perf_counter()
    full = _meta_network(family, plugin)
    total = sum(p.numel() for p in full.parameters())
    counts: dict[int, int] = {}
    for depth in range(1, family.max_drop + 1) if spec.takes_depth else [0]:
        where = f"on {family.name} at depth {depth}"
        try:
            with torch.device("meta"):
                result = spec.apply(copy.deepcopy(full), family, depth)
        except Exception as exc:  # noqa: BLE001 - plugin code
            raise fail("truncation", spec, plugin, f"apply failed {where} ({type(exc).__name__}: {exc})",
                        "apply(model, family, depth) must cut the model at every depth 1..family.max_drop") from exc
        ok = isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module) \
            and isinstance(result[1], int) and result[1] > 0
        if not ok:
            raise fail("truncation", spec, plugin, f"apply returned {type(result).__name__} {where}",
                        "return (feature extractor nn.Module, feature width int)")
        features, width = result
        with torch.device("meta"), torch.no_grad():
            out = features.eval()(torch.zeros(1, 3, family.min_size, family.min_size))
        if out.ndim not in (2, 4) or out.shape[1] != width:
            raise fail("truncation", spec, plugin, f"the features {where} have shape {tuple(out.shape)} but apply "
                        f"reported width {width}", "return the channel count of the (N, C, H, W) or (N, C) output")
        counts[depth] = sum(p.numel() for p in ChexModel(features, width, 14).parameters())
        if spec.takes_depth and counts[depth] >= total:
            raise fail("truncation", spec, plugin, f"{where} it keeps {counts[depth]:,} of {total:,} parameters",
                        "a truncation must remove part of the network")
    return CheckReport("truncation", spec.name, plugin.distribution, counts, time.perf_counter() - start)


def check_label_policy(spec: LabelPolicySpec, plugin: Any) -> CheckReport:
    """apply keeps the contract: (N, 14) labels in {1, 0, -1, NaN} -> float32 targets in [0, 1] and a 0/1 mask."""
    import numpy as np

    start = time.perf_counter()
    labels = np.array([[1.0, 0.0, -1.0, np.nan] * 3 + [1.0, -1.0]] * 3)
    given = labels.copy()
    try:
        result = spec.apply(given)
    except Exception as exc:  # noqa: BLE001 - plugin code
        raise fail("label policy", spec, plugin, f"apply failed on labels holding 1, 0, -1 and NaN "
                    f"({type(exc).__name__}: {exc})", "accept an (N, 14) float array of 1, 0, -1 and NaN") from exc
    if not np.array_equal(given, labels, equal_nan=True):  # the training labels are shared (and memory-mapped)
        raise fail("label policy", spec, plugin, "apply changed the labels it was given",
                   "work on a copy (labels = labels.copy()) and return new arrays")
    fix = "return (targets, mask), both float32 arrays of shape (N, 14), targets in [0, 1], mask 0 or 1"
    if not (isinstance(result, tuple) and len(result) == 2):
        raise fail("label policy", spec, plugin, f"apply returned {type(result).__name__}", fix)
    for what, arr in zip(("targets", "mask"), result, strict=True):
        arr = np.asarray(arr)
        if arr.shape != labels.shape or arr.dtype != np.float32:
            raise fail("label policy", spec, plugin, f"{what} has shape {arr.shape} and dtype {arr.dtype}", fix)
    targets, mask = (np.asarray(a) for a in result)
    if not (np.isfinite(targets).all() and ((targets >= 0) & (targets <= 1)).all() and np.isin(mask, (0, 1)).all()):
        raise fail("label policy", spec, plugin, "targets hold values outside [0, 1] (or NaN) or mask is not 0/1",
                    fix)
    return CheckReport("label policy", spec.name, plugin.distribution, seconds=time.perf_counter() - start)


def check_initializer(spec: InitializerSpec, plugin: Any, family: FamilySpec) -> CheckReport:
    """An initializer that loads nothing (like `random`) fills a real network of `family` and returns an InitReport.
    One that loads weights (pretrained, or needing an argument like checkpoint:PATH) is not run: it would reach
    for files or the network, and its refusals are its own business."""
    from chexops.components.specs import InitReport

    start = time.perf_counter()
    if spec.pretrained or spec.needs_argument:
        return CheckReport("initializer", spec.name, plugin.distribution, note="not run (it loads weights)")
    import timm
    import torch

    with torch.random.fork_rng(devices=[]):
        net = timm.create_model(family.timm_name, pretrained=False)
        try:
            report = spec.apply(net, family, None, {"seed": 0, "weights_dir": None})
        except Exception as exc:  # noqa: BLE001 - plugin code
            raise fail("initializer", spec, plugin, f"apply failed on {family.name} ({type(exc).__name__}: {exc})",
                        "apply(model, family, argument, context) must fill the model in place") from exc
    if not isinstance(report, InitReport):
        raise fail("initializer", spec, plugin, f"apply returned {type(report).__name__}",
                    "return a chexops.InitReport describing what was loaded")
    return CheckReport("initializer", spec.name, plugin.distribution, seconds=time.perf_counter() - start)


def verified_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "chexops" / "verified"


def ensure_verified(components: list[tuple[str, str]]) -> None:
    """Deep-check the plugin components a command is about to use, once per version of their code: a check passed
    is remembered under the component's fingerprint (components.lineage), so a changed component is checked again
    and an unchanged one costs a file lookup. Built-in components are chexops' own, tested with it; skipped."""
    from chexops.components.lineage import component_record

    registry = get_registry()
    for kind, name in dict.fromkeys(components):
        if registry.entry(kind, name).plugin.builtin:
            continue
        record = component_record(kind, name)
        done = verified_cache() / kind / f"{name}-{record['fingerprint']}"
        if done.is_file():
            continue
        check(kind, name)
        try:  # a read-only home only costs the cache
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(f"{record['distribution']} {record['version']}\n")
        except OSError:
            pass
