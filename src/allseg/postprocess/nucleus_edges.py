"""Draw each nucleus's border at full resolution, along the edges the image shows.

The segmenter sees every image at the canonical scale (0.3 µm/px), so on a crop taken
at 0.1-0.17 µm/px one canonical pixel spans 2-3 image pixels, and a nucleus border
interpolated from it is that coarse: on a 40 px nucleus that alone costs several points
of Dice. The nucleus is the darkest, most sharply bounded thing in a leukocyte, so the
image itself can place its border: a guided filter (He, Sun and Tang, 2010) makes the
nucleus-versus-cytoplasm decision follow the green channel's edges (where haematoxylin
absorbs most) within about two canonical pixels. The cell's outline is left as the
segmenter drew it: pale cytoplasm against the slide has no edge to follow (tried: it
cost synthetic whole-cell Dice 0.954 -> 0.947).

Then each nucleus is tidied: small holes (granules over the nucleus of eosinophils and
basophils, which annotators draw as nucleus) are filled, and specks far smaller than the
nucleus (granules at the membrane) become cytoplasm.

Tuned on Zheng Dataset 1 fold 1 and synthetic fields of a tuning seed (never the test
folds): nucleus Dice 0.930 -> 0.940 and 0.969 -> 0.969, whole-cell Dice unchanged.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Radius of the guided filter, in canonical pixels: the border moves at most this far.
RADIUS_CANONICAL_PX = 2.0
#: Regularisation: edges weaker than about sqrt(EPS) (green levels / 255) are smoothed over.
EPS = 1e-3
#: Holes in a nucleus up to this share of its area are filled.
MAX_HOLE_SHARE = 0.15
#: Nucleus pieces smaller than this share of the cell's nucleus area become cytoplasm.
MIN_PIECE_SHARE = 0.03


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    side = 2 * radius + 1
    return cv2.boxFilter(x, -1, (side, side), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float
                  ) -> np.ndarray:
    """Smooth ``source`` while keeping the edges of ``guide`` (float32 maps, same shape).

    The output is locally an affine function of the guide, so a blurred step in
    ``source`` snaps to where the guide steps.

    >>> guide = np.repeat(np.r_[np.zeros(6), np.ones(6)][None], 3, 0).astype(np.float32)
    >>> blurred = np.repeat(np.linspace(0, 1, 12)[None], 3, 0).astype(np.float32)
    >>> (guided_filter(guide, blurred, 2, 1e-4)[1] > 0.5).astype(int).tolist()
    [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    """
    mean_g, mean_s = _box(guide, radius), _box(source, radius)
    slope = (_box(guide * source, radius) - mean_g * mean_s) / (
        _box(guide * guide, radius) - mean_g * mean_g + eps)
    offset = mean_s - slope * mean_g
    return _box(slope, radius) * guide + _box(offset, radius)


def nucleus_decision(window: np.ndarray, cytoplasm: np.ndarray, nucleus: np.ndarray,
                     scale_factor: float) -> np.ndarray:
    """Where, within an RGB ``window``, the nucleus wins over the cytoplasm, following
    the image's edges; the probabilities are upsampled to the window's size, which is
    ``scale_factor`` times the canonical pixel size.

    The filter is linear in its source, so filtering the difference of the two
    probabilities decides as filtering each would, at half the cost.
    """
    radius = max(1, round(RADIUS_CANONICAL_PX * scale_factor))
    green = window[..., 1].astype(np.float32) / 255.0
    return guided_filter(green, nucleus - cytoplasm, radius, EPS) > 0


def tidy_nucleus(nucleus: np.ndarray) -> np.ndarray:
    """One cell's nucleus mask with small holes filled and specks removed.

    >>> ring = np.zeros((9, 9), bool); ring[1:8, 1:8] = True; ring[4, 4] = False
    >>> ring[0, 0] = True  # a speck apart from the nucleus
    >>> tidy = tidy_nucleus(ring)
    >>> bool(tidy[4, 4]), bool(tidy[0, 0]), int(tidy.sum())
    (True, False, 49)
    """
    area = int(nucleus.sum())
    if not area:
        return nucleus
    flood = np.pad(nucleus.astype(np.uint8), 1)
    cv2.floodFill(flood, None, (0, 0), 1)  # the background reached from outside
    n_holes, holes, stats, _ = cv2.connectedComponentsWithStats(1 - flood[1:-1, 1:-1],
                                                                connectivity=4)
    if n_holes > 1:
        small = stats[:, cv2.CC_STAT_AREA] <= MAX_HOLE_SHARE * area
        small[0] = False
        nucleus = nucleus | small[holes]
    n_pieces, pieces, stats, _ = cv2.connectedComponentsWithStats(nucleus.astype(np.uint8),
                                                                  connectivity=4)
    if n_pieces > 2:
        keep = stats[:, cv2.CC_STAT_AREA] >= MIN_PIECE_SHARE * nucleus.sum()
        keep[0] = False
        nucleus = keep[pieces]
    return nucleus
