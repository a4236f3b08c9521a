"""The registry's read side: models, versions, aliases, their history and promotion records.

Promotion records live in MLflow itself, so the registry UI and any MLflow client see them too:
- on a model version, `chexops.promotion.<n>.<field>` for its n-th decision (fields: PROMOTION_FIELDS);
- on a registered model, `chexops.alias_history.<alias>`: a JSON list of the versions that held the alias,
  oldest first, ending with the version holding it now. Rollback pops the last entry.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any

from chexops.errors import DataError, TrackingError
from chexops.naming import TEST_HEADLINE
from chexops.tracking.registry_lock import is_lock_model
from chexops.tracking.store import mlflow_errors
from chexops.tracking.tags import HISTORY_PREFIX

PROMOTION_FIELDS = ("decision", "alias", "by", "at", "against", "delta", "ci_low", "ci_high", "p", "delong_p")
# Version tags the register stage writes (evaluate's flat metrics): the test mean AUROC over the 6 study tasks
AUROC_TAGS = (TEST_HEADLINE, f"{TEST_HEADLINE}_ci_low", f"{TEST_HEADLINE}_ci_high")
_PROMOTION_TAG = re.compile(r"^chexops\.promotion\.(\d+)\.([a-z_]+)$")


def _pages(search: Callable[..., Any]) -> Iterator[Any]:
    """Every item of a paged MLflow search."""
    token = None
    while True:
        page = search(page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def get_model(client: Any, name: str) -> Any:
    """The registered model `name`; an unknown name lists the models there are."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise TrackingError(f"MLflow could not read registered model {name!r}: {exc}") from exc
    from chexops.errors import did_you_mean

    names = [m.name for m in _pages(lambda page_token: client.search_registered_models(page_token=page_token))
             if not is_lock_model(m.name)]
    raise TrackingError(f"no registered model {name!r} in {client.tracking_uri}." + did_you_mean(name, names)
                        + " See `chexops registry list` for the models there are.")


def get_version(client: Any, name: str, version: str | int) -> Any:
    """Version `version` of `name`; an unknown one lists the versions there are."""
    from mlflow.exceptions import MlflowException

    get_model(client, name)
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(f"MLflow could not read version {version} of {name!r}: {exc}") from exc
    versions = sorted(int(v.version) for v in versions_of(client, name))
    raise TrackingError(f"registered model {name!r} has no version {version!r}; its versions are {versions}.")


def versions_of(client: Any, name: str) -> list[Any]:
    """All versions of `name`, oldest first (search results carry no aliases: read them from the model)."""
    quoted = name.replace("'", "\\'")
    found = _pages(lambda page_token: client.search_model_versions(f"name = '{quoted}'", page_token=page_token))
    return sorted(found, key=lambda v: int(v.version))


def read_history(model: Any, alias: str) -> list[int]:
    """The versions that held `alias`, oldest first; a missing or unreadable tag starts from the holder now."""
    raw = model.tags.get(HISTORY_PREFIX + alias)
    try:
        history = [int(v) for v in json.loads(raw)] if raw else []
    except (ValueError, TypeError):
        history = []
    holder = model.aliases.get(alias)
    if not history and holder is not None:  # the alias was set outside chexops: it is the history so far
        history = [int(holder)]
    return history


def write_history(client: Any, name: str, alias: str, history: list[int]) -> None:
    with mlflow_errors(f"record the history of alias {alias!r} of {name!r}", client.tracking_uri):
        client.set_registered_model_tag(name, HISTORY_PREFIX + alias, json.dumps(history))


def promotions(tags: dict[str, str]) -> list[dict[str, Any]]:
    """The promotion records of a version, in order, from its `chexops.promotion.<n>.<field>` tags."""
    records: dict[int, dict[str, Any]] = {}
    for key, value in tags.items():
        match = _PROMOTION_TAG.match(key)
        if match:
            records.setdefault(int(match.group(1)), {})[match.group(2)] = value
    out = []
    for n in sorted(records):
        rec: dict[str, Any] = {"n": n, **{f: records[n].get(f) for f in PROMOTION_FIELDS}}
        for f in ("delta", "ci_low", "ci_high", "p"):
            rec[f] = _number(rec[f])
        delong = _json(rec["delong_p"], dict)
        rec["delong_p"] = {t: _number(str(v)) for t, v in delong.items()} if delong is not None else None
        out.append(rec)
    return out


def _number(text: str | None) -> float | None:
    """A tag's number; None when absent, unreadable or NaN (an untestable task), so JSON output stays valid."""
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return None if value is None or math.isnan(value) else value


def _json(text: str | None, kind: type) -> Any:
    """A JSON tag of the expected kind, or None: a hand-edited tag must not break listing the registry."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, kind) else None


def describe_models(client: Any) -> list[dict[str, Any]]:
    """Every registered model with its aliases, alias histories and versions (AUROC, run, promotions)."""
    run_names: dict[str, str | None] = {}
    out = []
    with mlflow_errors("list the registered models", client.tracking_uri):
        models = [m for m in _pages(lambda page_token: client.search_registered_models(page_token=page_token))
                  if not is_lock_model(m.name)]  # a promotion in progress (or killed) holds one
        for model in sorted(models, key=lambda m: m.name):
            aliases = {a: int(v) for a, v in sorted(model.aliases.items())}
            histories = {key[len(HISTORY_PREFIX):]: _json(value, list) for key, value in sorted(model.tags.items())
                         if key.startswith(HISTORY_PREFIX)}
            versions = [_describe_version(client, v, aliases, run_names) for v in versions_of(client, model.name)]
            out.append({"name": model.name, "aliases": aliases, "alias_history": histories, "versions": versions})
    return out


def _describe_version(client: Any, version: Any, aliases: dict[str, int], run_names: dict[str, str | None]
                      ) -> dict[str, Any]:
    run_id = version.run_id or None
    if run_id and run_id not in run_names:
        try:
            run_names[run_id] = client.get_run(run_id).info.run_name
        except Exception:  # a deleted run must not hide the rest of the registry
            run_names[run_id] = None
    from chexops.evaluate.metrics import headline_key  # numpy and pandas: not for every registry call

    try:  # the 6-task mean, or its honest partial name when a study task had one class on the test split
        key = headline_key(version.tags)
    except DataError:
        key = AUROC_TAGS[0]
    auroc, low, high = (_number(version.tags.get(k)) for k in (key, f"{key}_ci_low", f"{key}_ci_high"))
    number = int(version.version)
    return {"version": number, "aliases": sorted(a for a, v in aliases.items() if v == number),
            TEST_HEADLINE: auroc, "ci_low": low, "ci_high": high, "run_id": run_id,
            "run_name": run_names.get(run_id) if run_id else None, "promotions": promotions(version.tags)}
