"""How a run is named everywhere: MLflow run name, folder, registered model."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from chexops.models import truncation_label


@dataclass(frozen=True)
class RunKey:
    """One configuration of the study grid."""

    family: str
    initializer: str
    depth: int = 0

    @property
    def name(self) -> str:
        """`densenet121/imagenet/full`: the MLflow run name."""
        init = self.initializer
        if ":" in init:  # checkpoint:/long/path/model.pt -> checkpoint-model
            base, _, arg = init.partition(":")
            init = f"{base}-{Path(arg).stem}"
        return f"{self.family}/{init}/{truncation_label(self.depth)}"

    @property
    def slug(self) -> str:
        """A folder- and registry-safe form of the name: `densenet121__imagenet__full`."""
        return re.sub(r"[^A-Za-z0-9_.-]", "-", self.name.replace("/", "__"))

    # One folder per stage, so each DVC stage owns its outputs: train -> eval -> registry.
    def train_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "train" / self.slug

    def eval_dir(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "eval" / self.slug

    def registry_file(self, runs_dir: str | Path) -> Path:
        return Path(runs_dir) / "registry" / f"{self.slug}.json"
