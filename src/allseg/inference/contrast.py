"""Contrast stretching for faint photos, so the networks see the contrast they learned.

A washed-out camera (bright blacks, faint stain), an under-exposed one or a heavy stain
squeezes a photo into a narrow band of grey levels. On such a photo the segmenter missed
clear lymphocytes of fields whose red cells had set the right scale (bench/stain_shift.py),
and a single-cell crop, which has only its leukocyte to go by, showed none at any field
width, or a fragment that set the scale 2-3x off (bench/crop_stain.py). Spreading its levels
restores the contrast the networks were trained on; the predictor segments, measures and
classifies every faint photo on the spread copy but an over-exposed one, whose narrow span is
white, not faintness.

Only faint photos are stretched, and only as far as an ordinary one spans: stretching every
photo to the full 0-255 range helped the crops as much (18 of the crop bench's 780 under 0.8
nucleus Dice either way, 24 unstretched) but cost TXL-PBC's Raabin photos on the stain bench
(red cells taken for leukocytes in 6 of its rows, against 2). One gain for all
three channels, so that colours keep their hue: stretching each channel on its own turned a
heavy haematoxylin's nuclei into cytoplasm (10 of the crop bench's 60 crops under 0.8
nucleus Dice, against 5 unstretched).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Percentiles taken as the darkest and the brightest levels (nucleus and slide),
#: ignoring a few outliers (dust, a saturated highlight).
DARK_PERCENTILE, BRIGHT_PERCENTILE = 0.5, 99.5
#: Photos spanning at least this many grey levels (darkest channel's dark percentile to
#: brightest channel's bright one) are left as they are; fainter ones are spread to it.
#: Every Zheng Dataset 1 and PBC crop spans more (at least 183 and 201), as do 91% of
#: Raabin's; the crop bench's washed-out copies span 95-153.
TARGET_SPAN = 170.0
#: A photo spanning fewer levels than this is nearly flat (a blank or grey frame): it is
#: stretched no further than by TARGET_SPAN / this, so that noise is not blown up.
MIN_SPAN = 32.0
#: Percentiles are taken over at most about this many pixels (the whole stretch of a
#: 2592 x 1944 field: 17 ms on 2 cores).
SAMPLED_PIXELS = 100_000


def stretched(image: np.ndarray) -> np.ndarray:
    """The RGB ``uint8`` image with its levels spread about their middle until they span
    ``TARGET_SPAN``, kept within 0-255 (the image itself when they already span it).

    >>> faint = np.array([[[200, 130, 210], [240, 200, 240]]], np.uint8)
    >>> stretched(faint).tolist()  # levels 130 .. 240 (span 110) -> about 85 .. 255
    [[[193, 84, 208], [255, 193, 255]]]
    >>> ordinary = np.array([[[20, 30, 40], [250, 240, 255]]], np.uint8)
    >>> stretched(ordinary) is ordinary
    True
    """
    pixels = image.reshape(-1, 3)
    pixels = pixels[::max(1, len(pixels) // SAMPLED_PIXELS)]
    dark = float(np.percentile(pixels, DARK_PERCENTILE, axis=0).min())
    bright = float(np.percentile(pixels, BRIGHT_PERCENTILE, axis=0).max())
    gain = TARGET_SPAN / max(bright - dark, MIN_SPAN)
    if gain <= 1.0:
        return image
    middle = (dark + bright) / 2
    new_middle = np.clip(middle, TARGET_SPAN / 2, 255 - TARGET_SPAN / 2)
    lut = np.clip(new_middle + (np.arange(256) - middle) * gain, 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)
