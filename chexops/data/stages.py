"""The ingest and prepare stages: a CheXpert folder (real or synthetic) -> index CSVs -> decoded caches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chexops.config import Config
from chexops.data.cache import prepare_split
from chexops.data.chexpert import read_chexpert, read_index, write_index
from chexops.data.splits import make_splits
from chexops.errors import ConfigError

SYNTHETIC_DIR = Path("data/synthetic")
SPLITS = ("train", "valid", "test")


def dataset_root(config: Config) -> Path:
    """The CheXpert folder this study reads: the generated synthetic one, or `data.root`."""
    if config.data.source == "synthetic":
        return SYNTHETIC_DIR / "CheXpert-v1.0-small"
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data.root is {config.data.root!r}, which does not exist. Set data.root in params.yaml to your "
            "CheXpert-v1.0 or CheXpert-v1.0-small folder (the one holding train.csv), or use data.source: synthetic."
        )
    return root


def ingest(config: Config, progress: bool = True) -> dict[str, Any]:
    """Read (or first generate) the dataset, split it, and write `data.index_dir`/{train,valid,test}.csv."""
    SYNTHETIC_DIR.mkdir(parents=True, exist_ok=True)
    if config.data.source == "synthetic":
        from chexops.data.synthetic import write_synthetic

        s = config.data.synthetic
        write_synthetic(SYNTHETIC_DIR, s.patients, s.seed, s.image_size, progress=progress,
                        workers=config.data.workers)
    else:  # the output folder still exists, so DVC's declared output is there in both modes
        (SYNTHETIC_DIR / "README.txt").write_text("data.source is chexpert: no synthetic data generated.\n")
    root = dataset_root(config)
    folder = read_chexpert(root, Path(config.data.test_labels) if config.data.test_labels else None)
    splits = make_splits(folder, config.data.frontal_only, config.data.holdout_fraction, config.study.seed)
    index_dir = Path(config.data.index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"root": str(root), "source": config.data.source, "test_source": splits.test_source}
    for name, frame in splits.items():
        write_index(frame, index_dir / f"{name}.csv")
        summary[name] = {"images": len(frame), "patients": int(frame["patient"].nunique()),
                         "studies": int(frame["study"].nunique())}
    (index_dir / "splits.json").write_text(json.dumps(summary, indent=2))
    return summary


def prepare(config: Config, progress: bool = True) -> dict[str, Any]:
    """Decode every split once into `data.cache_dir`; records a content hash over all of them."""
    index_dir, cache_dir = Path(config.data.index_dir), Path(config.data.cache_dir)
    splits_info = json.loads((index_dir / "splits.json").read_text())
    root = Path(splits_info["root"])
    summary: dict[str, Any] = {"test_source": splits_info["test_source"], "splits": {}}
    digest = hashlib.sha256()
    for name in SPLITS:
        info = prepare_split(read_index(index_dir / f"{name}.csv"), root, cache_dir, name, config.data.image_size,
                             config.data.on_bad_image, config.data.workers, progress)
        summary["splits"][name] = {"images": info.count, "skipped": len(info.skipped),
                                   "images_per_second": round(info.images_per_second, 1)}
        digest.update(json.dumps(info.sha256, sort_keys=True).encode())
    summary["data_hash"] = digest.hexdigest()[:16]
    (cache_dir / "cache.json").write_text(json.dumps(summary, indent=2))
    return summary


def data_hash(config: Config) -> str:
    """The prepared data's content hash (tagged on every run), or 'unprepared'."""
    path = Path(config.data.cache_dir) / "cache.json"
    return json.loads(path.read_text())["data_hash"] if path.is_file() else "unprepared"
