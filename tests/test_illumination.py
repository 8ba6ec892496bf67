"""Vignetting: found from the slide's colour and evened out before the red cells are measured."""

from __future__ import annotations

import numpy as np
import pytest

from allseg.demo import bundled_samples
from allseg.inference.illumination import fit_illumination
from allseg.inference.scale import estimate_scale
from allseg.io.images import read_image


def vignetted(image: np.ndarray, corner: float = 0.45) -> np.ndarray:
    """Corners at ``corner`` of the centre's brightness, falling off with radius squared
    (the vignetting row of bench/stain_shift.py)."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    return np.clip(image * (1 - (1 - corner) * radius[..., None] ** 2), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sample", bundled_samples(), ids=lambda p: p.stem)
def test_a_vignetted_photo_keeps_its_red_cell_scale(sample) -> None:
    """BCCD photos with corners at 45% read 1.7x too fine on average before (dim slide
    counted as red cells)."""
    photo = read_image(sample)
    dim = vignetted(photo)
    assert estimate_scale(dim).um_per_px == pytest.approx(estimate_scale(photo).um_per_px,
                                                          rel=0.15)


@pytest.mark.parametrize("sample", bundled_samples(), ids=lambda p: p.stem)
def test_evening_out_restores_the_corners(sample) -> None:
    photo = read_image(sample).astype(np.float32)
    dim = vignetted(photo.astype(np.uint8))
    evened = fit_illumination(dim).even(dim).astype(np.float32)
    corners = np.zeros(photo.shape[:2], bool)
    corners[:60, :60] = corners[:60, -60:] = corners[-60:, :60] = corners[-60:, -60:] = True
    before = np.abs(dim - photo)[corners].mean()
    after = np.abs(evened - photo)[corners].mean()
    assert after < 0.35 * before


def test_an_eyepiece_surround_is_no_part_of_the_fit() -> None:
    """An evenly lit round field in a dim grey surround (a soft eyepiece rim): without the
    surround ignored, it would be fitted as deep vignetting."""
    h, w = 300, 400
    yy, xx = np.mgrid[:h, :w]
    surround = np.hypot(yy - h / 2, xx - w / 2) > 140
    image = np.full((h, w, 3), (225, 220, 222), np.uint8)
    image[surround] = 80
    assert fit_illumination(image, surround) is None


@pytest.mark.parametrize("sample", bundled_samples(), ids=lambda p: p.stem)
def test_an_ordinary_photo_is_left_as_it_is(sample) -> None:
    """The red-cell ruler was calibrated on photos with their own mild falloff."""
    assert fit_illumination(read_image(sample)) is None
