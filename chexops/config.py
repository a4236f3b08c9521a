"""params.yaml -> frozen dataclasses. Unknown keys and wrong types are errors that list the valid keys.

Defaults are the CheXtransfer protocol; params.yaml at the repository root is the embedded synthetic demo.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexops.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class StudyConfig:
    name: str = "chextransfer"
    seed: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    patients: int = 600
    seed: int = 0
    image_size: int = 128


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"  # synthetic | chexpert
    root: str = "data/raw/CheXpert-v1.0-small"  # the CheXpert folder (for source: chexpert)
    test_labels: str | None = None  # study-level groundtruth.csv; default <root>/groundtruth.csv
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    image_size: int = 320
    frontal_only: bool = True
    label_policy: str = "u-ignore"
    on_bad_image: str = "error"  # error | skip
    holdout_fraction: float = 0.1  # test hold-out from train when there are no test labels
    workers: int = 2
    index_dir: str = "data/index"
    cache_dir: str = "data/cache"


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 14
    weights_dir: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 16
    epochs: int = 3
    max_examples: int | None = None  # a budget cap for demos; None trains the full epochs
    eval_every: int = 8192  # examples between validation passes (and at the end of each epoch)
    top_k: int = 10  # checkpoints kept for the ensemble
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    eval_batch_size: int = 256
    seed: int = 0
    runs_dir: str = "runs"


@dataclass(frozen=True)
class EvalConfig:
    bootstrap: int = 1000
    ci: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class TuneConfig:
    enabled: bool = False
    trials: int = 8
    lr_min: float = 1e-5
    lr_max: float = 1e-2
    examples: int = 4096  # training budget of one trial
    storage: str = "runs/tune/optuna.db"


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    artifacts: str = "mlartifacts"
    experiment: str | None = None  # default: the study name


@dataclass(frozen=True)
class TruncatedRun:
    """One truncated configuration: allowed depths differ per family, so each is listed explicitly."""

    family: str
    depth: int
    init: str = "imagenet"


@dataclass(frozen=True)
class GridConfig:
    families: list[str] = field(default_factory=lambda: ["densenet121"])
    initializers: list[str] = field(default_factory=lambda: ["random"])
    truncated: list[TruncatedRun] = field(default_factory=list)


@dataclass(frozen=True)
class AnalysisConfig:
    bootstrap: int = 1000
    seed: int = 0
    reports_dir: str = "reports"


@dataclass(frozen=True)
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.study.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type hint; ints are accepted where floats are expected."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of keys, got {value!r}.")
        return _build(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list, got {value!r}.")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}.")
    return value


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        path = f"{where}.{key}" if where else key
        if key not in hints:
            raise ConfigError(
                f"unknown params key {path!r}.{did_you_mean(key, valid)} "
                f"Valid keys{' of ' + where if where else ''}: {', '.join(valid)}."
            )
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    return _build(Config, raw or {}, "")


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read params.yaml (a missing file means all defaults is NOT assumed: it is an error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the repository root or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections (study, data, train, ...).")
    return config_from_dict(raw)


def with_overrides(config: Config, section: str, **values: Any) -> Config:
    """A copy of `config` with some keys of one section replaced (used by CLI options and tuning)."""
    current = getattr(config, section)
    raw = {k: v for k, v in values.items() if v is not None}
    merged = _build(type(current), {**dataclasses.asdict(current), **raw}, section)
    return dataclasses.replace(config, **{section: merged})


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def validate(config: Config) -> Config:
    """Semantic checks, including that every name in the grid is registered; run before any work starts."""
    from chexops.components.registry import get_registry

    t, d = config.train, config.data
    _check(t.lr > 0, f"train.lr must be > 0, got {t.lr}. The CheXtransfer protocol uses 1e-4.")
    _check(t.batch_size >= 1, f"train.batch_size must be >= 1, got {t.batch_size}.")
    _check(t.epochs >= 1, f"train.epochs must be >= 1, got {t.epochs}.")
    _check(t.eval_every >= 1, f"train.eval_every must be >= 1 example, got {t.eval_every}.")
    _check(t.top_k >= 1, f"train.top_k must be >= 1, got {t.top_k}.")
    _check(t.max_examples is None or t.max_examples >= 1, "train.max_examples must be >= 1 or null.")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}.")
    _check(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        f"train.device must be auto, cpu, cuda or cuda:N, got {t.device!r}.",
    )
    _check(d.source in ("synthetic", "chexpert"), f"data.source must be synthetic or chexpert, got {d.source!r}.")
    _check(d.on_bad_image in ("error", "skip"), f"data.on_bad_image must be error or skip, got {d.on_bad_image!r}.")
    _check(0 < d.holdout_fraction < 1, f"data.holdout_fraction must be in (0, 1), got {d.holdout_fraction}.")
    _check(d.image_size >= 16, f"data.image_size must be >= 16 pixels, got {d.image_size}.")
    _check(0 < config.eval.ci < 1, f"eval.ci must be in (0, 1), got {config.eval.ci}.")
    _check(config.eval.bootstrap >= 1, f"eval.bootstrap must be >= 1, got {config.eval.bootstrap}.")
    _check(0 < config.tune.lr_min < config.tune.lr_max, "tune.lr_min must be in (0, tune.lr_max).")
    get_registry().label_policy(d.label_policy)
    base = {(f, i, 0) for f in config.grid.families for i in config.grid.initializers}
    for name, init, depth in grid_runs(config):
        _check(depth > 0 or (name, init, depth) in base,
               f"grid.truncated has {name} at depth {depth}; a truncated run drops 1 or more blocks.")
        check_run(name, init, depth, d.image_size, where="grid.truncated has")
    return config


def check_run(family_name: str, initializer: str, depth: int, image_size: int | None = None,
              where: str = "--truncate is") -> None:
    """One configuration's names and depth against the registered components (no torch, nothing written)."""
    from chexops.components.registry import get_registry

    registry = get_registry()
    family = registry.family(family_name)
    registry.initializer(initializer)
    _check(0 <= depth <= family.max_drop,
           f"{where} {family_name} at depth {depth}, but {family_name} allows dropping 1 to {family.max_drop} blocks.")
    _check(image_size is None or image_size >= family.min_size,
           f"{family_name} needs images of at least {family.min_size} px; data.image_size is {image_size}.")


def grid_runs(config: Config) -> list[tuple[str, str, int]]:
    """Every (family, initializer, truncation depth) of the study, full models first, without repeats."""
    g = config.grid
    runs = [(f, i, 0) for f in g.families for i in g.initializers]
    runs += [(t.family, t.init, t.depth) for t in g.truncated]
    return list(dict.fromkeys(runs))
