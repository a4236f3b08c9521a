"""A device's measured timings for a study's settings (`chexops plan --save FILE`): what plan and packing read.
Plain data, no torch: a profile measured on a GPU machine is read anywhere."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chexops.errors import ConfigError

MIN_GAIN = 1.1  # below this a measured packing gain is within run-to-run noise: one worker per device
PROFILE_VERSION = 1


@dataclass
class ModelTiming:
    """Measured rates of one model of the grid on one device (what a saved profile holds)."""

    family: str
    depth: int
    strategy: str
    train_s_per_example: float
    eval_s_per_example: float
    setup_s: float
    save_s: float  # one validation's writes: the resumable state (model and optimiser) and a checkpoint
    peak_memory_mb: float | None = None
    checkpoint_bytes: int | None = None  # one checkpoint's file (None in profiles saved before it was measured)
    state_bytes: int | None = None  # the resumable state while training (model and optimiser)

    @property
    def model(self) -> str:
        return model_name(self.family, self.depth, self.strategy)


@dataclass
class PretrainTiming:
    """Measured pretraining (e.g. ssl's MoCo v2) of one family: a fixed part and seconds per example."""

    family: str
    initializer: str
    s_per_example: float
    fixed_s: float  # filling the queue of negatives, saving the backbone


@dataclass
class Profile:
    """A device's measurements for a study's settings: reusable with `chexops plan --profile FILE`."""

    device: str
    precision: str
    compile: str
    image_size: int
    batch_size: int
    eval_batch_size: int
    timings: dict[str, ModelTiming] = field(default_factory=dict)
    pretraining: dict[str, PretrainTiming] = field(default_factory=dict)  # per "<family>/<initializer>"
    pack: int = 1
    packing_gain: float | None = None  # None: not measured (pack 1)
    packing_model: str | None = None

    def to_json(self) -> str:
        d = asdict(self) | {"version": PROFILE_VERSION}
        return json.dumps(d, indent=2)

    @classmethod
    def read(cls, path: str | Path) -> Profile:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            if raw.pop("version", None) != PROFILE_VERSION:
                raise ValueError(f"not a version {PROFILE_VERSION} plan profile")
            raw["timings"] = {k: ModelTiming(**v) for k, v in raw["timings"].items()}
            raw["pretraining"] = {k: PretrainTiming(**v) for k, v in raw["pretraining"].items()}
            return cls(**raw)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{path} is not a chexops plan profile ({exc}); write one with "
                              "`chexops plan --save FILE` on the device it describes.") from exc


def model_name(family: str, depth: int, strategy: str) -> str:
    return f"{family}/{strategy}-{depth}" if depth else family
