"""Per-source figures from an ``allseg evaluate`` folder's ``per_image.csv``.

TXL-PBC names its images ``<source>_<id>`` (raabin, pbc, bcd), so one evaluation of its
fold 0 is split here by source; other sets count as one source.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def source_of(image: str, split_by_prefix: bool) -> str:
    """``raabin`` for ``.../raabin_x.jpg`` when splitting by prefix, else ``all``.

    >>> source_of("/d/train/images/pbc_12.jpg", True), source_of("001", False)
    ('pbc', 'all')
    """
    return Path(image).stem.split("_", 1)[0] if split_by_prefix else "all"


def figures(eval_dir: Path, split_by_prefix: bool = False) -> dict[str, dict[str, float]]:
    """Detection F1, red-cell boxes hit, Dice, scale error and the photos with a cell
    called a blast per source, from the per-image rows (every real set here holds normal
    blood only, so each such photo is a false "ALL suspected")."""
    rows = list(csv.DictReader((eval_dir / "per_image.csv").open(encoding="utf-8")))
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[source_of(row["image"], split_by_prefix)].append(row)
    out: dict[str, dict[str, float]] = {}
    for source, group in sorted(groups.items()):
        figs: dict[str, float] = {"images": len(group)}

        def total(key: str, group: list[dict] = group) -> int:
            return sum(int(float(r[key])) for r in group if r.get(key) not in (None, ""))

        if any(r.get("box_tp") for r in group):
            figs["detection_f1"] = _f1(total("box_tp"), total("box_fp"), total("box_fn"))
            figs["fp"], figs["fn"] = total("box_fp"), total("box_fn")
        if any(r.get("red_cells") for r in group):
            figs["red_cells_hit_rate"] = total("red_cells_hit") / max(1, total("red_cells"))
        if errors := [abs(float(r["scale_error"])) for r in group if r.get("scale_error")]:
            figs["scale_error_median"] = float(np.median(errors))
            figs["scale_error_p95"] = float(np.percentile(errors, 95))
        figs["photos_with_blast"] = sum(int(r["blast_count"]) > 0 for r in group)
        for part in ("nucleus", "cell"):
            if any(r.get(f"{part}_tp") for r in group):
                figs[f"{part}_dice"] = _f1(total(f"{part}_tp"), total(f"{part}_fp"),
                                           total(f"{part}_fn"))
                figs[f"{part}_dice_min"] = min(float(r[f"{part}_dice"]) for r in group)
        out[source] = figs
    return out
