"""Weak (colour-derived) leukocyte labels, measured against exact masks.

Run with ``pytest -s`` to see the measured figures.
"""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from allseg.data.readers import open_dataset
from allseg.data.record import BLAST, LEUKOCYTE, NUCLEUS
from allseg.data.weak_labels import (
    label_cells_by_points,
    leukocyte_masks_from_stain,
    mask_in_box,
    red_cell_area,
)

#: (y, x) of drawn leukocytes; the last two touch.
CELLS = ((100, 100), (300, 120), (200, 350), (110, 400), (168, 400))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def drawn_smear(seed: int = 0, h: int = 400, w: int = 500):
    """Purple nuclei in blue rims among pink red cells on white, with sensor noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), (235, 228, 232), np.float64)
    cells = np.zeros((h, w), np.int32)
    nuclei = np.zeros((h, w), bool)
    for _ in range(40):
        img[disk((rng.uniform(0, h), rng.uniform(0, w)), 18, shape=(h, w))] = (222, 150, 160)
    for k, (y, x) in enumerate(CELLS, start=1):
        rr, cc = disk((y, x), 30, shape=(h, w))
        img[rr, cc], cells[rr, cc] = (175, 185, 215), k
        rr, cc = disk((y, x), 20, shape=(h, w))
        img[rr, cc], nuclei[rr, cc] = (110, 55, 145), True
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return img, cells, nuclei


def test_stain_masks_on_drawn_smear() -> None:
    image, cells, nuclei = drawn_smear()
    parts, instances = leukocyte_masks_from_stain(image)
    assert instances.dtype == np.int32 and parts.dtype == np.uint8
    assert instances.max() == len(CELLS)  # touching cells split by the watershed
    assert dice(parts == NUCLEUS, nuclei) > 0.9
    assert dice(instances > 0, cells > 0) > 0.9
    blank = np.full((50, 60, 3), 235, np.uint8)
    assert leukocyte_masks_from_stain(blank)[1].max() == 0


def test_mask_in_box_and_points() -> None:
    image, cells, nuclei = drawn_smear()
    parts, cell = mask_in_box(image, np.array([60, 60, 140, 140]))
    assert dice(cell, cells == 1) > 0.9 and dice(parts == NUCLEUS, nuclei & (cells == 1)) > 0.9
    points = np.array([[100, 100], [350, 200], [5, 5]], float)  # two on cells, one on nothing
    labels, unmatched = label_cells_by_points(cells, points, radius=10)
    assert unmatched == 1
    assert [labels[k] for k in range(1, 6)] == [BLAST, LEUKOCYTE, BLAST, LEUKOCYTE, LEUKOCYTE]
    assert label_cells_by_points(cells, np.array([[100, 135]]), radius=10)[0][1] == BLAST


def test_mask_in_box_keeps_pale_cytoplasm_that_fills_its_box() -> None:
    """A 100x crop (TXL-PBC Raabin's colours): the pale cytoplasm is the brightest tenth
    of the tight box, so the slide's colour must come from outside it (a threshold fitted
    inside the box kept little more than the nucleus: cell Dice 0.35)."""
    rng = np.random.default_rng(1)
    h = w = 400
    img = np.full((h, w, 3), (205, 185, 176), np.float64)
    for y, x in ((75, 75), (75, 325), (325, 75), (325, 325)):  # red cells in the box's corners
        img[disk((y, x), 65, shape=(h, w))] = (120, 84, 122)
    cell = np.zeros((h, w), bool)
    cell[disk((200, 200), 120, shape=(h, w))] = True
    nucleus = np.zeros((h, w), bool)
    nucleus[disk((190, 200), 55, shape=(h, w))] = True
    img[cell], img[nucleus] = (180, 140, 150), (60, 15, 100)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    parts, found = mask_in_box(img, np.array([80, 80, 320, 320]))
    assert dice(found, cell) > 0.95
    assert dice(parts == NUCLEUS, nucleus) > 0.95


def test_mask_in_box_leaves_out_boxed_red_cells() -> None:
    """A red cell lying over the edge of a leukocyte is inside the leukocyte's box
    ellipse and off the slide's colour; its own box keeps it out of the weak cell."""
    image, cells, nuclei = drawn_smear()
    red = np.zeros(cells.shape, bool)
    red[disk((100, 128), 18, shape=cells.shape)] = True
    image[red] = (222, 150, 160)
    leukocyte_box, red_box = np.array([70, 70, 130, 130]), np.array([[109, 81, 147, 119]])
    _, unaware = mask_in_box(image, leukocyte_box)
    parts, cell = mask_in_box(image, leukocyte_box, red_cell_area(red_box, cells.shape))
    assert (unaware & red).sum() > 200  # without the red cell's box it is taken for cytoplasm
    assert (cell & red).sum() == 0
    assert dice(cell, (cells == 1) & ~red) > 0.95
    assert dice(parts == NUCLEUS, nuclei & (cells == 1) & ~red) > 0.9
    careless = np.array([[np.nan, 0, 5, 5], [9, 9, 9, 30], [-40, -40, -20, -20]])
    assert not red_cell_area(careless, cells.shape).any()


@pytest.fixture(scope="module")
def synthetic_fields(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Four synthetic ALL-IDB1 fields with their exact masks (seed 0)."""
    from allseg.synth import write_dataset

    folder = tmp_path_factory.mktemp("synth")
    write_dataset("allidb1", folder, 4, 0)
    return list(open_dataset(folder).iter_records())


def test_box_masks_against_synthetic_ground_truth(synthetic_fields: list) -> None:
    """Each exact cell's bounding box, as a dataset of boxes gives it, yields a weak mask
    close to the cell's exact outline."""
    nucleus, whole = [], []
    for rec in synthetic_fields:
        for k in np.unique(rec.instances[rec.instances > 0]):
            cell = rec.instances == k
            ys, xs = np.nonzero(cell)
            parts, found = mask_in_box(rec.image, np.array([xs.min(), ys.min(),
                                                            xs.max() + 1, ys.max() + 1]))
            nucleus.append(dice(parts == NUCLEUS, (rec.parts == NUCLEUS) & cell))
            whole.append(dice(found, cell))
    print(f"\nbox masks vs synthetic truth ({len(whole)} cells): nucleus Dice "
          f"{np.mean(nucleus):.3f}, whole-cell Dice {np.mean(whole):.3f} (10th pct "
          f"{np.percentile(whole, 10):.3f})")
    # Measured: nucleus 0.967, whole cell 0.971, 10th percentile 0.958 (with the slide
    # threshold fitted inside the box, as before: whole cell 0.909, 10th percentile 0.671).
    assert np.mean(nucleus) > 0.9
    assert np.mean(whole) > 0.93 and np.percentile(whole, 10) > 0.9


def test_weak_labels_against_synthetic_ground_truth(synthetic_fields: list) -> None:
    nucleus, whole, matched, total = [], [], 0, 0
    for rec in synthetic_fields:
        assert not rec.weak and rec.parts is not None
        parts, instances = leukocyte_masks_from_stain(rec.image, rec.points)
        nucleus.append(dice(parts == NUCLEUS, rec.parts == NUCLEUS))
        whole.append(dice(instances > 0, rec.parts > 0))
        if rec.points is not None and len(rec.points):
            areas = np.bincount(instances.ravel())[1:]
            radius = 0.5 * np.sqrt(np.median(areas[areas > 0]) / np.pi) if areas.any() else 0
            _, unmatched = label_cells_by_points(instances, rec.points, radius)
            matched += len(rec.points) - unmatched
            total += len(rec.points)
    share = matched / total if total else 1.0
    print(f"\nweak labels vs synthetic truth: nucleus Dice {np.mean(nucleus):.3f}, "
          f"whole-cell Dice {np.mean(whole):.3f}, points matched {matched}/{total} = {share:.2f}")
    assert total > 0
    # Floors at the measured figures (4 fields, seed 0: nucleus 0.954, cell 0.926,
    # all points matched) less a margin; the old global threshold scored 0.13 / 0.17.
    assert share >= 0.9
    assert np.mean(nucleus) > 0.9 and min(nucleus) > 0.7
    assert np.mean(whole) > 0.87 and min(whole) > 0.65
