"""What every stage runs on: the StageContext, and the study-wide facts stages share (the prepared data and what
to call it). Nothing about MLflow here: that is stages.experiment, so the data stages do not depend on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chexops import naming, records
from chexops.config import Config
from chexops.errors import ConfigError
from chexops.naming import RunKey


@dataclass
class StageContext:
    """What a stage runs on: the validated params, the configuration (for per-run stages) and how to report."""

    config: Config
    key: RunKey | None = None
    progress: bool = True
    restart: bool = False  # train: start over instead of resuming the run folder
    lr: float | None = None  # train: override the tuned / configured learning rate
    tracker: Any = None  # the study's Tracker, opened on first use by stages.experiment.tracker_of

    @property
    def run(self) -> RunKey:
        if self.key is None:
            raise ConfigError("this stage runs per configuration: give --family and --init (and --truncate).")
        return self.key

    @property
    def runs_dir(self) -> Path:
        return Path(self.config.train.runs_dir)


Stage = Callable[[StageContext], dict[str, Any]]


def components_used(config: Config, key: RunKey) -> list[tuple[str, str]]:
    """(kind, name) of each plugin component the configuration's stages use: its family, initializer, label policy
    and, when truncated, its truncation strategy."""
    used = [("families", key.family), ("initializers", key.initializer.partition(":")[0]),
            ("label-policies", config.data.label_policy)]
    return used + ([("truncations", key.strategy)] if key.depth else [])


def components_of(config: Config, key: RunKey) -> dict[Path, dict[str, Any]]:
    """The components a configuration's stages use as plugins.lock/ records them now (file -> record)."""
    from chexops.components.lineage import component_record, initializer_record

    return {Path(kind) / f"{key.initializer if kind == 'initializers' else name}.json":
            initializer_record(key.initializer) if kind == "initializers" else component_record(kind, name)
            for kind, name in components_used(config, key)}


def verify_components(config: Config, keys: list[RunKey]) -> None:
    """Before a configuration uses its plugin components: each passes the deep checks (once per version of its
    code), so a mistake is one line and exit 2 before any data is prepared or model trained."""
    from chexops.components.verify import ensure_verified

    ensure_verified([c for key in keys for c in components_used(config, key)])


# --- the prepared data -------------------------------------------------------------------------------------------

def require_prepared(config: Config) -> dict[str, Any]:
    """The prepare stage's record, checked against params.yaml (a cache made for other settings is refused)."""
    d = config.data
    return records.require_prepared(d.cache_dir, d.image_size, d.on_bad_image)


def data_hash(config: Config) -> str:
    return records.data_hash(config.data.cache_dir)


def test_source(config: Config) -> str:
    return records.recorded_test_source(config.data.cache_dir)


def describe_data(config: Config) -> str:
    """'synthetic CheXpert-format phantoms, 64 px; test: synthetic patient hold-out (...)': for tags and reports."""
    return naming.data_description(config.data.source, config.data.image_size, test_source(config))


def describe_test_split(config: Config) -> str:
    return naming.describe_test_split(config.data.source, test_source(config))
