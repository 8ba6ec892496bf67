"""Estimate image scale (µm per pixel) from the red cells every smear contains.

Magnification differs between microscopes and datasets, so inference normalises every
image to one canonical scale first. Red blood cells are a built-in ruler: in a smear
they are about 7.5 µm across. Real fields are crowded (red cells touch and overlap and
merge into chains), so counting separate objects fails. Instead we measure *local
thickness* by granulometry: the opening of the cell mask by a disc of radius ``r``
keeps every pixel that lies in some inscribed disc of radius ``r``; the radius at which
half of the red-cell area is gone is the typical red-cell radius, whether the cells are
isolated, touching or in chains. Each opening costs one distance transform, so a binary
search over ``r`` is cheap. Leukocytes are excluded by masking a zone around their
strongly stained nuclei.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allseg.data.ruler import RBC_DIAMETER_UM
from allseg.inference.field_of_view import outside_field, paint_slide
from allseg.inference.illumination import (
    Illumination,
    exposed,
    fit_illumination,
    is_over_exposed,
)

#: First pass: every image is resampled to this longest side, whatever its magnification,
#: so a crop's few red cells and a field's many are measured alike (and a resized copy of
#: an image gives the same answer).
FIRST_PASS_SIDE = 384
#: ... or this one for images at least twice as large (wide fields), where the slide
#: colour is followed locally (uneven illumination).
LOCAL_FIRST_PASS_SIDE = 768
#: Second pass: the image is resampled so that a red cell is about this many pixels across,
#: where the measurement is most accurate (Cellpose's estimate-resample-re-estimate)...
TARGET_DIAMETER_PX = 28.0
#: ... but the working copy's longest side stays within these bounds (speed, and room).
MIN_WORK_SIDE, MAX_WORK_SIDE = 96, 1024
#: Granulometry measures the largest disc inscribed in a red cell; boxes drawn around red
#: cells (the ruler of BCCD and TXL-PBC, 7.5 µm) are this much wider. Fitted on tuning
#: images only (BCCD trainval, TXL-PBC folds 1-4): see docs/scale-estimate.md.
BOX_PER_INSCRIBED = 1.22
#: No smear photo is coarser or finer than this; beyond, the estimate is clamped and unsure.
MIN_UM_PER_PX, MAX_UM_PER_PX = 0.01, 1.0
#: Below this many red cells' worth of area the estimate is not trusted.
MIN_CELLS = 5.0
#: Smaller radii (working pixels) are noise or debris, and too coarse to measure.
MIN_RADIUS_PX = 2.0
#: Most an over-exposed photo's red cells are trusted (below ``UNSURE_BELOW``: the
#: leukocytes check them, and the user is warned). Its red cells lose their pale parts to
#: white and measure small: at 1.5x the exposure BCCD read 1.2-1.9x coarse, and BCD and
#: PBC photos whose red cells fell apart into fragments up to 4x.
OVER_EXPOSED_CONFIDENCE = 0.3
OVER_EXPOSED_METHOD = "rbc-granulometry-over-exposed"
#: Scale returned when nothing usable is found: a typical 100x oil-immersion camera field.
FALLBACK_UM_PER_PX = 0.1
#: A leukocyte is at most ~2.4 red-cell radii (an 18 µm blast), measured from its nucleus.
LEUKOCYTE_ZONE_RADII = 2.5
#: The pallor of a red cell cut by an eyepiece's surround covers at most this share of the
#: disc of the red-cell radius: a central pallor is a third to a half of the cell across
#: (the cell ~1.22 radii: ``BOX_PER_INSCRIBED``), so whole it covers up to ~0.37 of the
#: disc, and the surround cuts it about in half. Larger stretches are slide (0.3 took the
#: slide between BCCD's packed red cells for pallor: scale error p95 19% -> 26% on its
#: eyepiece copies).
PALLOR_AREA_SHARE = 0.15
#: Nuclei smaller than this fraction of a red cell's area are platelets or debris.
MIN_NUCLEUS_AREA_FRACTION = 0.25
#: Cells differ from the slide by at least this mean colour difference (0-255 levels).
MIN_CONTRAST = 8.0
#: Range of the blue-minus-green cut that separates nuclei from the rest.
NUCLEUS_BLUENESS = (40, 70)
#: 5x5 chamfer distances: within ~2% of exact Euclidean and five times faster.
_DIST_MASK = 5


#: Below this working size (crops, and fields with few large red cells) the slide colour
#: is taken as one global colour, from the brightest fifth of pixels.
LOCAL_SLIDE_MIN_SIDE = 400


@dataclass(frozen=True)
class ScaleEstimate:
    """Result of :func:`estimate_scale`; ``reliable=False`` means: warn the user.

    ``confidence`` in [0, 1] grows with the red-cell area measured (and is lowered by a
    disagreeing second ruler); ``method`` names the ruler that decided.
    """

    um_per_px: float
    rbc_diameter_px: float
    n_cells: int
    method: str
    reliable: bool
    confidence: float = 0.0


def _resample(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor`` (area averaging to shrink, bilinear to enlarge)."""
    if abs(factor - 1.0) < 1e-3:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else
                      cv2.INTER_LINEAR)


def _slide_colour(blurred: np.ndarray) -> np.ndarray:
    """The slide's colour at every pixel, following uneven illumination (vignetting).

    The slide is the brightest thing within any window larger than a cell, so a max
    filter over a coarse copy (where specks and highlights have averaged away) and a
    blur give its colour everywhere; a single global colour would count dim corners
    of a sparse field as cells.
    """
    h, w = blurred.shape[:2]
    if max(h, w) < LOCAL_SLIDE_MIN_SIDE:  # a crop: too small for windows wider than a cell
        green_cdf = np.cumsum(np.bincount(blurred[..., 1].ravel(), minlength=256))
        bright_level = int(np.searchsorted(green_cdf, 0.8 * green_cdf[-1]))
        colour = blurred[blurred[..., 1] >= bright_level].mean(axis=0)
        return np.full_like(blurred, np.round(colour))
    step = 8
    coarse = cv2.resize(blurred, (max(1, w // step), max(1, h // step)),
                        interpolation=cv2.INTER_AREA)
    k = max(3, (max(h, w) // (6 * step)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    slide = cv2.blur(cv2.dilate(coarse, kernel), (k, k))
    return cv2.resize(slide, (w, h), interpolation=cv2.INTER_LINEAR)


def _foreground(image: np.ndarray, nuclei: np.ndarray, surround: np.ndarray) -> np.ndarray:
    """Cells versus slide: Otsu on the colour distance from the local slide colour.

    The threshold is chosen on pixels outside nuclei: a dark nucleus in a crop of pale
    red cells would otherwise take the threshold for itself and leave the red cells out.
    Nor does the painted surround of an eyepiece photo count (``surround``).
    """
    blurred = cv2.GaussianBlur(image, (5, 5), 0)
    difference = cv2.absdiff(blurred, _slide_colour(blurred))
    distance = cv2.transform(difference, np.full((1, 3), 1.0 / 3.0))  # mean |difference|
    outside = distance[(nuclei == 0) & ~surround]
    if outside.size == 0:
        return np.ones(distance.shape, np.uint8)
    scaled = cv2.convertScaleAbs(outside, alpha=255.0 / max(int(outside.max()), 1))
    threshold, _ = cv2.threshold(scaled.reshape(1, -1), 0, 1,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    level = threshold * max(int(outside.max()), 1) / 255.0
    if level < MIN_CONTRAST:  # noise on an empty slide, not cells
        return nuclei.copy()
    mask = (distance > level).astype(np.uint8)
    return _fill_holes(mask | nuclei)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background not connected to the border: the red cells' pale central pallor."""
    flood = np.pad(mask, 1)
    cv2.floodFill(flood, None, (0, 0), 1)
    return mask | (1 - flood[1:-1, 1:-1])


def _fill_cut_pallor(mask: np.ndarray, surround: np.ndarray, max_area: float) -> np.ndarray:
    """Fill the pallor of red cells cut by an eyepiece's ``surround``.

    A red cell cut by the surround goes on behind it, as one cut by the image border goes
    on beyond it; but the surround is painted slide-coloured, so the pale centre of every
    cell it cuts opens onto it and :func:`_fill_holes` leaves it: crescents, measured as
    red cells a third smaller (a Raabin photo cut to a circle read 1.6x coarse). Stretches
    of background that touch the surround, not the image border, and are smaller than
    ``max_area`` (a cut pallor's: ``PALLOR_AREA_SHARE``) are filled.

    >>> ring = np.zeros((9, 9), np.uint8); ring[2:7, 2:7] = 1; ring[4, 4:7] = 0
    >>> surround = np.zeros((9, 9), bool); surround[:, 6:] = True
    >>> filled = [_fill_cut_pallor(ring, surround, area)[4, 5] for area in (10, 1)]
    >>> [int(f) for f in filled]  # a small opening is pallor, a large one slide
    [1, 0]
    """
    background = ((mask == 0) & ~surround).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    touching = np.zeros(n, bool)
    touching[np.unique(labels[cv2.dilate(surround.astype(np.uint8), np.ones((3, 3))) > 0])] = True
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = touching & (stats[:, cv2.CC_STAT_AREA] < max_area)
    fill[border] = False
    fill[0] = False  # cells and surround
    return mask | fill[labels].astype(mask.dtype)


def _nuclei(image: np.ndarray) -> np.ndarray:
    """Strongly stained purple/blue pixels (leukocyte nuclei, platelets): blue >> green.

    How much bluer than green a nucleus is depends on the stain: where red cells are
    purplish too (phone photos of some stains), the cut is raised to the Otsu level
    between them and the nuclei, within ``NUCLEUS_BLUENESS``.
    """
    rgb = image.astype(np.int16)
    blueness = rgb[..., 2] - rgb[..., 1]
    low, high = NUCLEUS_BLUENESS
    stained = blueness[blueness > low // 2]
    cut = low
    if stained.size > 16:
        otsu, _ = cv2.threshold(np.clip(stained, 0, 255).astype(np.uint8).reshape(1, -1), 0,
                                255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        cut = int(np.clip(otsu, low, high))
    purple = (blueness > cut) & (rgb[..., 0] - rgb[..., 1] > -10)
    return purple.astype(np.uint8)


def _opened_area(dist: np.ndarray, radius: float, counted: np.ndarray,
                 centres: np.ndarray) -> int:
    """Counted pixels covered by some inscribed disc of ``radius`` (area of the opening)
    centred on a ``centres`` pixel."""
    core = ((dist >= radius) & centres).astype(np.uint8)
    if not core.any():
        return 0
    to_core = cv2.distanceTransform(1 - core, cv2.DIST_L2, _DIST_MASK)
    return int(np.count_nonzero((to_core <= radius) & counted))


def _median_thickness(
    dist: np.ndarray, counted: np.ndarray, centres: np.ndarray, lo: float, hi: float,
    steps: int,
) -> float:
    """Radius in ``[lo, hi]`` at which the opening keeps half the counted area.

    Geometric bisection: each step costs one distance transform; 0 if even ``lo`` fails.
    """
    half = 0.5 * np.count_nonzero(counted)
    if _opened_area(dist, lo, counted, centres) < half:
        return 0.0
    for _ in range(steps):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if _opened_area(dist, mid, counted, centres) >= half else (lo, mid)
    return (lo * hi) ** 0.5


def _leukocyte_zone(nuclei: np.ndarray, radius: float) -> np.ndarray:
    """Pixels near a nucleus big enough to be a leukocyte's (platelets are ignored)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(nuclei, connectivity=8)
    big = np.zeros(n, dtype=bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= MIN_NUCLEUS_AREA_FRACTION * np.pi * radius**2
    if not big[1:].any():
        return np.zeros(nuclei.shape, dtype=bool)
    to_nucleus = cv2.distanceTransform(
        (~big[labels]).astype(np.uint8), cv2.DIST_L2, _DIST_MASK
    )
    return to_nucleus <= LEUKOCYTE_ZONE_RADII * radius


def _thickness(fg: np.ndarray, nuclei: np.ndarray, surround: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's distance to the slide (cells cut by the surround keep their thickness)
    and the red-cell pixels that are measured (not nuclei, not the surround)."""
    dist = cv2.distanceTransform(fg | surround, cv2.DIST_L2, _DIST_MASK)
    return dist, fg.astype(bool) & (nuclei == 0) & ~surround


def _red_cell_radius(image: np.ndarray, surround: np.ndarray) -> tuple[float, float]:
    """Typical red-cell radius and red-cell area (working pixels); 0 radius if none.

    The ``surround`` of an eyepiece photo is treated like the world beyond the image
    border: cells it cuts keep their thickness, and nothing in it is measured.
    """
    nuclei = _nuclei(image)
    fg = _foreground(image, nuclei, surround)
    if fg.all() or not fg.any():
        return 0.0, 0.0
    dist, counted = _thickness(fg, nuclei, surround)
    centres = ~surround
    if not counted.any():
        return 0.0, 0.0
    # First pass sizes the leukocyte zone and the pallor of cells cut by a surround; the
    # second, a narrow search around the first answer, measures the red cells without them.
    radius = _median_thickness(dist, counted, centres, MIN_RADIUS_PX,
                               float(dist[centres].max()) + 1.0, 8)
    if radius <= 0:
        return 0.0, float(np.count_nonzero(counted))
    again = False
    if surround.any():
        filled = _fill_cut_pallor(fg, surround, PALLOR_AREA_SHARE * np.pi * radius**2)
        if (filled != fg).any():
            dist, counted = _thickness(filled, nuclei, surround)
            again = True
    zone = _leukocyte_zone(nuclei, radius)
    if zone.any():
        counted &= ~zone
        again = True
    if again:
        lo = max(MIN_RADIUS_PX, 0.6 * radius)
        radius = (_median_thickness(dist, counted, centres, lo, 1.6 * radius, 6)
                  if counted.any() else 0.0)
    return radius, float(np.count_nonzero(counted))


def _measure(image: np.ndarray, surround: np.ndarray | None, factor: float,
             light: Illumination | None) -> tuple[float, float]:
    """Red-cell diameter in the image's own pixels (0 if none) and the number of red
    cells' worth of area, measured on a copy resampled by ``factor`` (its ``light``
    evened out)."""
    small = _resample(image, factor)
    if light is not None:
        small = light.even(small)
    small_surround = (np.zeros(small.shape[:2], bool) if surround is None else
                      cv2.resize(surround.astype(np.uint8), small.shape[1::-1],
                                 interpolation=cv2.INTER_NEAREST).astype(bool))
    radius, area = _red_cell_radius(small, small_surround)
    if radius <= 0:
        return 0.0, 0.0
    return 2.0 * radius * BOX_PER_INSCRIBED / factor, area / (np.pi * radius**2)


def estimate_scale(image: np.ndarray) -> ScaleEstimate:
    """Estimate µm per pixel of an ``(H, W, 3)`` RGB uint8 smear from its red cells.

    Two passes: a first look at a fixed working size gives a rough red-cell size; the
    image is then resampled so red cells are ``TARGET_DIAMETER_PX`` across and measured
    again. ``reliable`` is False (and ``method`` says why) when there is too little
    red-cell area to measure, or when the photo is over-exposed
    (``illumination.is_over_exposed``); the scale is then a rough guess the caller should
    check (the predictor does, with the leukocytes it finds).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    # An eyepiece photo's black surround is neither red cells nor slide.
    surround = outside_field(image)
    over_exposed = is_over_exposed(image, surround)
    image = exposed(paint_slide(image, surround), surround)
    light = fit_illumination(image, surround)  # vignetting would count dim slide as cells
    side = max(image.shape[:2])
    if side >= 2 * LOCAL_FIRST_PASS_SIDE:
        # A wide field may have dim corners that one slide colour takes for a cell: look at
        # it at a size where the slide colour follows the illumination (an integer
        # shrinking factor: OpenCV's fast path).
        factor = 1.0 / -(-side // LOCAL_FIRST_PASS_SIDE)
    else:
        factor = FIRST_PASS_SIDE / side
    diameter, n_cells = _measure(image, surround, factor, light)
    if diameter > 0 and not (side >= 2 * LOCAL_FIRST_PASS_SIDE
                             and abs(np.log(diameter * factor / TARGET_DIAMETER_PX)) < np.log(1.5)):
        # Second look, unless a wide field's first look already saw red cells near the
        # target size.
        factor = float(np.clip(TARGET_DIAMETER_PX / diameter, MIN_WORK_SIDE / side,
                               MAX_WORK_SIDE / side))
        second, second_cells = _measure(image, surround, factor, light)
        if second > 0:
            diameter, n_cells = second, second_cells
    if diameter <= 0:
        fallback_diameter = RBC_DIAMETER_UM / FALLBACK_UM_PER_PX
        return ScaleEstimate(FALLBACK_UM_PER_PX, fallback_diameter, 0, "fallback-default", False)
    um_per_px = RBC_DIAMETER_UM / diameter
    plausible = MIN_UM_PER_PX <= um_per_px <= MAX_UM_PER_PX
    um_per_px = float(np.clip(um_per_px, MIN_UM_PER_PX, MAX_UM_PER_PX))
    reliable = n_cells >= MIN_CELLS and plausible
    confidence = float(min(1.0, n_cells / (2 * MIN_CELLS))) if plausible else 0.0
    if reliable and over_exposed:
        reliable, method = False, OVER_EXPOSED_METHOD
        confidence = min(confidence, OVER_EXPOSED_CONFIDENCE)
    else:
        method = "rbc-granulometry" if reliable else "rbc-granulometry-few-cells"
    return ScaleEstimate(um_per_px, RBC_DIAMETER_UM / um_per_px, round(n_cells), method,
                         reliable, round(confidence, 3))


@dataclass(frozen=True)
class ResolvedScale:
    """The scale an image is predicted at, where it came from and how sure it is.

    ``source``: "user" (given), "red-cells" (enough red cells measured), "leukocytes"
    (the predictor's leukocyte ruler) or "default" (nothing to measure: a guess).
    ``confidence`` in [0, 1]; None when the user gave the scale. ``over_exposed``: the
    red cells were measured on a photo clipped white (``estimate_scale``), so they and the
    leukocytes alike read small, too coarse.
    """

    um_per_px: float
    source: str
    confidence: float | None
    over_exposed: bool = False

    @property
    def unsure(self) -> bool:
        return is_unsure(self.confidence)


#: A scale estimated with less confidence than this is a guess the user is told about.
UNSURE_BELOW = 0.5


def is_unsure(confidence: float | None) -> bool:
    """Whether an estimated scale's confidence calls for a warning (None: given by the user).

    >>> is_unsure(0.4), is_unsure(1.0), is_unsure(None)
    (True, False, False)
    """
    return confidence is not None and confidence < UNSURE_BELOW


def resolve_scale(
    image: np.ndarray,
    um_per_px: float | None = None,
    cell_diameter_px: float | None = None,
    assumed_cell_diameter_um: float = 12.0,
) -> ResolvedScale:
    """Pick the scale to use from the user's values, else from the red cells.

    An explicit ``um_per_px`` wins; else ``cell_diameter_px`` (a typical leukocyte's
    diameter in pixels, like Cellpose's ``diameter``) is converted assuming leukocytes
    are ``assumed_cell_diameter_um`` across; else the scale is estimated from red cells
    (source "red-cells" when reliable, else "default" with a low confidence).
    """
    for name, value in (("um_per_px", um_per_px), ("cell_diameter_px", cell_diameter_px)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if um_per_px is not None:
        return ResolvedScale(float(um_per_px), "user", None)
    if cell_diameter_px is not None:
        return ResolvedScale(assumed_cell_diameter_um / float(cell_diameter_px), "user", None)
    estimate = estimate_scale(image)
    return ResolvedScale(estimate.um_per_px, "red-cells" if estimate.reliable else "default",
                         estimate.confidence, estimate.method == OVER_EXPOSED_METHOD)
