"""Photos from a monochrome camera: given the colours of a stained smear before prediction.

allseg's networks and its red-cell ruler were built on colour photos: a purple nucleus
and pink red cells. A monochrome camera (many lab cameras, grey scans) loses the colour,
and the segmenter then misses about half the leukocytes of a BCCD-like smear
(``bench/stain_shift.py``). Such a photo is recoloured with a table fitted on colour
smears (``bench/fit_grey_to_stain.py``): each brightness relative to the slide and the
cells gets the median colour that brightness has in stained smears. Brightness is all a
grey photo holds, so a nucleus no darker than the red cells stays hard to see; the table
gives back what brightness can.

Brightness is read against two anchors of the photo itself, the slide and its typical
cell (:func:`cell_level`), because stains differ in how dark they draw red cells: relative
to the slide, BCCD's red cells are about as dark (0.77) as its nuclei (0.67) are, where
Raabin's red cells are at 0.56 and nuclei at 0.37. Against the slide alone, a BCCD nucleus
got the colour of a red cell and the segmenter missed it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from allseg.inference.field_of_view import slide_level

#: Colour per brightness, one table for each way of reading brightness (anchored on the
#: cells or relative to the slide only: see :func:`colourise`); written by
#: ``bench/fit_grey_to_stain.py``.
TABLES = {True: Path(__file__).with_name("grey_to_stain_anchored.csv"),
          False: Path(__file__).with_name("grey_to_stain.csv")}
#: The relative brightness levels the table holds (pixels brighter than the slide by more
#: than a quarter are rare: glare, dust).
LEVELS = np.round(np.arange(0.0, 1.2501, 0.01), 4)
#: The slide's grey level in the recoloured photo: typical of the colour photos trained on.
SLIDE_GREY = 215.0
#: Where a photo's typical cell (:func:`cell_level`) is put on the relative scale the table
#: is read on: the red cells of Raabin and PBC photos are about this dark already.
CELL_ANCHOR = 0.6
#: The typical cell is taken to lie within these levels relative to the slide. Only photos
#: whose cells are paler than the anchor are moved: where the cells come out darker, they
#: are as often a crop's one big leukocyte as dark red cells (a PBC crop's pale red cells
#: read 0.5 with its neutrophil). Above 0.85 the "cells" are the slide's own unevenness.
CELL_LEVEL_RANGE = (CELL_ANCHOR, 0.85)
#: Pixels darker than this share of the slide's level are no cell (an eyepiece's surround).
BLACK = 0.15
#: A pixel is grey when its channels differ by at most this (JPEG leaves a little colour).
MAX_CHANNEL_SPREAD = 4
#: A photo is monochrome when at least this share of its pixels is grey.
MIN_GREY_SHARE = 0.99


def is_monochrome(image: np.ndarray) -> bool:
    """True when the RGB ``image`` holds no colour (its three channels agree).

    >>> grey = np.repeat(np.arange(100, dtype=np.uint8).reshape(10, 10, 1), 3, axis=2)
    >>> is_monochrome(grey), is_monochrome(np.dstack([grey[..., 0], grey[..., 0] // 2,
    ...                                                grey[..., 0]]))
    (True, False)
    """
    sample = image[::4, ::4].astype(np.int16)
    spread = np.maximum(np.abs(sample[..., 0] - sample[..., 1]),
                        np.abs(sample[..., 1] - sample[..., 2]))
    return float(np.mean(spread <= MAX_CHANNEL_SPREAD)) >= MIN_GREY_SHARE


@cache
def _table(anchor_on_cells: bool) -> np.ndarray:
    """(levels, 4): relative grey, then red, green, blue relative to the slide's grey."""
    path = TABLES[anchor_on_cells]
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    if table.shape != (len(LEVELS), 4) or not np.allclose(table[:, 0], LEVELS):
        raise ValueError(f"{path}: expected {len(LEVELS)} rows for the levels "
                         f"{LEVELS[0]}-{LEVELS[-1]}; refit it with bench/fit_grey_to_stain.py")
    return table


def cell_level(relative: np.ndarray) -> float:
    """The typical cell's brightness in a grey photo's ``relative`` levels (the slide at 1):
    the median of the pixels that Otsu's threshold tells from the slide. Red cells
    outnumber leukocytes on a smear, so this is mostly their level.

    >>> relative = np.full((20, 20), 1.0); relative[:8] = 0.7; relative[:2, :2] = 0.3
    >>> round(cell_level(relative), 2)
    0.7
    """
    levels = relative[relative > BLACK]
    if levels.size == 0 or np.ptp(levels) < 1e-3:
        return CELL_ANCHOR
    cells = levels[levels < threshold_otsu(levels)]
    return float(np.clip(np.median(cells), *CELL_LEVEL_RANGE))


def anchored(relative: np.ndarray, cell: float) -> np.ndarray:
    """``relative`` levels moved piecewise-linearly so that ``cell`` lands on
    ``CELL_ANCHOR`` and the slide stays at 1 (black stays black).

    >>> anchored(np.array([0.0, 0.3, 0.75, 1.0]), 0.75).round(3).tolist()
    [0.0, 0.24, 0.6, 1.0]
    """
    darker = relative * (CELL_ANCHOR / cell)
    lighter = CELL_ANCHOR + (relative - cell) * ((1 - CELL_ANCHOR) / (1 - cell))
    return np.where(relative < cell, darker, lighter)


def colourise(image: np.ndarray, anchor_on_cells: bool = True) -> np.ndarray:
    """The grey RGB ``image`` with a stained smear's colours, its slide at ``SLIDE_GREY``.

    With ``anchor_on_cells`` False, brightness is read relative to the slide only, on a
    table fitted that way: the red cells' ruler measures red cells best so (anchored on
    the cells, BCCD's pale red cells turn as dark as Raabin's and some photos' read 30-50%
    too large; the anchored table read at the slide-relative levels was worse still).

    >>> slide_and_nucleus = np.full((8, 8, 3), 200, np.uint8)
    >>> slide_and_nucleus[:2, :2] = 60
    >>> colour = colourise(slide_and_nucleus)
    >>> nucleus, slide = colour[0, 0].astype(int), colour[7, 7].astype(int)
    >>> bool(nucleus[2] > nucleus[1] + 40)  # the dark nucleus turns purple
    True
    >>> bool(slide.min() > 180)  # the slide stays pale
    True
    """
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    table = _table(anchor_on_cells)
    sample = grey[::4, ::4].astype(np.float32)
    slide = max(slide_level(sample), 1.0)
    relative = np.arange(256) / slide
    if anchor_on_cells:
        relative = anchored(relative, cell_level(sample / slide))
    lookup = np.stack([np.interp(relative, table[:, 0], table[:, channel])
                       for channel in (1, 2, 3)], axis=1)
    lookup = np.clip(np.round(lookup * SLIDE_GREY), 0, 255).astype(np.uint8)
    return lookup[grey]


def in_colour(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The RGB ``image`` as the networks see it, recoloured when it is monochrome, and
    whether it was."""
    return (colourise(image), True) if is_monochrome(image) else (image, False)


def for_red_cells(image: np.ndarray) -> np.ndarray:
    """The RGB ``image`` as the red-cell ruler sees it: recoloured against the slide alone
    when it is monochrome (see :func:`colourise`)."""
    return colourise(image, anchor_on_cells=False) if is_monochrome(image) else image
