"""Weak leukocyte masks derived from stain colour, for datasets without drawn masks.

Romanowsky-type stains (Giemsa, Wright, May-Grunwald) colour leukocyte nuclei a
saturated blue-purple, leukocyte cytoplasm pale blue or grey, red cells pink and
the empty slide near-white. These rules give masks good enough to pre-train on and
to turn ALL-IDB1 blast points into labelled cells; they are marked ``weak``.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, segmentation

from allseg.data.record import BLAST, CYTOPLASM, LEUKOCYTE, NUCLEUS

#: Objects smaller than this share of the expected cell area are dropped as specks.
MIN_AREA_SHARE = 0.15
#: Cell diameter over nucleus diameter, used when no diameter is given.
CELL_PER_NUCLEUS = 1.45


def nucleus_score(image: np.ndarray) -> np.ndarray:
    """Blue-purple strength in 0..1: high on nuclei, low on pink red cells and white slide.

    Blue minus green separates purple nuclei from pink cells (whose blue is close to
    green) and from the grey-white background; darkness breaks ties with pale cytoplasm.
    """
    rgb = image.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    purple = np.clip(b - g, 0, 1) + 0.5 * np.clip(r - g, 0, 1) * (b > g)
    dark = 1.0 - rgb.mean(axis=2)
    return purple * (0.5 + dark)


def _cytoplasm_candidates(image: np.ndarray, exclude_pink: bool = True) -> np.ndarray:
    """Pixels that are neither empty slide nor red cells: cytoplasm is bluish or grey.

    The slide is bright and not bluish (white, grey or yellowish with rapid stains);
    its brightness is taken from the image's brightest decile so exposure does not matter.
    """
    rgb = image.astype(np.float32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    brightness = rgb.mean(axis=2)
    bluish = b - (r + g) / 2
    slide = (brightness > np.percentile(brightness, 90) - 25) & (bluish < 8)
    if not exclude_pink:
        return ~slide
    pink = (r - b > 12) & (r - g > 25)
    return ~slide & ~pink


def _otsu(values: np.ndarray, default: float) -> float:
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return default
    return float(filters.threshold_otsu(values))


def nucleus_mask(image: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """Otsu on the nucleus score, guarded so a field without nuclei stays empty."""
    score = nucleus_score(image)
    sample = score if within is None else score[within]
    threshold = max(_otsu(sample, default=1.0), 0.12)
    mask = score > threshold
    return mask if within is None else mask & within


def _morph(mask: np.ndarray, op: int, radius: float) -> np.ndarray:
    """Binary opening/closing with a disc, via distance transforms: cost does not grow
    with the radius, which matters for large cells in 5-megapixel fields."""
    r = max(1.0, float(radius))
    if op == cv2.MORPH_OPEN:
        return _distance(~(_distance(mask) > r)) <= r
    return _distance(_distance(~mask) <= r) > r


def _distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each True pixel to the nearest False one (OpenCV: fast)."""
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)


def _remove_small(mask: np.ndarray, min_area: float) -> np.ndarray:
    labels = measure.label(mask)
    counts = np.bincount(labels.ravel())
    keep = counts >= min_area
    keep[0] = False
    return keep[labels]


def estimate_cell_diameter(nucleus: np.ndarray) -> float:
    """Cell diameter from the median size of the larger nucleus blobs."""
    props = measure.regionprops(measure.label(nucleus))
    areas = np.array([p.area for p in props], dtype=float)
    areas = areas[areas >= max(20.0, 0.2 * areas.max())] if areas.size else areas
    if areas.size == 0:
        return 0.0
    return float(CELL_PER_NUCLEUS * 2.0 * np.sqrt(np.median(areas) / np.pi))


def leukocyte_masks_from_stain(
    image: np.ndarray,
    points: np.ndarray | None = None,
    expected_diameter_px: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(parts, instances)`` for every leukocyte found by colour.

    ``points`` (blast centroids) add a seed where a nucleus was missed, so that a
    pointed-at cell is not lost to a faint stain.
    """
    h, w = image.shape[:2]
    nucleus = nucleus_mask(image)
    diameter = expected_diameter_px or estimate_cell_diameter(nucleus)
    if diameter <= 0:
        return np.zeros((h, w), np.uint8), np.zeros((h, w), np.int32)
    min_area = MIN_AREA_SHARE * np.pi * (diameter / 2) ** 2
    nucleus = _morph(nucleus, cv2.MORPH_OPEN, diameter / 40)
    nucleus = _remove_small(nucleus, min_area * 0.3)
    nucleus = ndi.binary_fill_holes(nucleus)

    # One marker per cell: lobes of one nucleus (neutrophils) are merged by closing.
    merged = _morph(nucleus, cv2.MORPH_CLOSE, diameter / 16)
    markers = measure.label(merged | _point_seeds(points, (h, w), diameter))
    reach = _distance(markers == 0) <= diameter / 2
    cell = (nucleus | (_cytoplasm_candidates(image) & reach)) & reach
    cell = _morph(cell, cv2.MORPH_OPEN, diameter / 30)
    cell = ndi.binary_fill_holes(cell | (markers > 0))

    distance = _distance(cell)
    instances = segmentation.watershed(-distance, markers, mask=cell).astype(np.int32)
    instances = _drop_small(instances, min_area)
    parts = np.where(instances > 0, CYTOPLASM, 0).astype(np.uint8)
    parts[(instances > 0) & nucleus] = NUCLEUS
    return parts, instances


def _point_seeds(points: np.ndarray | None, shape: tuple[int, int], diameter: float) -> np.ndarray:
    """Small discs at given points, so every pointed-at cell gets a watershed marker."""
    seeds = np.zeros(shape, bool)
    if points is None or len(points) == 0:
        return seeds
    xy = np.round(np.asarray(points, float)).astype(int)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < shape[1]) & (xy[:, 1] >= 0) & (xy[:, 1] < shape[0])
    seeds[xy[inside, 1], xy[inside, 0]] = True
    return _distance(~seeds) <= diameter / 10


def _drop_small(instances: np.ndarray, min_area: float) -> np.ndarray:
    """Remove small instances and renumber the rest 1..K."""
    counts = np.bincount(instances.ravel())
    keep = counts >= min_area
    keep[0] = False
    lut = np.zeros(counts.size, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[instances]


def mask_in_box(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return full-size ``(parts, cell)`` for the one leukocyte inside ``box`` (x0, y0, x1, y1).

    The box is known to hold a leukocyte, so thresholds are fitted inside it; when the
    stain gives nothing the inscribed ellipse stands in.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    parts = np.zeros((h, w), np.uint8)
    cell = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return parts, cell
    crop = image[y0:y1, x0:x1]
    bh, bw = crop.shape[:2]
    yy, xx = np.mgrid[0:bh, 0:bw]
    ellipse = ((xx + 0.5 - bw / 2) / (bw / 2)) ** 2 + ((yy + 0.5 - bh / 2) / (bh / 2)) ** 2 <= 1
    nucleus = nucleus_mask(crop, within=ellipse)
    nucleus = _remove_small(nucleus, 0.02 * bh * bw)
    if not nucleus.any():
        cell[y0:y1, x0:x1] = ellipse
        parts[cell] = CYTOPLASM
        return parts, cell
    # Inside a tight box pink is kept: neutrophil cytoplasm is pink too (Zheng cell Dice
    # 0.60 with pink excluded, 0.98 without), and the ellipse already keeps red cells out.
    region = ellipse & (_cytoplasm_candidates(crop, exclude_pink=False) | nucleus)
    region = _morph(region, cv2.MORPH_OPEN, min(bh, bw) / 40)
    labels = measure.label(region | nucleus)
    touching = np.unique(labels[nucleus])
    crop_cell = ndi.binary_fill_holes(np.isin(labels, touching[touching > 0]))
    cell[y0:y1, x0:x1] = crop_cell
    parts[cell] = CYTOPLASM
    parts[y0:y1, x0:x1][nucleus & crop_cell] = NUCLEUS
    return parts, cell


def label_cells_by_points(
    instances: np.ndarray, points: np.ndarray | None, radius: float
) -> tuple[dict[int, str], int]:
    """Name each instance ``blast`` when a point lies in it or within ``radius`` px.

    Returns the labels and how many points found no cell.
    """
    ids = np.unique(instances)
    labels = {int(k): LEUKOCYTE for k in ids if k != 0}
    if points is None or len(points) == 0:
        return labels, 0
    if not labels:
        return labels, len(points)
    h, w = instances.shape
    xy = np.clip(np.round(np.asarray(points, float)).astype(int), 0, [w - 1, h - 1])
    distance, (iy, ix) = ndi.distance_transform_edt(instances == 0, return_indices=True)
    nearest = instances[iy[xy[:, 1], xy[:, 0]], ix[xy[:, 1], xy[:, 0]]]
    hit = distance[xy[:, 1], xy[:, 0]] <= radius
    for k in np.unique(nearest[hit]):
        labels[int(k)] = BLAST
    return labels, int((~hit).sum())
