"""Nucleus and whole-cell Dice of single-cell crops under stain and camera shifts.

``bench/stain_shift.py`` scores detection on fields; this scores the masks of the crops
single-cell sets are made of, at a magnification allseg does not train them at. Zheng
Dataset 1 fold 0 (60 cells, held out of the default recipe, ~0.17 um/px) is enlarged
x1.7 to ~0.1 um/px, as the 300 x 300 crops of another lab's set are, and each copy
gets one of the stain bench's shifts. The scale is estimated (the copies state their
true 0.1 um/px only for the scale error). Figures: mean Dice over the set's pixels, the
worst image, images under 0.80 nucleus Dice, scale error.
Writes ``bench/crop_stain/results.json`` and prints a Markdown table; the copies are
kept in ``bench/crop_stain/data`` (gitignored) and reused.

    .venv/bin/python bench/crop_stain.py
    .venv/bin/python bench/crop_stain.py --model runs/x/model --shift "hue -20 deg"
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from source_figures import figures
from stain_shift import DATA, SHIFTS, folder_name, parse_args

from allseg.evaluation.run import evaluate
from allseg.evaluation.splits import select
from allseg.io.atomic import write_json_atomic

ZHENG = DATA / "zheng_wbc" / "Dataset 1"
HERE = Path(__file__).resolve().parent / "crop_stain"
ZHENG_UM_PER_PX = 0.17
CROP_UM_PER_PX = 0.1
#: An image under this nucleus Dice is a failure a user would see.
POOR_DICE = 0.8


def enlarged(image: np.ndarray, mask: np.ndarray, factor: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """The crop and its 0/128/255 part mask resized by ``factor`` (the mask keeps its values).

    >>> image, mask = np.zeros((10, 20, 3), np.uint8), np.full((10, 20), 128, np.uint8)
    >>> [a.shape for a in enlarged(image, mask, 1.7)], np.unique(enlarged(image, mask, 1.7)[1])
    ([(17, 34, 3), (17, 34)], array([128], dtype=uint8))
    """
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return (cv2.resize(image, size, interpolation=cv2.INTER_CUBIC),
            cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))


def shifted_copy(name: str, shift: Callable[[np.ndarray], np.ndarray]) -> Path:
    """Fold 0 of Zheng Dataset 1, enlarged to ~0.1 um/px and shifted, in the
    ``images/ masks/ cells/`` layout (built once, reused)."""
    root = HERE / "data" / folder_name(name)
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("images", "masks", "cells"):
        (root / folder).mkdir(parents=True)
    stems = select(sorted(p.stem for p in ZHENG.glob("*.bmp")), "fold-0/5")
    cells = json.dumps({"um_per_px": CROP_UM_PER_PX, "cells": [{"id": 1, "is_blast": False}]})
    for stem in stems:
        image = np.asarray(Image.open(ZHENG / f"{stem}.bmp").convert("RGB"))
        mask = np.asarray(Image.open(ZHENG / f"{stem}.png").convert("L"))
        image, mask = enlarged(image, mask, ZHENG_UM_PER_PX / CROP_UM_PER_PX)
        image = shift(image)
        mask = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        Image.fromarray(image).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
        (root / "cells" / f"{stem}.json").write_text(cells)
    (root / ".complete").touch()
    return root


def poor_images(eval_dir: Path) -> int:
    """Images whose nucleus Dice is under :data:`POOR_DICE`."""
    rows = csv.DictReader((eval_dir / "per_image.csv").open(encoding="utf-8"))
    return sum(float(row["nucleus_dice"]) < POOR_DICE for row in rows)


def main() -> None:
    args, names = parse_args(__doc__.splitlines()[0])
    if not ZHENG.is_dir():
        raise SystemExit(f"{ZHENG} is absent: this benchmark needs ../shared/data")
    saved = HERE / "results.json"
    results: dict[str, dict] = {}
    if args.shifts is not None and saved.exists():
        results = json.loads(saved.read_text())["shifts"]
    for name in names:
        root = shifted_copy(name, SHIFTS[name])
        out = HERE / "eval" / root.name
        evaluate(root, out, model=args.model, fmt="masks")
        results[name] = {**figures(out)["all"], "poor_images": poor_images(out)}
        print(name, json.dumps(results[name]), flush=True)
    write_json_atomic(saved, {"model": args.model, "shifts": results})
    print("| shift | nucleus Dice (worst image) | whole-cell Dice (worst image) "
          f"| images under {POOR_DICE} nucleus Dice | scale error median / p95 "
          "| crops with a cell called a blast (all normal) |")
    print("| --- " * 6 + "|")
    for name, fig in results.items():
        print(f"| {name} | {fig['nucleus_dice']:.3f} ({fig['nucleus_dice_min']:.2f}) "
              f"| {fig['cell_dice']:.3f} ({fig['cell_dice_min']:.2f}) "
              f"| {fig['poor_images']} of {fig['images']} "
              f"| {fig['scale_error_median']:.1%} / {fig['scale_error_p95']:.1%} "
              f"| {fig.get('photos_with_blast', '-')} |")


if __name__ == "__main__":
    main()
