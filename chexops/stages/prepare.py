"""Stage prepare: decode every split once into `data.cache_dir` (uint8, memory-mapped); cache.json records what
was asked and a content hash."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chexops import naming, records
from chexops.stages.context import StageContext


def run(ctx: StageContext) -> dict[str, Any]:
    """Decode every split once into `data.cache_dir`; cache.json records what was asked and a content hash."""
    from chexops.data.cache import prepare_split
    from chexops.data.chexpert import read_index

    config = ctx.config
    index_dir, cache_dir = Path(config.data.index_dir), Path(config.data.cache_dir)
    splits_info = records.read_splits(index_dir)
    root = Path(splits_info["root"])
    # cache.json is a DVC output: only what the inputs determine goes in, so the same data gives the same bytes
    record: dict[str, Any] = {"test_source": splits_info["test_source"], "image_size": config.data.image_size,
                              "on_bad_image": config.data.on_bad_image, "splits": {}}
    timings: dict[str, float] = {}
    digest = hashlib.sha256()
    for name in naming.SPLITS:
        index = read_index(index_dir / f"{name}.csv")
        info = prepare_split(index, root, cache_dir, name, config.data.image_size,
                             config.data.on_bad_image, config.data.workers, ctx.progress)
        # what the split lost on the way, and why: evaluation is per exam, so a lost exam must be reported
        lost = index["study"].nunique() - read_index(info.csv_path)["study"].nunique()
        record["splits"][name] = {"images": info.count, "skipped": len(info.skipped), "studies_unreadable": int(lost),
                                  "studies_no_frontal": splits_info.get(name, {}).get("dropped_no_frontal", 0),
                                  "frontal_only": splits_info.get("frontal_only", True)}
        timings[name] = round(info.images_per_second, 1)
        digest.update(json.dumps(info.sha256, sort_keys=True).encode())
    record["data_hash"] = digest.hexdigest()[:16]
    naming.cache_file(cache_dir).write_text(json.dumps(record, indent=2))
    return record | {"images_per_second": timings}
