"""Red cells as a ruler: the pixel size a dataset's red-cell boxes imply.

A red cell is about 7.5 µm across in a smear, so where a dataset boxes its red cells
(BCCD, TXL-PBC) the median box side gives each image's scale. Boxes cut by the image
border are too small in one direction: they only count, by their uncut side, where too
few boxes are whole.
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


def cut_box_sides(boxes: np.ndarray, shape: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    """The uncut side of each box cut by one image border whose cell's centre is inside.

    A round cell cut by a vertical border keeps its full height as long as its centre is
    in the image, that is while the visible width is at least half the height (and
    likewise for a horizontal border). A box cut by two borders, or past its centre,
    gives nothing.

    >>> cut_box_sides(np.array([[0, 10, 50, 85], [0, 100, 20, 175]]), (300, 300)).tolist()
    [75.0]
    """
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    h, w = shape
    x0, y0, x1, y1 = boxes.T
    width, height = x1 - x0, y1 - y0
    left, right = x0 <= margin, x1 >= w - 1 - margin
    top, bottom = y0 <= margin, y1 >= h - 1 - margin
    cut_sideways = (left ^ right) & ~(top | bottom) & (width >= height / 2)
    cut_up_down = (top ^ bottom) & ~(left | right) & (height >= width / 2)
    return np.concatenate([height[cut_sideways], width[cut_up_down]])


def red_cell_scale(boxes: np.ndarray, shape: tuple[int, int]) -> float | None:
    """µm per pixel from red-cell boxes (median side of whole boxes = 7.5 µm), or None.

    Where fewer than three boxes are whole (a crop at 100x, where most red cells touch the
    border), the uncut sides of border-cut boxes (:func:`cut_box_sides`) join them: on
    TXL-PBC photos with enough of both, those sides alone read 0.98-1.00x the whole boxes'
    scale in median per source (5th-95th percentile 0.87-1.13x).

    >>> boxes = np.array([[10, 10, 85, 85], [100, 10, 175, 85], [10, 100, 85, 175]])
    >>> red_cell_scale(boxes, (300, 300))
    0.1
    >>> red_cell_scale(boxes[:2], (300, 300)) is None
    True
    >>> red_cell_scale(np.vstack([boxes[:2], [[0, 200, 50, 275]]]), (300, 300))
    0.1
    """
    whole = whole_boxes(boxes, shape)
    sides = 0.5 * ((whole[:, 2] - whole[:, 0]) + (whole[:, 3] - whole[:, 1]))
    if len(sides) < MIN_RULER_BOXES:
        sides = np.concatenate([sides, cut_box_sides(boxes, shape)])
    if len(sides) < MIN_RULER_BOXES:
        return None
    return round(RBC_DIAMETER_UM / float(np.median(sides)), 6)
