"""params.yaml -> frozen dataclasses. Unknown keys and wrong types are errors that list the valid keys.

Defaults are the CheXtransfer protocol; params.yaml at the repository root is the embedded synthetic demo.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexops import naming
from chexops.errors import ConfigError, did_you_mean
from chexops.naming import DEFAULT_STRATEGY, SELECT_METRICS

COMPILE_MODES = ("off", "auto", "compile", "cudagraphs")  # train.compile, see chexops.train.compile


@dataclass(frozen=True)
class StudyConfig:
    name: str = "chextransfer"
    seed: int = 0


@dataclass(frozen=True)
class SyntheticConfig:
    patients: int = 600
    seed: int = 0
    image_size: int = 128
    holdout: int | None = None  # patients in each of valid and test (default: 10% each)
    exposure: float = 1.0  # spread of exposure between images: 1 as on the wards, 0 every image alike


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
    # which validation mean ranks the checkpoints (and scores tuning trials): the 5 competition tasks, as the
    # lab's CheXpert code, or the study's 6 (mean_auroc_6)
    select_metric: str = naming.COMPETITION_MEAN
    # off | auto | compile | cudagraphs (chexops.train.compile); quote "off" in YAML, which reads a bare off as
    # false. Left out of the repr, which is the saved state's fingerprint: how a step is executed is not what
    # a run is, so a run resumes across modes and the run folders of the default (off) keep their bytes.
    compile: str = field(default="off", repr=False)


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
class AugmentConfig:
    """Views for contrastive pretraining of grayscale radiographs (after MoCo-CXR): geometry and exposure only;
    no colour jitter, grayscale conversion or blur, which have no meaning for (or destroy) a radiograph."""

    # Mild: a radiograph's findings are small and often at its edges, and at demo sizes (32-64 px) a 60% crop
    # leaves views too unlike each other to match (the loss then does not fall).
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])  # area fraction of the random crop
    rotate_degrees: float = 10.0  # MoCo-CXR's
    hflip: bool = True  # MoCo-CXR's
    brightness: float = 0.1  # +- shift of the [0, 1] intensity
    contrast: float = 0.1  # x (1 +- contrast) around the image mean


@dataclass(frozen=True)
class PretrainConfig:
    """MoCo v2 in-domain self-supervised pretraining (the `ssl` initializer), on the training split's images."""

    examples: int = 65536  # images seen (each as two views); the budget, like train.max_examples
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | sgd (MoCo v2's: momentum 0.9, weight decay 1e-4)
    temperature: float = 0.2
    momentum: float = 0.99  # key encoder EMA; MoCo v2 uses 0.999 over hundreds of epochs
    queue: int = 4096  # negatives kept from earlier batches
    projection_dim: int = 128
    bn_splits: int = 2  # batch-norm groups that emulate MoCo's shuffled BN on one device
    save_every: int = 1024  # examples between resumable states and loss logs
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0


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
    strategy: str = DEFAULT_STRATEGY  # a registered truncation; named in the run only when not the default


@dataclass(frozen=True)
class GridConfig:
    families: list[str] = field(default_factory=lambda: ["densenet121"])
    initializers: list[str] = field(default_factory=lambda: ["random"])
    truncated: list[TruncatedRun] = field(default_factory=list)
    # Each full configuration is trained on these fractions of the labelled training split (patient-grouped,
    # seeded); pretraining still sees every image. Written as floats (1.0, 0.1) so DVC names folders alike.
    label_fractions: list[float] = field(default_factory=lambda: [1.0])
    # Further train seeds: each full configuration on all labels is also trained once with each, so the analysis
    # can set the spread across retrainings beside the test-resampling CIs. Empty: train.seed only.
    seeds: list[int] = field(default_factory=list)


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
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
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
    if hint is float:
        return _finite(value, where)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}.")
    return value


def _finite(value: Any, where: str) -> float:
    """A float field's value; YAML's .inf and .nan are numbers too, and every check after this assumes finite."""
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{where} must be float, got {value!r}.")
    if not math.isfinite(number):
        raise ConfigError(f"{where} must be a finite number, got {value!r}.")
    return number


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
    required = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
                and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if required:
        given = ", ".join(f"{k}: {v!r}" for k, v in raw.items()) or "nothing"
        raise ConfigError(f"{where or 'params'} lacks the required key{'s' * (len(required) > 1)} "
                          f"{', '.join(required)} (it has {given}); add it. Keys of {where or 'params'}: "
                          f"{', '.join(valid)}.")
    return cls(**kwargs)


def config_from_dict(raw: dict[str, Any] | None) -> Config:
    fractions = ((raw or {}).get("grid") or {}).get("label_fractions") or []
    _check(isinstance(fractions, list), f"grid.label_fractions must be a list of fractions in (0, 1], e.g. "
           f"[{fractions!r}] or [0.1, 1.0]; got {fractions!r} ({type(fractions).__name__}).")
    # DVC writes `1` where Python writes `1.0`: the folder DVC expects and the one the stage writes would differ
    _check(not any(isinstance(f, int) and not isinstance(f, bool) for f in fractions if f is not None),
           f"grid.label_fractions must be written as decimals (e.g. [0.1, 1.0]), got {fractions}.")
    grid = (raw or {}).get("grid") or {}
    if isinstance(grid.get("truncated"), dict):
        raw = {**raw, "grid": {**grid, "truncated": truncated_entries(grid["truncated"])}}  # type: ignore[dict-item]
    compile_mode = ((raw or {}).get("train") or {}).get("compile")
    _check(not isinstance(compile_mode, bool), f"train.compile is {compile_mode!r}: YAML reads a bare off / on as "
           f"a boolean; write it in quotes, e.g. compile: \"off\" (modes: {', '.join(COMPILE_MODES)}).")
    return _build(Config, raw or {}, "")


def truncated_stage_key(entry: dict[str, Any]) -> str:
    """`resnet18-ssl-drop-1`: the key of a grid.truncated entry, so DVC names its stages after the configuration
    (`train_truncated@resnet18-ssl-drop-1`; a list would name them by position, `@0`)."""
    from chexops.naming import truncation_label

    label = truncation_label(int(entry.get("depth", 0)), entry.get("strategy") or DEFAULT_STRATEGY)
    return f"{entry.get('family')}-{entry.get('init', 'imagenet')}-{label}"


def truncated_entries(named: dict[str, Any]) -> list[Any]:
    """grid.truncated written as a mapping {key: entry}: the entries, each key checked against its entry."""
    for key, entry in named.items():
        if isinstance(entry, dict):
            missing = [k for k in ("family", "depth") if k not in entry]
            _check(not missing, f"grid.truncated.{key} lacks the required key{'s' * (len(missing) > 1)} "
                                f"{', '.join(missing)} (it has {entry}); add it, e.g. {{family: resnet18, depth: 1, "
                                "init: imagenet}.")
            depth = entry["depth"]
            if not isinstance(depth, int) or isinstance(depth, bool):
                continue  # not a whole number: the typed build below names the key and its type
            want = truncated_stage_key(entry)
            _check(key == want, f"grid.truncated has the key {key!r} for {entry}; name it {want!r} (family-init-"
                                "truncation), which DVC uses as the stage name.")
    return list(named.values())


def load_config(path: str | Path = naming.PARAMS_FILE) -> Config:
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
    _check(t.select_metric in SELECT_METRICS, f"train.select_metric must be one of {', '.join(SELECT_METRICS)}, "
           f"got {t.select_metric!r}; mean_auroc_5 (the competition tasks) is the lab's choice.")
    _check(t.max_examples is None or t.max_examples >= 1, "train.max_examples must be >= 1 or null.")
    _check(t.precision in ("auto", "fp32", "bf16"), f"train.precision must be auto, fp32 or bf16, got {t.precision!r}.")
    _check(t.compile in COMPILE_MODES,
           f"train.compile must be one of {', '.join(COMPILE_MODES)}, got {t.compile!r} (write \"off\" in quotes).")
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
    _validate_pretrain(config.pretrain)
    g = config.grid
    fractions = g.label_fractions
    _check(bool(fractions) and all(0 < f <= 1 for f in fractions) and len(set(fractions)) == len(fractions),
           f"grid.label_fractions must be distinct fractions in (0, 1], e.g. [0.1, 1.0]; got {fractions}.")
    _check(all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in g.seeds)
           and len(set(g.seeds)) == len(g.seeds) and t.seed not in g.seeds,
           f"grid.seeds must be distinct whole numbers >= 0 other than train.seed ({t.seed}), which every "
           f"configuration already trains with; e.g. [1, 2]; got {g.seeds}.")
    _check(not g.seeds or 1.0 in fractions, "grid.seeds repeats the full configurations on all labels; add 1.0 to "
           "grid.label_fractions, or empty grid.seeds.")
    folders: dict[tuple[str, str, int, float], str] = {}
    for name, init, depth, fraction, strategy in grid_runs(config):
        check_run(name, init, depth, d.image_size, where="grid.truncated has", strategy=strategy)
        other = folders.setdefault((name, init, depth, fraction), strategy)
        _check(other == strategy,
               f"grid.truncated has {name}/{init} at depth {depth} with strategies {other} and {strategy}: a run's "
               "folder (and its DVC outputs) is named by family, initializer and depth only; give them other depths.")
    for entry in g.truncated:
        # a truncated run is judged against its full model, and shares that model's pretraining stage
        _check(entry.family in g.families and entry.init in g.initializers,
               f"grid.truncated has {entry.family}/{entry.init}, which is not a full configuration of the grid; "
               f"add {entry.family} to grid.families and {entry.init} to grid.initializers.")
        _check(entry.depth > 0, f"grid.truncated has {entry.family} at depth {entry.depth}; a truncated run drops "
               "1 or more blocks.")
    return config


def _validate_pretrain(p: PretrainConfig) -> None:
    _check(p.examples >= p.batch_size >= 2, f"pretrain.examples ({p.examples}) must be >= pretrain.batch_size "
           f"({p.batch_size}) >= 2: contrastive learning needs at least two images per batch.")
    _check(p.lr > 0 and p.temperature > 0, "pretrain.lr and pretrain.temperature must be > 0.")
    _check(p.optimizer in ("adam", "sgd"), f"pretrain.optimizer must be adam or sgd, got {p.optimizer!r}.")
    _check(0 <= p.momentum < 1, f"pretrain.momentum must be in [0, 1), got {p.momentum}.")
    _check(p.queue >= p.batch_size and p.queue % p.batch_size == 0,
           f"pretrain.queue ({p.queue}) must be a multiple of pretrain.batch_size ({p.batch_size}).")
    _check(p.bn_splits >= 1 and p.batch_size % p.bn_splits == 0,
           f"pretrain.bn_splits ({p.bn_splits}) must divide pretrain.batch_size ({p.batch_size}).")
    _check(p.save_every >= 1 and p.projection_dim >= 1, "pretrain.save_every and projection_dim must be >= 1.")
    a = p.augment
    _check(len(a.crop_scale) == 2 and 0 < a.crop_scale[0] <= a.crop_scale[1] <= 1,
           f"pretrain.augment.crop_scale must be [low, high] with 0 < low <= high <= 1, got {a.crop_scale}.")
    _check(0 <= a.rotate_degrees <= 180 and 0 <= a.brightness < 1 and 0 <= a.contrast < 1,
           "pretrain.augment: rotate_degrees in [0, 180], brightness and contrast in [0, 1).")


def check_run(family_name: str, initializer: str, depth: int, image_size: int | None = None,
              where: str = "--truncate is", strategy: str = DEFAULT_STRATEGY) -> None:
    """One configuration's names and depth against the registered components (no torch, nothing written)."""
    from chexops.components.registry import get_registry

    registry = get_registry()
    family = registry.family(family_name)
    registry.initializer(initializer)
    truncation = registry.truncation(strategy)
    if strategy != DEFAULT_STRATEGY:
        # A run's folder is named by its depth, so a depth-less strategy would share the full model's folder.
        _check(truncation.takes_depth, f"{where} {family_name} with strategy {strategy!r}, which takes no depth: a "
                                       "study run needs a strategy that cuts at a depth (`chexops build --strategy` "
                                       "still builds it).")
        _check(depth >= 1, f"{where} {family_name} with strategy {strategy!r} at depth 0; give a depth of 1 to "
                           f"{family.max_drop}.")
    _check(0 <= depth <= family.max_drop,
           f"{where} {family_name} at depth {depth}, but {family_name} allows dropping 1 to {family.max_drop} blocks.")
    _check(image_size is None or image_size >= family.min_size,
           f"{family_name} needs images of at least {family.min_size} px; data.image_size is {image_size}.")


def grid_runs(config: Config) -> list[tuple[str, str, int, float, str]]:
    """Every (family, initializer, truncation depth, label fraction, truncation strategy) of the study, full
    models on all labels first, without repeats; the tuple is a RunKey's fields, in order. Truncated runs train
    on all labels."""
    g = config.grid
    fractions = sorted(g.label_fractions, reverse=True)
    runs = [(f, i, 0, 1.0, DEFAULT_STRATEGY) for f in g.families for i in g.initializers if 1.0 in fractions]
    runs += [(t.family, t.init, t.depth, 1.0, t.strategy) for t in g.truncated]
    runs += [(f, i, 0, x, DEFAULT_STRATEGY) for x in fractions if x != 1.0 for f in g.families for i in g.initializers]
    return list(dict.fromkeys(runs))


def grid_keys(config: Config) -> list[naming.RunKey]:
    """Every run of the study: grid_runs' configurations, then each full configuration on all labels once more per
    grid.seeds entry (same settings, another train seed)."""
    keys = [naming.RunKey(*run) for run in grid_runs(config)]
    g = config.grid
    full = [(f, i) for f in g.families for i in g.initializers] if 1.0 in g.label_fractions else []
    return keys + [naming.RunKey(f, i, seed=seed) for seed in g.seeds for f, i in full]


def train_seed(config: Config, key: naming.RunKey) -> int:
    """The seed a run trains with: its own (a grid.seeds repeat) or train.seed."""
    return config.train.seed if key.seed is None else key.seed
