"""Red cells as a ruler: the pixel size a dataset's red-cell boxes imply.

A red cell is about 7.5 µm across in a smear, so where a dataset boxes its red cells
(BCCD, TXL-PBC) the median box side gives each image's scale. Boxes cut by the image
border are too small and are left out.
"""

from __future__ import annotations

import numpy as np

#: Diameter of a red blood cell in a stained smear.
RBC_DIAMETER_UM = 7.5
#: Fewer whole red-cell boxes than this give no trusted scale.
MIN_RULER_BOXES = 3


def whole_boxes(boxes: np.ndarray, shape: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """The ``x0, y0, x1, y1`` boxes that do not touch the image border.

    >>> whole_boxes(np.array([[0, 5, 10, 15], [5, 5, 15, 15]]), (100, 100)).tolist()
    [[5.0, 5.0, 15.0, 15.0]]
    """
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    h, w = shape
    inside = ((boxes[:, 0] > margin) & (boxes[:, 1] > margin)
              & (boxes[:, 2] < w - 1 - margin) & (boxes[:, 3] < h - 1 - margin))
    return boxes[inside]


def red_cell_scale(boxes: np.ndarray, shape: tuple[int, int]) -> float | None:
    """µm per pixel from red-cell boxes (median side of whole boxes = 7.5 µm), or None.

    >>> boxes = np.array([[10, 10, 85, 85], [100, 10, 175, 85], [10, 100, 85, 175]])
    >>> red_cell_scale(boxes, (300, 300))
    0.1
    >>> red_cell_scale(boxes[:2], (300, 300)) is None
    True
    """
    whole = whole_boxes(boxes, shape)
    if len(whole) < MIN_RULER_BOXES:
        return None
    sides = 0.5 * ((whole[:, 2] - whole[:, 0]) + (whole[:, 3] - whole[:, 1]))
    return round(RBC_DIAMETER_UM / float(np.median(sides)), 6)
