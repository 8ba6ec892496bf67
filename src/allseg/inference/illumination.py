"""Uneven illumination (vignetting): find it from the slide, and even it out.

A camera or microscope that lights the centre of the field more than its corners makes
the slide in the corners as dark as the red cells in the centre. One slide colour then
counts the corners as cells, and the red-cell ruler reads a crop 1.5-2x too fine. Light
scales the three colour channels alike, so the slide is found by its *colour* (each
channel's share of the brightness), which vignetting leaves unchanged; a smooth surface
(log brightness quadratic in x and y) fitted to the slide's brightness is the
illumination, and dividing by it evens the photo out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: The illumination is fitted on a copy with this longest side (it is smooth).
FIT_SIDE = 64
#: The slide's colour: the mean channel shares of the brightest fifth of the pixels ...
BRIGHTEST_SHARE = 0.2
#: ... and a pixel is slide when no channel's share differs from it by more than this.
SLIDE_CHROMA_TOLERANCE = 0.03
#: Pixels darker than this share of the brightest fifth are no slide (their colour is noise).
MIN_SLIDE_BRIGHTNESS = 0.25
#: Fewer slide pixels than this share of the copy is too little to fit a surface to.
MIN_SLIDE_SHARE = 0.02
#: Slide pixels this much darker (in log brightness) than the fit are cells of slide colour.
FIT_TRIM = 0.1
#: Photos lit within this factor across the field are left as they are: every photo the
#: red-cell ruler was calibrated on (BCCD trainval, TXL-PBC folds 1-4) is (at most 1.47;
#: most BCCD and BCD photos have some falloff, 1.2-1.3), so the ruler already allows for
#: such falloff, and evening it out was measured to move their scale (TXL-PBC BCD).
MIN_FALLOFF = 1.5
#: No pixel is brightened more than this (a fit gone wild at a corner).
MAX_GAIN = 4.0
#: A photo whose slide is darker than this (the brightest fifth's brightest channel, 0-255)
#: is brightened to it before its red cells are measured and before the networks see it.
SLIDE_REFERENCE = 150.0
#: ... by at most this factor.
MAX_EXPOSURE_GAIN = 8.0
#: A pixel at this level or above in every channel is clipped white ...
CLIP_LEVEL = 254
#: ... and a photo clipped white over more than this share of its field is over-exposed.
OVER_EXPOSED_SHARE = 0.25


@dataclass(frozen=True)
class Illumination:
    """Log brightness of the lighting as ``c @ [1, x, y, x², y², xy]`` over the image,
    ``x`` and ``y`` running from -0.5 to 0.5 whatever its size; ``peak`` is its maximum."""

    coefficients: np.ndarray
    peak: float

    def gain(self, height: int, width: int) -> np.ndarray:
        """Per-pixel factor that evens an image of this size out (1 where it is brightest)."""
        y, x = _centres(height)[:, None], _centres(width)[None, :]
        c0, cx, cy, cxx, cyy, cxy = self.coefficients.astype(np.float32)
        # _terms(y, x) @ coefficients, written out: five times faster on a full-size grid
        log_light = c0 + cy * y + cyy * y**2 + (cx + cxy * y) * x + cxx * x**2
        return np.minimum(np.exp(self.peak - log_light), MAX_GAIN)

    def even(self, image: np.ndarray) -> np.ndarray:
        """The RGB ``uint8`` image with its illumination evened out (OpenCV multiplies and
        saturates: 6 ms for a 1024 x 768 copy, against 13 ms in numpy)."""
        gain = self.gain(*image.shape[:2])
        return cv2.multiply(image, cv2.merge([gain, gain, gain]), dtype=cv2.CV_8U)


def slide_level(image: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """The slide's brightness: the mean brightest channel of the brightest fifth of a small
    copy's pixels (``ignore``: no part of the slide)."""
    small, usable = _small_copy(image, ignore)
    brightness = small.max(axis=2)
    brightness = (brightness[usable] if usable.any() else brightness).astype(np.float32)
    return float(brightness[brightness >= np.quantile(brightness, 1 - BRIGHTEST_SHARE)].mean())


def exposed(image: np.ndarray, ignore: np.ndarray | None = None) -> np.ndarray:
    """The photo brightened so that its slide is at least ``SLIDE_REFERENCE``.

    The red-cell ruler's cuts (``scale.MIN_CONTRAST``, ``scale.NUCLEUS_BLUENESS``) are in
    grey levels; at 0.3 of its exposure a BCCD photo's red cells fell under them and its
    scale became the 0.1 µm/px fallback. The segmenter, trained on bright slides, missed
    leukocytes in dark photos and took red cells for them. Every training and calibration
    photo but 5% of BCD's (slides from 119) has a brighter slide, and is left as it is:
    brightening to 200 (BCCD's slides are 190-215) moved the scale of moderately dark
    copies both ways (BCD median error +1-2 points, BCCD in tungsten light p95 27% -> 34%).

    >>> int(exposed(np.full((30, 40, 3), 50, np.uint8))[0, 0, 0])
    150
    >>> int(exposed(np.full((30, 40, 3), 230, np.uint8))[0, 0, 0])
    230
    """
    level = slide_level(image, ignore)
    if level >= SLIDE_REFERENCE:
        return image
    return cv2.convertScaleAbs(image, alpha=min(MAX_EXPOSURE_GAIN,
                                                SLIDE_REFERENCE / max(level, 1.0)))


def clipped_share(image: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Share of the photo (every few pixels; ``ignore``: no part of the field) clipped
    white in all three channels.

    A slide exposed to white says nothing by itself (a third of Zheng Dataset 1's crops
    have one, and their red cells are whole), but over a quarter of the field it takes the
    red cells' pale parts with it: at 1.5x the exposure, BCCD and TXL-PBC PBC photos are
    46-86% white (at their own exposure: 0%).

    >>> clipped_share(np.full((30, 40, 3), 255, np.uint8))
    1.0
    >>> clipped_share(np.full((30, 40, 3), 240, np.uint8))
    0.0
    """
    step = _sample_step(image)
    white = image[::step, ::step].min(axis=2) >= CLIP_LEVEL
    if ignore is not None:
        white = white[~ignore[::step, ::step]]
    return float(white.mean()) if white.size else 0.0


def is_over_exposed(image: np.ndarray, ignore: np.ndarray | None = None) -> bool:
    """Whether the photo is clipped white over more than ``OVER_EXPOSED_SHARE`` of its field
    (``ignore``: no part of the field)."""
    return clipped_share(image, ignore) > OVER_EXPOSED_SHARE


def _sample_step(image: np.ndarray) -> int:
    """Every how many pixels to look: about ``4 * FIT_SIDE`` along the longest side."""
    return max(1, max(image.shape[:2]) // (4 * FIT_SIDE))


def _small_copy(image: np.ndarray, ignore: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """A copy with a ``FIT_SIDE`` longest side, from every few pixels (all pixels of a 5 MP
    field: 8-19 ms; these: 1), and which of its pixels may be slide (not ``ignore``)."""
    h, w = image.shape[:2]
    factor = min(1.0, FIT_SIDE / max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    step = _sample_step(image)
    sampled = np.ascontiguousarray(image[::step, ::step])
    small = cv2.resize(sampled, size, interpolation=cv2.INTER_AREA)
    usable = np.ones(small.shape[:2], bool)
    if ignore is not None:
        usable = cv2.resize(ignore.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) == 0
    return small, usable


def _centres(n: int) -> np.ndarray:
    """Pixel centres of an axis of ``n`` pixels, from -0.5 to 0.5 whatever ``n``."""
    return (np.arange(n, dtype=np.float32) + 0.5) / n - 0.5


def _terms(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The fit's basis ``[1, x, y, x², y², xy]`` at each point."""
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def fit_illumination(image: np.ndarray, ignore: np.ndarray | None = None
                     ) -> Illumination | None:
    """The lighting of an RGB ``uint8`` smear photo, or None when it is even enough
    (brightest and dimmest slide within ``MIN_FALLOFF``) or too little slide shows.

    ``ignore``: pixels that are no part of the slide (an eyepiece photo's surround).

    >>> flat = np.full((60, 80, 3), 200, np.uint8)
    >>> fit_illumination(flat) is None
    True
    >>> yy, xx = np.mgrid[:60, :80]
    >>> falloff = 1 - 0.5 * (((yy - 30) / 30) ** 2 + ((xx - 40) / 40) ** 2) / 2
    >>> dim = (flat * falloff[..., None]).astype(np.uint8)
    >>> evened = fit_illumination(dim).even(dim)
    >>> int(dim[0, 0, 0]), int(evened[0, 0, 0]), int(evened[30, 40, 0])
    (100, 187, 200)
    """
    small, usable = _small_copy(image, ignore)
    small = small.astype(np.float32) + 1.0
    brightness = small.sum(axis=2)
    shares = small / brightness[..., None]
    if not usable.any():
        return None
    brightest = usable & (brightness >= np.quantile(brightness[usable], 1 - BRIGHTEST_SHARE))
    slide_colour = shares[brightest].mean(axis=0)
    slide = (usable & (np.abs(shares - slide_colour).max(axis=2) < SLIDE_CHROMA_TOLERANCE)
             & (brightness > MIN_SLIDE_BRIGHTNESS * brightness[brightest].mean()))
    terms = _terms(*np.meshgrid(_centres(small.shape[0]), _centres(small.shape[1]),
                                indexing="ij"))
    log_brightness = np.log(brightness)
    kept = slide
    for _ in range(3):
        if kept.sum() < max(4 * terms.shape[-1], MIN_SLIDE_SHARE * slide.size):
            return None
        coefficients, *_ = np.linalg.lstsq(terms[kept], log_brightness[kept], rcond=None)
        fitted = terms @ coefficients
        kept = slide & (log_brightness > fitted - FIT_TRIM)
    peak = float(fitted[usable].max())
    if np.exp(peak - fitted[usable].min()) < MIN_FALLOFF:
        return None
    return Illumination(coefficients, peak)
