"""Bring cell instances found at the canonical scale back to the original image size.

Cells cover a small share of a smear field, so only a window around each cell is
upsampled: the cost follows the cells' area, not the image's. Within it, the nucleus
border follows the image's own edges (:mod:`allseg.postprocess.nucleus_edges`).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi

from allseg.data.record import CYTOPLASM, NUCLEUS
from allseg.postprocess.nucleus_edges import nucleus_decision, tidy_nucleus
from allseg.threads import POOL

_WARP = cv2.WARP_INVERSE_MAP


def _window_transform(fy: float, fx: float, y0: int, x0: int) -> np.ndarray:
    """Map full-size window pixels to small-map coordinates (pixel centres aligned)."""
    return np.array([[1 / fx, 0, (x0 + 0.5) / fx - 0.5],
                     [0, 1 / fy, (y0 + 0.5) / fy - 0.5]], np.float64)


Box = tuple[slice, slice]


def upsample_instances(class_prob: np.ndarray, instances: np.ndarray, image: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, list[Box]]:
    """Full-size ``(parts, instances)`` from small ``(3, h, w)`` probabilities and labels,
    for the RGB ``image`` they were predicted from.

    Each full-size pixel takes the instance of its nearest small pixel and the class of
    the bilinearly interpolated probabilities, so borders are smooth rather than blocky;
    the nucleus-versus-cytoplasm split then follows the image's edges and each nucleus
    is tidied (see :mod:`allseg.postprocess.nucleus_edges`). Ids that lose every pixel
    are dropped and the rest renumbered ``1..n`` in order. The third result is each new
    id's bounding box (what ``ndi.find_objects`` would give, without its pass over a
    whole field).

    >>> prob = np.zeros((3, 4, 4), np.float32); prob[0] = 1
    >>> prob[:, 1:3, 1:3] = np.array([0, 0, 1], np.float32)[:, None, None]
    >>> inst = np.zeros((4, 4), np.int32); inst[1:3, 1:3] = 1
    >>> parts, big, boxes = upsample_instances(prob, inst, np.zeros((8, 8, 3), np.uint8))
    >>> int((big == 1).sum()), int(parts.max()), boxes == ndi.find_objects(big)
    (16, 255, True)
    """
    h, w = image.shape[:2]
    fy, fx = h / instances.shape[0], w / instances.shape[1]
    parts = np.zeros((h, w), np.uint8)
    out = np.zeros((h, w), np.int32)
    boxes: list[Box] = []
    found = [(cell_id, box) for cell_id, box in enumerate(ndi.find_objects(instances), start=1)
             if box is not None]
    # Cells side by side (OpenCV and numpy release the GIL); each writes only its own
    # pixels, so they are put in place in id order afterwards.
    windows = POOL.map(lambda cell: _cell_window(class_prob, instances, image, fy, fx, *cell),
                       found)
    for window, inside, nucleus in windows:
        if not inside.any():
            continue
        out[window][inside] = len(boxes) + 1
        parts[window][inside & ~nucleus] = CYTOPLASM
        parts[window][nucleus] = NUCLEUS
        rows = np.flatnonzero(inside.any(axis=1)).tolist()
        cols = np.flatnonzero(inside.any(axis=0)).tolist()
        y0, x0 = window[0].start, window[1].start
        boxes.append((slice(y0 + rows[0], y0 + rows[-1] + 1),
                      slice(x0 + cols[0], x0 + cols[-1] + 1)))
    return parts, out, boxes


def _cell_window(class_prob: np.ndarray, instances: np.ndarray, image: np.ndarray,
                 fy: float, fx: float, cell_id: int, box: Box
                 ) -> tuple[Box, np.ndarray, np.ndarray]:
    """One cell at full size: its window in the image and, over the window, its pixels
    and its nucleus (both empty when no full-size pixel is left to it)."""
    h, w = image.shape[:2]
    y0, y1 = max(0, int((box[0].start - 1) * fy)), min(h, int(np.ceil((box[0].stop + 1) * fy)))
    x0, x1 = max(0, int((box[1].start - 1) * fx)), min(w, int(np.ceil((box[1].stop + 1) * fx)))
    size = (x1 - x0, y1 - y0)
    m = _window_transform(fy, fx, y0, x0)
    # The cell's own pixels all lie in its box: compare only there (a whole-map
    # comparison per cell cost more than the warp), moving the map's origin with it.
    own_box = m.copy()
    own_box[:, 2] -= (box[1].start, box[0].start)
    own = cv2.warpAffine((instances[box] == cell_id).astype(np.uint8), own_box, size,
                         flags=cv2.INTER_NEAREST | _WARP, borderMode=cv2.BORDER_CONSTANT) > 0
    probs = [cv2.warpAffine(p, m, size, flags=cv2.INTER_LINEAR | _WARP,
                            borderMode=cv2.BORDER_REPLICATE) for p in class_prob]
    inside = own & (np.argmax(np.stack(probs), axis=0) > 0)
    window = (slice(y0, y1), slice(x0, x1))
    if not inside.any():
        return window, inside, inside
    nucleus = inside & nucleus_decision(image[window], probs[1], probs[2], np.sqrt(fx * fy))
    return window, inside, inside & tidy_nucleus(nucleus)
