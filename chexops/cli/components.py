"""Core commands: plugins, components, build, weights fetch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from chexops.components.registry import KINDS, get_registry
from chexops.naming import DEFAULT_STRATEGY


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """An aligned plain-text table on stdout."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def head_parameters(family: Any, num_classes: int = 14) -> int:
    """Parameters of the untruncated network with a `num_classes` head, counted on the meta device (no weights
    allocated) and cached per timm version, so listing families does not build every network each time."""
    from chexops.components.param_cache import cached_count

    return cached_count(family, num_classes, lambda: _count_on_meta(family, num_classes))


def _count_on_meta(family: Any, num_classes: int) -> int:
    import timm
    import torch

    with torch.device("meta"):
        net = family.create(family) if family.create else timm.create_model(family.timm_name)
        net.reset_classifier(num_classes)
    return sum(p.numel() for p in net.parameters())


@click.command("plugins")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--lock", "lock", is_flag=True,
              help="Record the installed plugins in plugins.lock.json and each component's fingerprint in "
                   "plugins.lock/ (what `dvc repro`'s plugins stage does).")
@click.option("--check", "check", is_flag=True,
              help="Build every component of plugin NAME (default: of every plugin) on the meta device: timm name "
                   "and tag, blocks in forward order, every truncation depth. Exit 2 on the first problem found.")
def plugins_command(name: str | None, as_json: bool, lock: bool, check: bool) -> None:
    """Installed plugins, their versions and the hooks they implement."""
    if check:
        check_plugins(name)
        return
    if name:
        raise click.UsageError("NAME is only used with --check.")
    if lock:
        from pathlib import Path

        import yaml

        from chexops.components.lock import write_lock
        from chexops.naming import PARAMS_FILE, PLUGINS_LOCK

        params = Path(PARAMS_FILE)
        grid = ((yaml.safe_load(params.read_text()) or {}).get("grid") or {}) if params.is_file() else {}
        changed = write_lock(grid=grid)
        click.echo(f"{PLUGINS_LOCK}, plugins.lock/: {'changed: ' + ', '.join(changed) if changed else 'unchanged'}")
        return
    infos = get_registry().plugins.values()
    if as_json:
        click.echo(json.dumps([vars(i) | {"hooks": list(i.hooks)} for i in infos], indent=2))
        return
    print_table(
        [(i.name, i.distribution, i.version, "yes" if i.builtin else "no", ", ".join(i.hooks)) for i in infos],
        ["plugin", "distribution", "version", "built-in", "hooks"],
    )


def check_plugins(name: str | None) -> None:
    """Deep-check the components of one plugin (entry-point or distribution name), or of all of them."""
    from chexops.components import verify
    from chexops.errors import PluginError, UnknownComponentError, did_you_mean

    registry = get_registry()
    plugins = {p.name for p in registry.plugins.values()} | {p.distribution for p in registry.plugins.values()}
    if name is not None and name not in plugins:
        raise UnknownComponentError(f"no loaded plugin is called {name!r}.{did_you_mean(name, plugins)} Loaded: "
                                    f"{', '.join(sorted(plugins))}.")
    from chexops.components.manager import plugin_manager, undecorated_hooks

    pm, _ = plugin_manager()
    for info in registry.plugins.values():
        if name in (None, info.name, info.distribution) and (missing := undecorated_hooks(pm.get_plugin(info.name))):
            raise PluginError(f"plugin {info.name!r} ({info.distribution}): {', '.join(missing)} lack "
                              "@chexops.hookimpl, so chexops never calls them; decorate each with @chexops.hookimpl.")
    checked = 0
    for kind in KINDS:
        for entry in registry.entries(kind):
            if name is None or name in (entry.plugin.name, entry.plugin.distribution):
                click.echo(verify.check(kind, entry.name).summary())
                checked += 1
    if not checked:
        click.echo(f"plugin {name} registers no components (only commands, or nothing).")


def _family_row(spec: Any) -> dict[str, Any]:
    try:
        parameters: int | None = head_parameters(spec)
    except Exception as exc:  # noqa: BLE001 - one plugin's broken family must not hide the others
        click.echo(f"Warning: family {spec.name}: cannot count its parameters ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0] if str(exc) else ''}); run `chexops plugins --check` for the fix.",
                   err=True)
        parameters = None
    return {
        "timm_tag": spec.pretrained_name,
        "group": spec.group,
        "imagenet_top1": spec.imagenet_top1,
        "reference_top1": spec.reference_top1,
        "reference_top1_source": spec.reference_top1_source,
        "parameters": parameters,
        "max_drop": spec.max_drop,
        "droppable_blocks": list(spec.blocks[len(spec.blocks) - spec.max_drop:]) if spec.max_drop else [],
    }


def _component_rows(kind: str, as_json: bool) -> list[dict[str, Any]]:
    rows = []
    for entry in get_registry().entries(kind):
        spec = entry.spec
        row: dict[str, Any] = {"name": spec.name, "plugin": entry.plugin.distribution}
        if kind == "families":
            row |= _family_row(spec)
            if not as_json:  # the table keeps one line per family: the count says how far truncation may go
                del row["droppable_blocks"]
        if kind == "truncations":
            row["takes_depth"] = spec.takes_depth
        row["description"] = spec.description
        rows.append(row)
    return rows


@click.command("components")
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def components_command(kind: str | None, as_json: bool) -> None:
    """What the plugins registered: families, initializers, truncations, label-policies."""
    kinds = [kind] if kind else list(KINDS)
    data = {k: _component_rows(k, as_json) for k in kinds}
    if as_json:
        click.echo(json.dumps(data if kind is None else data[kind], indent=2))
        return
    for k, rows in data.items():
        click.echo(f"\n{k}:" if len(kinds) > 1 else f"{k}:")
        headers = list(rows[0]) if rows else ["name"]
        print_table([[r[h] for h in headers] for r in rows], headers)


@click.command("build")
@click.argument("family")
@click.option("--init", default="random", show_default=True,
              help="random, imagenet, ssl (the pretrain stage's backbone: give --pretrain-dir) or checkpoint:PATH.")
@click.option("--truncate", default=0, show_default=True, type=click.IntRange(min=0),
              help="Truncation depth, as the strategy reads it (drop-last-k: final blocks dropped).")
@click.option("--strategy", default=DEFAULT_STRATEGY, show_default=True,
              help="Truncation strategy (`chexops components truncations`); the Python API's `truncation=`.")
@click.option("--pretrain-dir", type=click.Path(file_okay=False),
              help="For --init ssl: the pretrain stage's folder, e.g. runs/pretrain/resnet18__ssl.")
@click.option("--num-classes", default=14, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--weights-dir", type=click.Path(file_okay=False), help="Folder of ImageNet weight files.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def build_command(family: str, init: str, truncate: int, strategy: str, pretrain_dir: str | None, num_classes: int,
                  seed: int, weights_dir: str | None, as_json: bool) -> None:
    """Build a network and print its report, without training."""
    from chexops.components.verify import ensure_verified
    from chexops.models.build import build_model

    ensure_verified([("families", family), ("initializers", init.partition(":")[0])]
                    + ([("truncations", strategy)] if truncate else []))
    _, report = build_model(family, init, truncate, num_classes, seed, weights_dir, truncation=strategy,
                            pretrain_dir=pretrain_dir)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    for key, value in report.to_dict().items():
        click.echo(f"{key:>15}: {value}")


@click.group("weights")
def weights_group() -> None:
    """ImageNet weight files for offline machines."""


@weights_group.command("fetch")
@click.argument("families", nargs=-1, required=True)
@click.option("--to", "to", required=True, type=click.Path(file_okay=False), help="Folder to save the files into.")
def fetch_command(families: tuple[str, ...], to: str) -> None:
    """Save the pinned ImageNet weights of FAMILIES into a folder (run where the model hub is reachable)."""
    from chexops.models.weights import ENV_WEIGHTS_DIR, fetch

    registry = get_registry()
    specs = [registry.family(f) for f in families]  # all names checked before any download
    for spec in specs:
        path = fetch(spec, Path(to))
        click.echo(f"{spec.name}: saved {spec.pretrained_name} to {path}")
    click.echo(f"On the offline machine: export {ENV_WEIGHTS_DIR}={Path(to).resolve()}")
