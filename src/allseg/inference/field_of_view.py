"""The microscope's field of view: blank what lies outside it before anything measures.

A photo taken through the eyepiece (a phone on an adapter, many lab cameras) shows the
round field in a black surround, and some cameras darken their corners. The segmenter
never saw such a surround in training and takes it for huge stained cells, which then
read as blasts; the red-cell ruler counts it as cells too. The surround is near-black and
reaches the image border, which no cell does, so it is found with a flood from the border
and painted the slide's colour: what remains looks like an ordinary field whose cells
stop at the edge of the circle.
"""

from __future__ import annotations

import cv2
import numpy as np

#: A pixel is outside the field when its brightest channel is below this (0-255) ...
MAX_DARK_LEVEL = 60
#: ... and below this share of the slide's brightness (a dim photo stays a photo).
MAX_DARK_SHARE = 0.35
#: A dark region reaching the border counts as surround only above this image share
#: (a dark nucleus cut by the border is far smaller).
MIN_SURROUND_SHARE = 0.01
#: The surround is widened by this share of the image's shorter side, to take the
#: blurred rim between black and slide along with it.
RIM_SHARE = 0.015
#: The surround is looked for on a copy whose longer side is at most this many pixels.
WORK_SIDE = 512


def slide_level(brightness: np.ndarray) -> float:
    """The empty slide's brightness: a high percentile (95th) of the image's."""
    return float(np.percentile(brightness, 95))


def outside_field(image: np.ndarray) -> np.ndarray | None:
    """Mask of the image's dark surround outside the field of view, or None if it has none.

    >>> field = np.full((100, 100, 3), 220, np.uint8)
    >>> yy, xx = np.mgrid[:100, :100]
    >>> field[np.hypot(yy - 50, xx - 50) > 45] = 5
    >>> field[45:55, 45:55] = 40  # a dark nucleus inside the field stays
    >>> mask = outside_field(field)
    >>> bool(mask[0, 0]), bool(mask[50, 50]), bool(mask[50, 2])
    (True, False, True)
    >>> outside_field(np.full((50, 50, 3), 220, np.uint8)) is None
    True
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    if not (border.max(axis=1) < MAX_DARK_LEVEL).any():  # the usual photo: no dark border
        return None
    h, w = image.shape[:2]
    factor = min(1.0, WORK_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))),
                       interpolation=cv2.INTER_AREA) if factor < 1 else image
    brightness = np.maximum(np.maximum(small[..., 0], small[..., 1]), small[..., 2])
    cut = min(MAX_DARK_LEVEL, MAX_DARK_SHARE * slide_level(brightness))
    frame = np.concatenate([brightness[0], brightness[-1], brightness[:, 0], brightness[:, -1]])
    if not (frame < cut).any():  # nothing dark enough for this photo's slide
        return None
    dark = (brightness < cut).astype(np.uint8)
    n, labels = cv2.connectedComponents(dark, connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    surround = np.isin(labels, border[border > 0])
    if surround.mean() < MIN_SURROUND_SHARE:
        return None
    rim = max(1, round(RIM_SHARE * min(brightness.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
    surround = cv2.dilate(surround.astype(np.uint8), kernel)
    if factor < 1:
        surround = cv2.resize(surround, (w, h), interpolation=cv2.INTER_NEAREST)
    return surround.astype(bool)


def paint_slide(image: np.ndarray, surround: np.ndarray | None) -> np.ndarray:
    """The image with its ``surround`` pixels painted the colour of the slide inside."""
    if surround is None or surround.all():
        return image
    inside = image[~surround]
    brightness = inside.max(axis=1)
    slide = np.median(inside[brightness >= np.percentile(brightness, 80)], axis=0)
    blanked = image.copy()
    blanked[surround] = np.round(slide).astype(np.uint8)
    return blanked


def blank_outside_field(image: np.ndarray) -> np.ndarray:
    """The image with its surround (see :func:`outside_field`) painted the slide's colour;
    the image itself when it has none."""
    return paint_slide(image, outside_field(image))
