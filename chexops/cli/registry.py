"""`chexops registry list`, `chexops registry relocate` and `chexops promote`."""

from __future__ import annotations

import json
from typing import Any

import click

from chexops.cli.components import print_table
from chexops.naming import PARAMS_FILE

_PARAMS = click.option("--params", "params_path", default=PARAMS_FILE, show_default=True,
                       type=click.Path(dir_okay=False),
                       help="params.yaml whose tracking.uri names the store (MLFLOW_TRACKING_URI overrides it).")


def _client(params_path: str) -> Any:
    from chexops.tracking.store import open_client, tracking_uri

    return open_client(tracking_uri(params_path))


@click.group("registry")
def registry_group() -> None:
    """The study's registered models: versions, aliases, test AUROC and promotion history."""


@registry_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_PARAMS
def list_command(as_json: bool, params_path: str) -> None:
    """Registered models, their versions, aliases, test mean AUROC with CI, source runs and promotions."""
    from chexops.tracking.registry import describe_models

    client = _client(params_path)
    models = describe_models(client)
    if as_json:
        click.echo(json.dumps(models, indent=2))
        return
    if not models:
        click.echo(f"no registered models in {client.tracking_uri}")
        return
    rows = [(m["name"], v["version"], ",".join(v["aliases"]), _auroc(v), v["run_name"] or "", v["run_id"] or "",
             _promotions(v["promotions"])) for m in models for v in m["versions"]]
    print_table(rows, ["model", "version", "aliases", "test mean AUROC (95% CI)", "run", "run id", "promotions"])
    for m in models:
        for alias, history in m["alias_history"].items():
            click.echo(f"{m['name']} {alias}: " + " -> ".join(f"v{v}" for v in history))


@registry_group.command("relocate")
@_PARAMS
def relocate_command(params_path: str) -> None:
    """Point a copied or moved project's SQLite store at this project's artifact folder (tracking.artifacts)."""
    from pathlib import Path

    from chexops.config import load_config
    from chexops.errors import TrackingError
    from chexops.tracking.relocate import expected_location, relocate

    config = load_config(params_path)
    uri = _client(params_path).tracking_uri
    if not uri.startswith("sqlite:///"):
        raise TrackingError(f"{uri} is not an SQLite store: a tracking server decides where artifacts go.")
    found = _client(params_path).get_experiment_by_name(config.experiment)
    if found is None:
        raise TrackingError(f"no experiment {config.experiment!r} in {uri}: nothing to relocate.")
    new = expected_location(config.tracking.artifacts, config.experiment)
    old = found.artifact_location
    if old == new:
        click.echo(f"{uri} already keeps {config.experiment!r}'s artifacts in {new}.")
        return
    rows = relocate(Path(uri[len("sqlite:///"):].partition("?")[0]), old, new)
    click.echo(f"{rows} recorded locations moved from {old} to {new}.")


def _auroc(v: dict[str, Any]) -> str:
    from chexops.naming import TEST_HEADLINE

    if v[TEST_HEADLINE] is None:
        return ""
    ci = f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if v["ci_low"] is not None and v["ci_high"] is not None else ""
    return f"{v[TEST_HEADLINE]:.3f}{ci}"


def _promotions(records: list[dict[str, Any]]) -> str:
    """'#1 promoted champion; #2 rollback champion from v3' - one version's decisions, oldest first."""
    parts = []
    for r in records:
        text = f"#{r['n']} {r['decision']} {r['alias']}"
        if r["against"]:
            text += f" {'from' if r['decision'] == 'rollback' else 'vs'} v{r['against']}"
        if r["delta"] is not None:
            text += f" d={r['delta']:+.3f} p={r['p']:.3g}"
        parts.append(text)
    return "; ".join(parts)


@click.command("promote")
@click.argument("model")
@click.argument("version", required=False, type=click.IntRange(min=1))
@click.option("--alias", default="champion", show_default=True, help="The alias to move.")
@click.option("--force", is_flag=True, help="Promote even when the candidate is not significantly better.")
@click.option("--rollback", is_flag=True, help="Move the alias back to the version that held it before.")
@_PARAMS
def promote_command(model: str, version: int | None, alias: str, force: bool, rollback: bool,
                    params_path: str) -> None:
    """Give ALIAS to VERSION of MODEL if it beats the current holder on the same test studies.

    The decision is the paired bootstrap's (1000 resamples, seed 0) over the mean AUROC of the 6 study tasks:
    promoted when the 95% CI of the difference lies above 0; DeLong's per-task p-values are shown beside it.
    Every decision is recorded on the version as chexops.promotion.<n>.* tags. A refusal exits with code 1.
    """
    from chexops.tracking import promotion

    if rollback:
        if version is not None or force:
            raise click.UsageError("--rollback takes only MODEL (and --alias); drop VERSION and --force.")
        decision = promotion.rollback(_client(params_path), model, alias)
    elif version is None:
        raise click.UsageError("give the VERSION to promote, or --rollback to undo the last promotion.")
    else:
        decision = promotion.promote(_client(params_path), model, version, alias, force=force)
    for line in promotion.explain(decision):
        click.echo(line)
    if not decision.moved:
        raise click.ClickException(promotion.refusal_message(decision))  # exit code 1: refused, not an error
