"""Stage ingest: read the CheXpert folder (or first generate the synthetic one), split it by patient, and write
`data.index_dir`/{train,valid,test}.csv with splits.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chexops import naming
from chexops.config import Config
from chexops.errors import ConfigError
from chexops.stages.context import StageContext


def dataset_root(config: Config) -> Path:
    """The CheXpert folder this study reads: the generated synthetic one, or `data.root`."""
    if config.data.source == "synthetic":
        return naming.SYNTHETIC_DIR / "CheXpert-v1.0-small"
    root = Path(config.data.root).expanduser()
    if not root.is_dir():
        raise ConfigError(
            f"data.root is {config.data.root!r}, which does not exist. Set data.root in params.yaml to your "
            "CheXpert-v1.0 or CheXpert-v1.0-small folder (the one holding train.csv), or use data.source: synthetic."
        )
    return root


def run(ctx: StageContext) -> dict[str, Any]:
    """Read (or first generate) the dataset, split it, and write `data.index_dir`/{train,valid,test}.csv."""
    from chexops.data.chexpert import read_chexpert, write_index
    from chexops.data.splits import composition, make_splits

    config = ctx.config
    naming.SYNTHETIC_DIR.mkdir(parents=True, exist_ok=True)
    if config.data.source == "synthetic":
        from chexops.data.synthetic import write_synthetic

        s = config.data.synthetic
        write_synthetic(naming.SYNTHETIC_DIR, s.patients, s.seed, s.image_size, progress=ctx.progress,
                        workers=config.data.workers)
    else:  # the output folder still exists, so DVC's declared output is there in both modes
        (naming.SYNTHETIC_DIR / "README.txt").write_text("data.source is chexpert: no synthetic data generated.\n")
    root = dataset_root(config)
    folder = read_chexpert(root, Path(config.data.test_labels) if config.data.test_labels else None)
    splits = make_splits(folder, config.data.frontal_only, config.data.holdout_fraction, config.study.seed)
    index_dir = Path(config.data.index_dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"root": str(root), "source": config.data.source, "test_source": splits.test_source,
                               "frontal_only": config.data.frontal_only}
    for name, frame in splits.items():
        write_index(frame, index_dir / f"{name}.csv")
        summary[name] = composition(frame) | {"dropped_no_frontal": splits.dropped_studies.get(name, 0)}
    (index_dir / naming.SPLITS_FILE).write_text(json.dumps(summary, indent=2))
    return summary
