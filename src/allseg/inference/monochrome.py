"""Photos from a monochrome camera: given the colours of a stained smear before prediction.

allseg's networks and its red-cell ruler were built on colour photos: a purple nucleus
and pink red cells. A monochrome camera (many lab cameras, grey scans) loses the colour,
and the segmenter then misses about half the leukocytes of a BCCD-like smear
(``bench/stain_shift.py``). Such a photo is recoloured with a table fitted on colour
smears (``bench/fit_grey_to_stain.py``): each brightness relative to the slide gets the
median colour that brightness has in stained smears. Brightness is all a grey photo
holds, so a nucleus no darker than the red cells stays hard to see; the table gives back
what brightness can.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np

from allseg.inference.field_of_view import slide_level

#: Colour per brightness relative to the slide; written by ``bench/fit_grey_to_stain.py``.
TABLE = Path(__file__).with_name("grey_to_stain.csv")
#: The relative brightness levels the table holds (pixels brighter than the slide by more
#: than a quarter are rare: glare, dust).
LEVELS = np.round(np.arange(0.0, 1.2501, 0.01), 4)
#: The slide's grey level in the recoloured photo: typical of the colour photos trained on.
SLIDE_GREY = 215.0
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
def _table() -> np.ndarray:
    """(levels, 4): relative grey, then red, green, blue relative to the slide's grey."""
    table = np.loadtxt(TABLE, delimiter=",", skiprows=1, ndmin=2)
    if table.shape != (len(LEVELS), 4) or not np.allclose(table[:, 0], LEVELS):
        raise ValueError(f"{TABLE}: expected {len(LEVELS)} rows for the levels "
                         f"{LEVELS[0]}-{LEVELS[-1]}; refit it with bench/fit_grey_to_stain.py")
    return table


def colourise(image: np.ndarray) -> np.ndarray:
    """The grey RGB ``image`` with a stained smear's colours, its slide at ``SLIDE_GREY``.

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
    table = _table()
    relative = np.arange(256) / max(slide_level(grey[::4, ::4]), 1.0)
    lookup = np.stack([np.interp(relative, table[:, 0], table[:, channel])
                       for channel in (1, 2, 3)], axis=1)
    lookup = np.clip(np.round(lookup * SLIDE_GREY), 0, 255).astype(np.uint8)
    return lookup[grey]


def in_colour(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """The RGB ``image``, recoloured when it is monochrome, and whether it was."""
    return (colourise(image), True) if is_monochrome(image) else (image, False)
