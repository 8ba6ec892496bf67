"""Post-processing: instances from maps, per-cell features, classifier crops."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.draw import disk

from allseg.data.record import CYTOPLASM, NUCLEUS
from allseg.postprocess import cell_crops, cell_features, instances_from_maps
from allseg.postprocess.nucleus_edges import tidy_nucleus
from allseg.postprocess.upsample import upsample_instances


def make_maps(shape: tuple[int, int], cells: list[tuple[int, int, int, int]]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and centre map for discs ``(cy, cx, radius, nucleus_radius)``."""
    prob = np.zeros((3, *shape), np.float32)
    prob[0] = 0.9
    prob[1] = 0.1
    centre = np.zeros(shape, np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy, cx, r, rn in cells:
        rr, cc = disk((cy, cx), r, shape=shape)
        prob[:, rr, cc] = np.array([0.05, 0.9, 0.05], np.float32)[:, None]
        if rn:
            rr_n, cc_n = disk((cy, cx), rn, shape=shape)
            prob[:, rr_n, cc_n] = np.array([0.05, 0.05, 0.9], np.float32)[:, None]
        closeness = np.clip(1 - np.hypot(yy - cy, xx - cx) / r, 0, 1)
        centre = np.maximum(centre, closeness.astype(np.float32))
    return prob, centre


def test_touching_cells_are_split() -> None:
    prob, centre = make_maps((100, 160), [(50, 50, 30, 15), (50, 105, 30, 15)])
    fg = prob[0] < 0.5
    assert np.unique(fg[50, 40:120]).tolist() == [True]  # really touching
    parts, inst = instances_from_maps(prob, centre, min_area_px=50)
    assert inst.max() == 2
    assert inst[50, 50] != inst[50, 105]
    assert inst.dtype == np.int32 and parts.dtype == np.uint8
    assert set(np.unique(parts).tolist()) == {0, CYTOPLASM, NUCLEUS}
    assert ((parts > 0) == (inst > 0)).all()


def test_cell_without_nucleus_and_small_blobs_are_dropped() -> None:
    prob, centre = make_maps((120, 200), [(60, 40, 25, 12), (60, 110, 25, 0), (60, 170, 4, 2)])
    parts, inst = instances_from_maps(prob, centre, min_area_px=100)
    assert inst.max() == 1
    assert inst[60, 40] == 1 and inst[60, 110] == 0 and inst[60, 170] == 0
    assert (parts[inst == 0] == 0).all()


def test_ids_follow_centroid_order_and_are_deterministic() -> None:
    spec = [(80, 30, 12, 6), (20, 90, 12, 6), (20, 30, 12, 6), (80, 90, 12, 6)]
    prob, centre = make_maps((110, 120), spec)
    _, inst = instances_from_maps(prob, centre, min_area_px=20)
    assert [inst[20, 30], inst[20, 90], inst[80, 30], inst[80, 90]] == [1, 2, 3, 4]
    prob2, centre2 = make_maps((110, 120), spec[::-1])
    assert (instances_from_maps(prob2, centre2, min_area_px=20)[1] == inst).all()


def test_empty_maps_give_no_instances() -> None:
    prob, centre = make_maps((40, 50), [])
    parts, inst = instances_from_maps(prob, centre, min_area_px=10)
    assert inst.max() == 0 and parts.max() == 0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="class_prob"):
        instances_from_maps(np.zeros((2, 5, 5), np.float32), np.zeros((5, 5), np.float32), 1)


def drawn_cell(spots: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 120x120 image with one stained cell (radius 30, nucleus radius 22) and
    optional light nucleoli (radius 3) at ``spots``."""
    shape = (120, 120)
    image = np.full((*shape, 3), 225, np.uint8)
    parts = np.zeros(shape, np.uint8)
    inst = np.zeros(shape, np.int32)
    rr, cc = disk((60, 60), 30)
    parts[rr, cc], inst[rr, cc], image[rr, cc] = CYTOPLASM, 1, (200, 170, 210)
    rr, cc = disk((60, 60), 22)
    parts[rr, cc], image[rr, cc] = NUCLEUS, (90, 50, 120)
    for y, x in spots:
        rr, cc = disk((y, x), 3)
        image[rr, cc] = (150, 140, 195)
    noise = np.random.default_rng(0).normal(0, 3, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), parts, inst


def test_features_of_a_drawn_cell() -> None:
    image, parts, inst = drawn_cell([])
    (cell,) = cell_features(image, parts, inst, um_per_px=0.25)
    area, nucleus_area = int((inst == 1).sum()), int((parts == NUCLEUS).sum())
    assert cell["id"] == 1
    assert cell["area_px"] == area and cell["nucleus_area_px"] == nucleus_area
    assert cell["centroid"] == pytest.approx([60.0, 60.0])
    assert cell["bbox"] == [31, 31, 90, 90]
    assert cell["area_um2"] == pytest.approx(area * 0.0625)
    assert cell["nc_ratio"] == pytest.approx(nucleus_area / area)
    assert cell["circularity"] == pytest.approx(1.0, abs=0.05)
    assert cell["diameter_um"] == pytest.approx(2 * math.sqrt(area / math.pi) * 0.25)
    assert 0 < cell["chromatin_texture"] < 0.1
    assert cell["nucleolus_count"] == 0
    contour = np.array(cell["contour"])
    assert contour.shape[1] == 2 and len(contour) >= 8
    assert contour.min() >= 30 and contour.max() <= 90


def test_nucleoli_are_counted_with_and_without_scale() -> None:
    image, parts, inst = drawn_cell([(52, 52), (66, 66)])
    assert cell_features(image, parts, inst, um_per_px=0.25)[0]["nucleolus_count"] == 2
    unscaled = cell_features(image, parts, inst, um_per_px=None)[0]
    assert unscaled["nucleolus_count"] == 2
    assert unscaled["area_um2"] is None and unscaled["diameter_um"] is None


def test_features_follow_ascending_ids() -> None:
    prob, centre = make_maps((100, 160), [(50, 50, 30, 15), (50, 105, 30, 15)])
    parts, inst = instances_from_maps(prob, centre, min_area_px=50)
    image = np.full((100, 160, 3), 200, np.uint8)
    cells = cell_features(image, parts, inst, None)
    assert [c["id"] for c in cells] == [1, 2]
    assert sum(c["area_px"] for c in cells) == int((inst > 0).sum())


def test_many_cells_keep_their_ids_through_upsampling_and_features() -> None:
    """Cells are upsampled and measured side by side: each result must still belong to
    its own id (twelve cells of different sizes, so a mix-up changes areas)."""
    cells = [(25 + 50 * row, 25 + 50 * col, 12 + row + 2 * col, 6)
             for row in range(3) for col in range(4)]
    prob, centre = make_maps((150, 200), cells)
    _, small = instances_from_maps(prob, centre, min_area_px=20)
    image = np.full((300, 400, 3), 200, np.uint8)
    parts, big, boxes = upsample_instances(prob, small, image)
    assert big.max() == small.max() == 12
    assert boxes == ndi.find_objects(big)
    for cell_id in range(1, 13):  # each id keeps its cell: 4x the area at twice the size
        assert (big == cell_id).sum() == pytest.approx(4 * (small == cell_id).sum(), rel=0.1)
    features = cell_features(image, parts, big, None, boxes)
    assert [f["id"] for f in features] == list(range(1, 13))
    for f in features:
        ys, xs = np.nonzero(big == f["id"])
        assert f["area_px"] == ys.size
        assert f["centroid"] == pytest.approx([xs.mean(), ys.mean()])


def test_crops_have_fixed_size_and_centre_the_cell() -> None:
    image = np.zeros((300, 400, 3), np.uint8)
    centres, diameters = [(100, 120), (300, 150)], [40, 120]
    for (x, y), d in zip(centres, diameters, strict=True):
        rr, cc = disk((y, x), d / 2)
        image[rr, cc] = 255
    crops = cell_crops(image, np.array(centres, float), np.array(diameters, float), 64)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    for crop in crops:
        ys, xs = np.nonzero(crop[..., 0] > 127)
        assert ys.mean() == pytest.approx(31.5, abs=0.6)
        assert xs.mean() == pytest.approx(31.5, abs=0.6)
        # whatever the magnification, the cell spans 1/context of the crop
        assert (xs.max() - xs.min() + 1) == pytest.approx(64 / 1.5, abs=2)


def test_crops_reflect_at_the_border() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)
    # side = 1.5 * 32 = 48 = out_size: no resampling, crop equals the mirrored image
    (crop,) = cell_crops(image, np.array([[2.0, 3.0]]), np.array([32.0]), out_size=48)
    mirrored = np.pad(image, ((48, 48), (48, 48), (0, 0)), mode="symmetric")
    y0, x0 = -20, -21  # start = floor(centre - (side - 1) / 2 + 0.5)
    assert (crop == mirrored[y0 + 48:y0 + 96, x0 + 48:x0 + 96]).all()
    # crop rows 0..19 are image rows -20..-1, i.e. rows 19..0 mirrored (edge repeated)
    assert (crop[:20, 21:] == image[19::-1, :27]).all()
    assert (crop[20:, 21:] == image[:28, :27]).all()
    # A crop wider than the image (a tiny photo) folds back and forth, as np.pad does.
    tiny = image[:5, :7]
    (crop,) = cell_crops(tiny, np.array([[3.0, 2.0]]), np.array([32.0]), out_size=48)
    folded = np.pad(tiny, ((48, 48), (48, 48), (0, 0)), mode="symmetric")
    assert (crop == folded[48 - 21:48 + 27, 48 - 20:48 + 28]).all()


def test_no_cells_no_crops() -> None:
    crops = cell_crops(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 2)), np.zeros(0), 32)
    assert crops.shape == (0, 32, 32, 3)


def test_a_cytoplasm_crescent_split_off_a_cell_is_merged_back() -> None:
    """Two centre peaks in one cell whose second piece holds almost no nucleus: one cell."""
    from allseg.postprocess.instances import instances_from_maps

    h, w = 60, 100
    yy, xx = np.mgrid[:h, :w]
    cell = (yy - 30) ** 2 + (xx - 50) ** 2 < 25 ** 2
    nucleus = (yy - 30) ** 2 + (xx - 42) ** 2 < 14 ** 2
    prob = np.zeros((3, h, w), np.float32)
    prob[0][~cell] = 1
    prob[1][cell & ~nucleus] = 1
    prob[2][nucleus] = 1
    centre = np.zeros((h, w), np.float32)
    centre[(yy - 30) ** 2 + (xx - 42) ** 2 < 5 ** 2] = 1  # the nucleus' centre
    centre[(yy - 30) ** 2 + (xx - 70) ** 2 < 3 ** 2] = 1  # a spurious peak in the cytoplasm
    _, instances = instances_from_maps(prob, centre, min_area_px=10)
    assert instances.max() == 1 and (instances > 0).sum() == cell.sum()


def test_enclosed_fragments_merge_but_touching_cells_stay_apart() -> None:
    from allseg.postprocess.instances import merge_fragments

    yy, xx = np.mgrid[:80, :120]
    nucleus = np.full((80, 120), NUCLEUS)
    # A wedge cut off a round cell (with nucleus): mostly enclosed by the rest, so merged.
    labels = np.where((yy - 40) ** 2 + (xx - 40) ** 2 < 30 ** 2, 1, 0)
    labels[(labels == 1) & (xx > 55) & (abs(yy - 40) < 8)] = 2
    assert set(np.unique(merge_fragments(labels, nucleus))) == {0, 1}
    # Two touching discs share a short chord: two cells.
    pair = np.where((yy - 40) ** 2 + (xx - 35) ** 2 < 25 ** 2, 1, 0)
    pair[((yy - 40) ** 2 + (xx - 82) ** 2 < 25 ** 2) & (pair == 0)] = 2
    assert set(np.unique(merge_fragments(pair, nucleus))) == {0, 1, 2}
    # Cells cut by the image border: the border is outline, not contact.
    halves = np.ones((80, 120), int)
    halves[:, 60:] = 2
    assert set(np.unique(merge_fragments(halves, nucleus))) == {1, 2}


def test_a_cell_with_two_centre_peaks_is_one_cell_but_overlapping_discs_are_two() -> None:
    """A bilobed granulocyte gives the centre map two peaks: the watershed cuts the round
    cell in two and the convex union merges it back; two overlapping round cells stay two."""
    yy, xx = np.mgrid[:100, :160]

    def maps(cells: list[tuple[int, int, int]], peaks: list[tuple[int, int]]):
        cell = np.zeros((100, 160), bool)
        for cy, cx, r in cells:
            cell |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        prob = np.zeros((3, 100, 160), np.float32)
        prob[0][~cell], prob[2][cell] = 1, 1
        centre = np.zeros((100, 160), np.float32)
        for py, px in peaks:
            centre[(yy - py) ** 2 + (xx - px) ** 2 < 4**2] = 1
        return prob, centre

    lobed = maps([(50, 60, 35)], [(50, 45), (50, 75)])
    _, instances = instances_from_maps(*lobed, min_area_px=10)
    assert instances.max() == 1
    overlapping = maps([(50, 50, 30), (50, 105, 30)], [(50, 50), (50, 105)])
    _, instances = instances_from_maps(*overlapping, min_area_px=10)
    assert instances.max() == 2


def test_a_cell_without_a_centre_peak_is_still_a_cell() -> None:
    """A pale granular cell of an unseen stain: foreground with a nucleus, but its centre map
    never reaches the marker threshold (regression: a Raabin neutrophil was lost)."""
    probs = np.zeros((3, 60, 60), np.float32)
    probs[0] = 1.0
    yy, xx = np.mgrid[:60, :60]
    cell = np.hypot(yy - 30, xx - 30) < 15
    probs[:, cell] = np.array([0.1, 0.5, 0.4])[:, None]
    probs[:, cell & (np.hypot(yy - 30, xx - 30) < 7)] = np.array([0.05, 0.15, 0.8])[:, None]
    centre = np.where(cell, 0.35, 0.0).astype(np.float32)
    parts, instances = instances_from_maps(probs, centre, min_area_px=20)
    assert instances.max() == 1 and (instances > 0).sum() == cell.sum()
    assert (parts == 255).any()


def _drawn_cell(size: int = 96, cell_r: int = 36, nucleus_r: int = 20
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A stained cell (dark nucleus in pale cytoplasm on a light slide), its true
    nucleus mask, and blurred class probabilities at a third of its resolution."""
    image = np.full((size, size, 3), 235, np.uint8)
    cell = np.zeros((size, size), bool)
    cell[disk((size // 2, size // 2), cell_r, shape=cell.shape)] = True
    nucleus = np.zeros_like(cell)
    nucleus[disk((size // 2 + 3, size // 2 - 2), nucleus_r, shape=cell.shape)] = True
    image[cell] = (190, 180, 215)
    image[nucleus] = (110, 60, 150)
    truth = np.stack([~cell, cell & ~nucleus, nucleus]).astype(np.float32)
    small = np.stack([cv2.resize(cv2.GaussianBlur(t, (0, 0), 3), (size // 3, size // 3),
                                 interpolation=cv2.INTER_AREA) for t in truth])
    return image, nucleus, small


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_nucleus_border_follows_the_image_edges_when_upsampled() -> None:
    image, nucleus, prob = _drawn_cell()
    instances = (np.argmax(prob, axis=0) > 0).astype(np.int32)
    parts, big, _ = upsample_instances(prob, instances, image)
    flat_parts, _, _ = upsample_instances(prob, instances, np.full_like(image, 200))
    refined, plain = _dice(parts == NUCLEUS, nucleus), _dice(flat_parts == NUCLEUS, nucleus)
    assert refined > 0.97 and refined > plain + 0.01, (refined, plain)
    assert big.max() == 1 and set(np.unique(parts)) == {0, CYTOPLASM, NUCLEUS}


def test_nucleus_holes_are_filled_and_specks_dropped() -> None:
    nucleus = np.zeros((40, 40), bool)
    nucleus[disk((20, 20), 12)] = True
    nucleus[18:21, 18:21] = False  # a granule over the nucleus
    nucleus[2:4, 2:4] = True  # a speck at the membrane
    tidy = tidy_nucleus(nucleus)
    assert tidy[19, 19] and not tidy[2, 2]
    ring = np.zeros((40, 40), bool)
    ring[disk((20, 20), 15)] = True
    ring[disk((20, 20), 10)] = False  # a large hole is the cytoplasm of a ring form: kept
    assert not tidy_nucleus(ring)[20, 20]


def test_a_cell_cut_in_three_is_one_cell_but_three_touching_discs_stay_three() -> None:
    """A three-lobed neutrophil of an unfamiliar stain gave the centre map three peaks; no
    two of its pieces make a convex union, all three do. Three touching cells never do."""
    from allseg.postprocess.instances import merge_convex_groups, merge_convex_pairs

    yy, xx = np.mgrid[:100, :100]
    cell = (yy - 50) ** 2 + (xx - 50) ** 2 < 40 ** 2
    angle = np.arctan2(yy - 50, xx - 50)
    thirds = np.where(cell, 1 + (angle > -np.pi / 3) + (angle > np.pi / 3), 0)
    assert len(np.unique(merge_convex_pairs(thirds))) == 4  # pairs are not enough
    assert set(np.unique(merge_convex_groups(thirds))) == {0, 1}
    clump = np.zeros((100, 100), int)
    for label, (cy, cx) in enumerate([(30, 30), (30, 70), (65, 50)], start=1):
        clump[((yy - cy) ** 2 + (xx - cx) ** 2 < 21 ** 2) & (clump == 0)] = label
    assert set(np.unique(merge_convex_groups(clump))) == {0, 1, 2, 3}
