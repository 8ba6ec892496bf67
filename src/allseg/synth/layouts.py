"""Write synthetic datasets to disk in the layouts our readers understand.

One ``numpy.random.Generator`` per image, seeded from ``(seed, index)``, makes every
file reproducible on its own: the same seed writes byte-identical files, and image 7
does not change when ``n`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from rich.progress import track

from allseg.data.record import BLAST
from allseg.io.atomic import write_atomic, write_image_atomic, write_json_atomic, write_text_atomic
from allseg.synth.cells import NORMAL_WEIGHTS, RED_CELL_UM, Range
from allseg.synth.smear import SynthField, generate_crop, generate_field

LAYOUTS = ("allidb1", "allidb2", "masks")
_DEFAULT_UM_PER_PX = {"allidb1": (0.07, 0.11), "allidb2": (0.075, 0.1), "masks": (0.1, 0.2)}
#: ALL-IDB1 was shot with two cameras: (width, height).
ALLIDB1_SIZES = ((2592, 1944), (1712, 1368))
CROP_SIZE = 257
MASKS_SIZE = (640, 480)

Scale = float | tuple[float, float]


def default_um_per_px(layout: str) -> tuple[float, float]:
    """The pixel-size range (µm) sampled per image when the caller gives none."""
    return _DEFAULT_UM_PER_PX[layout]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of every other image."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _sample_scale(rng: np.random.Generator, scale: Scale) -> float:
    return float(scale) if np.isscalar(scale) else float(rng.uniform(*scale))


def _balanced_labels(n: int, seed: int) -> np.ndarray:
    """Half 1s and half 0s in a seed-dependent order (the ``_Y`` of ALL-IDB names)."""
    return np.random.default_rng(seed).permutation(np.arange(n) % 2)


def _inside_point(field: SynthField, cell: dict) -> tuple[int, int]:
    """The cell's rounded centroid, or its nearest pixel when the centroid falls outside."""
    x, y = (round(v) for v in cell["centroid"])
    if field.instances[y, x] == cell["id"]:
        return x, y
    ys, xs = np.nonzero(field.instances == cell["id"])
    i = int(np.argmin((xs - cell["centroid"][0]) ** 2 + (ys - cell["centroid"][1]) ** 2))
    return int(xs[i]), int(ys[i])


def _write_cells(path: Path, field: SynthField) -> None:
    write_json_atomic(path, {"um_per_px": field.um_per_px, "cells": field.cells})


def _write_tiff(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda tmp: tifffile.imwrite(tmp, array))


def _write_allidb1(out: Path, index: int, label: int, rng: np.random.Generator,
                   scale: Scale, red_cell_um: Range) -> Path:
    width, height = ALLIDB1_SIZES[index % 2]
    blast_fraction = rng.uniform(0.3, 0.9) if label else 0.0
    field = generate_field(rng, height, width, _sample_scale(rng, scale), blast_fraction,
                           red_cell_um=red_cell_um)
    stem = f"Im{index + 1:03d}_{label}"
    points = [_inside_point(field, c) for c in field.cells if c["is_blast"]]
    image = write_image_atomic(out / "im" / f"{stem}.jpg", field.image,
                               jpeg_quality=int(rng.integers(80, 96)))
    write_text_atomic(out / "xyc" / f"{stem}.xyc", "".join(f"{x}\t{y}\n" for x, y in points))
    write_image_atomic(out / "gt" / "parts" / f"{stem}.png", field.parts)
    write_image_atomic(out / "gt" / "instances" / f"{stem}.png",
                       field.instances.astype(np.uint16))
    _write_cells(out / "gt" / "cells" / f"{stem}.json", field)
    return image


def _write_allidb2(out: Path, index: int, label: int, rng: np.random.Generator,
                   scale: Scale, red_cell_um: Range) -> Path:
    names, weights = list(NORMAL_WEIGHTS), list(NORMAL_WEIGHTS.values())
    cell_type = BLAST if label else str(rng.choice(names, p=weights))
    field = generate_crop(rng, CROP_SIZE, cell_type, _sample_scale(rng, scale), red_cell_um)
    stem = f"Im{index + 1:03d}_{label}"
    image = out / f"{stem}.tif"
    _write_tiff(image, field.image)
    _write_tiff(out / "gt" / f"{stem}.tif", np.where(field.instances == 1, 255, 0).astype(np.uint8))
    write_image_atomic(out / "parts" / f"{stem}.png", field.parts)
    _write_cells(out / "cells" / f"{stem}.json", field)
    return image


def _write_masks(out: Path, index: int, label: int, rng: np.random.Generator,
                 scale: Scale, red_cell_um: Range) -> Path:
    """A Zheng-style mask folder; ``label`` is unused (fields mix blasts and normals)."""
    width, height = MASKS_SIZE
    field = generate_field(rng, height, width, _sample_scale(rng, scale),
                           n_leukocytes=int(rng.integers(1, 5)), red_cell_um=red_cell_um)
    stem = f"synth_{index + 1:04d}"
    image = write_image_atomic(out / "images" / f"{stem}.png", field.image)
    write_image_atomic(out / "masks" / f"{stem}.png", field.parts)
    write_image_atomic(out / "instances" / f"{stem}.png", field.instances.astype(np.uint16))
    _write_cells(out / "cells" / f"{stem}.json", field)
    return image


_WRITERS: dict[str, Callable[[Path, int, int, np.random.Generator, Scale, Range], Path]] = {
    "allidb1": _write_allidb1, "allidb2": _write_allidb2, "masks": _write_masks}


def write_dataset(layout: str, out: str | Path, n: int, seed: int = 0,
                  um_per_px: Scale | None = None, progress: bool = False,
                  red_cell_um: Range | None = None) -> list[Path]:
    """Write ``n`` images (and their exact masks) in ``layout``; returns the image paths.

    ``um_per_px`` is a pixel size or a (lo, hi) range sampled per image; by default
    :func:`default_um_per_px`. ``red_cell_um`` is the range of the red cells' stained
    diameters, by default ``RED_CELL_UM`` (real photos'). Existing files of the same names
    are overwritten.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    scale = default_um_per_px(layout) if um_per_px is None else um_per_px
    labels = _balanced_labels(n, seed)
    red = RED_CELL_UM if red_cell_um is None else red_cell_um
    write = _WRITERS[layout]
    return [write(Path(out), i, int(labels[i]), image_rng(seed, i), scale, red)
            for i in track(range(n), description=f"synth {layout}", disable=not progress)]
