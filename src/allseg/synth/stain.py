"""Per-image stain: the colours of glass and of each dye, as optical densities.

Cells are painted as *concentrations* of a few dye components; the image is
``background * exp(-sum(concentration * od))`` (Beer-Lambert). Overlapping red
cells therefore darken naturally, and one random stain per image recolours every
cell the same way, so colour can never tell a blast from a normal leukocyte.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

#: Transmitted RGB (0..1) of one unit of each dye component on white glass.
BASE_COLOURS: dict[str, tuple[float, float, float]] = {
    "hb": (0.87, 0.62, 0.67),       # haemoglobin + eosin: salmon-pink red cells
    "nucleus": (0.46, 0.31, 0.66),  # azure-eosin chromatin: purple
    "baso": (0.68, 0.79, 0.95),     # basophilic (RNA-rich) cytoplasm: blue
    "lilac": (0.90, 0.80, 0.90),    # neutrophil cytoplasm and granules
    "eos": (0.97, 0.60, 0.42),      # eosinophil granules: orange-red
}

#: Hue windows (HSV hue, 0..1) of the empty glass: grey-green (BCCD) or pinkish lilac (ALL-IDB).
_BACKGROUND_HUES = ((0.12, 0.30), (0.75, 0.95))


@dataclass(frozen=True)
class Stain:
    """Colours of one image: background RGB (0..1) and per-component optical densities."""

    background: np.ndarray
    od: dict[str, np.ndarray]


def _shift(rgb: tuple[float, float, float], hue: float, saturation: float) -> tuple[float, ...]:
    h, s, v = colorsys.rgb_to_hsv(*rgb)
    return colorsys.hsv_to_rgb((h + hue) % 1.0, min(1.0, s * saturation), v)


def sample_stain(rng: np.random.Generator) -> Stain:
    """Draw one image's stain: a shared hue/saturation/strength shift plus small per-dye jitter."""
    hue = rng.uniform(-0.05, 0.05)
    saturation = rng.uniform(0.75, 1.3)
    strength = rng.uniform(0.8, 1.2)
    od = {}
    for name, rgb in BASE_COLOURS.items():
        colour = np.clip(_shift(rgb, hue + rng.normal(0, 0.012), saturation), 0.02, 1.0)
        od[name] = (-np.log(colour) * strength * rng.uniform(0.9, 1.1)).astype(np.float32)
    lo, hi = _BACKGROUND_HUES[rng.integers(len(_BACKGROUND_HUES))]
    background = colorsys.hsv_to_rgb(rng.uniform(lo, hi), rng.uniform(0.02, 0.12),
                                     rng.uniform(0.84, 0.97))
    return Stain(background=np.asarray(background, np.float32), od=od)
