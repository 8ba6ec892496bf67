"""Fit the table that gives a monochrome camera's photos the colours of a stained smear.

For each brightness relative to the slide (a pixel's grey level over the image's 95th
percentile, so an under-exposed camera reads like a bright one), the median colour of the
colour photos' pixels of that brightness, itself relative to the slide. Two tables: one
with brightness also anchored on the image's typical cell (``monochrome.anchored``, so a
stain with pale red cells reads like one with darker ones; the segmenter's), one without
(the red-cell ruler's). Each
source (BCCD ``trainval``, TXL-PBC folds 1-4 of Raabin, PBC and BCD) weighs the same;
TXL-PBC fold 0 and BCCD ``test``, on which ``bench/stain_shift.py`` scores the monochrome
camera, are never looked at. Writes both ``monochrome.TABLES``.

    .venv/bin/python bench/fit_grey_to_stain.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from allseg.evaluation.splits import select
from allseg.inference import monochrome
from allseg.inference.field_of_view import slide_level

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TXL = DATA / "txl_pbc" / "train" / "images"
BCCD = DATA / "bccd" / "BCCD"
PIXELS_PER_SOURCE = 400_000
#: Images are shrunk to this width first: the table needs colours, not detail.
WIDTH = 256
#: A level is fitted from at least this many pixels, else interpolated from its neighbours.
MIN_PIXELS = 50


def tuning_images() -> dict[str, list[Path]]:
    """Source name -> its images that no benchmark scores."""
    stems = sorted(p.stem for p in TXL.iterdir())
    held_out = set(select(stems, "fold-0/5"))
    sources: dict[str, list[Path]] = {}
    for stem in stems:
        if stem not in held_out:
            sources.setdefault(stem.split("_")[0], []).append(TXL / f"{stem}.jpg")
    trainval = (BCCD / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    sources["bccd"] = [BCCD / "JPEGImages" / f"{stem}.jpg" for stem in trainval]
    return sources


def relative_pixels(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grey level relative to the slide, the same anchored on the cells, RGB relative to
    the slide) of every pixel of a shrunk copy of ``path``."""
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    image = cv2.resize(image, (WIDTH, max(1, round(WIDTH * h / w))), interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    slide = max(slide_level(grey), 1.0)
    relative = grey / slide
    anchored = monochrome.anchored(relative, monochrome.cell_level(relative))
    return relative.ravel(), anchored.ravel(), image.reshape(-1, 3) / slide


def fit_table(grey: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(levels, 3): the median colour of the pixels at each of ``monochrome.LEVELS``."""
    centres = monochrome.LEVELS
    step = centres[1] - centres[0]
    table = np.full((len(centres), 3), np.nan)
    for i, centre in enumerate(centres):
        inside = np.abs(grey - centre) <= step / 2
        if np.count_nonzero(inside) >= MIN_PIXELS:
            table[i] = np.median(rgb[inside], axis=0)
    for channel in range(3):
        known = ~np.isnan(table[:, channel])
        table[:, channel] = np.interp(centres, centres[known], table[known, channel])
    return table


def write_table(path: Path, table: np.ndarray) -> None:
    lines = ["relative_grey,red,green,blue"]
    lines += [f"{c:.4f},{r:.4f},{g:.4f},{b:.4f}" for c, (r, g, b) in zip(monochrome.LEVELS, table,
                                                                         strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(table)} levels)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    if not TXL.is_dir() or not BCCD.is_dir():
        raise SystemExit(f"{DATA} lacks TXL-PBC or BCCD: this script needs ../shared/data")
    rng = np.random.default_rng(0)
    samples: list[tuple[np.ndarray, ...]] = []
    for name, paths in tuning_images().items():
        pixels = [relative_pixels(p) for p in paths]
        columns = [np.concatenate(column) for column in zip(*pixels, strict=True)]
        keep = rng.choice(len(columns[0]), min(len(columns[0]), PIXELS_PER_SOURCE), replace=False)
        samples.append(tuple(column[keep] for column in columns))
        print(f"{name}: {len(paths)} images")
    relative, anchored, rgb = (np.concatenate(column) for column in zip(*samples, strict=True))
    write_table(monochrome.TABLES[False], fit_table(relative, rgb))
    write_table(monochrome.TABLES[True], fit_table(anchored, rgb))

if __name__ == "__main__":
    main()
