"""The synthetic smear generator: deterministic, exact ground truth, the promised files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from allseg.data.record import CYTOPLASM, NUCLEUS
from allseg.synth import LAYOUTS, SynthField, generate_crop, generate_field, write_dataset
from allseg.synth.cells import LEUKOCYTE_TYPES, RED_CELL_UM


def _field(seed: int, blast_fraction: float = 0.5) -> SynthField:
    return generate_field(np.random.default_rng(seed), 360, 480, 0.15, blast_fraction)


def _nc_ratio(field: SynthField, cell_id: int) -> float:
    parts = field.parts[field.instances == cell_id]
    return float((parts == NUCLEUS).sum() / parts.size)


def _touches_border(field: SynthField, cell_id: int) -> bool:
    cell = field.instances == cell_id
    return bool(cell[0].any() or cell[-1].any() or cell[:, 0].any() or cell[:, -1].any())


def test_same_seed_same_field_different_seed_different():
    a, b, c = _field(1), _field(1), _field(2)
    for name in ("image", "parts", "instances"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.cells == b.cells
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("seed", range(4))
def test_masks_agree_with_image_and_cells(seed):
    field = _field(seed)
    assert field.image.shape == (360, 480, 3) and field.image.dtype == np.uint8
    assert field.parts.dtype == np.uint8 and field.instances.dtype == np.int32
    assert set(np.unique(field.parts)) <= {0, CYTOPLASM, NUCLEUS}
    np.testing.assert_array_equal(field.parts > 0, field.instances > 0)
    ids = set(np.unique(field.instances)) - {0}
    assert ids == {c["id"] for c in field.cells} == set(range(1, len(field.cells) + 1))
    grey = field.image.mean(axis=2)
    assert grey[field.parts == NUCLEUS].mean() < grey[field.instances == 0].mean() - 30
    for cell in field.cells:
        assert cell["type"] in LEUKOCYTE_TYPES
        assert cell["is_blast"] == (cell["type"] == "blast")
        x, y = cell["centroid"]
        assert 0 <= x < 480 and 0 <= y < 360 and cell["diameter_px"] > 0


def test_blasts_have_high_nc_ratio_and_are_larger_than_lymphocytes():
    crops = {t: [generate_crop(np.random.default_rng(s), 160, t, 0.12) for s in range(6)]
             for t in ("blast", "lymphocyte")}
    blast_nc = [_nc_ratio(c, 1) for c in crops["blast"]]
    assert min(blast_nc) > 0.8
    um = {t: [c.cells[0]["diameter_px"] * c.um_per_px for c in cs] for t, cs in crops.items()}
    assert max(um["lymphocyte"]) < min(um["blast"])
    for seed in range(6):
        field = _field(seed, blast_fraction=1.0)
        inner = [c["id"] for c in field.cells if not _touches_border(field, c["id"])]
        assert all(_nc_ratio(field, i) > 0.8 for i in inner)


def test_healthy_field_has_no_blasts_and_some_fields_have_touching_cells():
    assert not any(c["is_blast"] for c in _field(3, blast_fraction=0.0).cells)
    assert any(c["is_blast"] for c in _field(3, blast_fraction=0.01).cells)
    touching = 0
    for seed in range(12):
        field = generate_field(np.random.default_rng(seed), 300, 400, 0.2, n_leukocytes=4)
        for cell in field.cells:
            grown = cv2.dilate((field.instances == cell["id"]).astype(np.uint8), np.ones((3, 3)))
            neighbours = set(np.unique(field.instances[grown > 0])) - {0, cell["id"]}
            touching += bool(neighbours)
    assert touching >= 2


@pytest.mark.parametrize("cell_type", LEUKOCYTE_TYPES)
def test_crop_labels_only_the_centred_cell(cell_type):
    crop = generate_crop(np.random.default_rng(5), 129, cell_type, 0.15)
    assert crop.image.shape == (129, 129, 3)
    assert set(np.unique(crop.instances)) == {0, 1}
    assert crop.instances[64, 64] == 1
    assert [c["type"] for c in crop.cells] == [cell_type]


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_allidb1_layout(tmp_path):
    paths = write_dataset("allidb1", tmp_path, n=2, seed=3, um_per_px=0.2)
    assert [p.stem[:5] for p in paths] == ["Im001", "Im002"]
    assert all(p.suffix == ".jpg" for p in paths)
    assert {p.stem[-1] for p in paths} == {"0", "1"}
    sizes = {p.stem[:5]: p for p in paths}
    assert _read(sizes["Im001"]).shape == (1944, 2592, 3)
    assert _read(sizes["Im002"]).shape == (1368, 1712, 3)
    for image in paths:
        stem = image.stem
        parts = _read(tmp_path / "gt" / "parts" / f"{stem}.png")
        instances = _read(tmp_path / "gt" / "instances" / f"{stem}.png")
        cells = json.loads((tmp_path / "gt" / "cells" / f"{stem}.json").read_text())
        assert parts.dtype == np.uint8 and instances.dtype == np.uint16
        assert parts.shape == instances.shape == _read(image).shape[:2]
        assert cells["um_per_px"] == 0.2
        blasts = {c["id"] for c in cells["cells"] if c["is_blast"]}
        lines = (tmp_path / "xyc" / f"{stem}.xyc").read_text().splitlines()
        if stem.endswith("_0"):
            assert lines == [] and not blasts
        else:
            assert len(lines) == len(blasts) >= 1
            for line in lines:
                x, y = (int(v) for v in line.split("\t"))
                assert instances[y, x] in blasts


def test_allidb2_layout(tmp_path):
    paths = write_dataset("allidb2", tmp_path, n=2, seed=1)
    assert {p.stem[-1] for p in paths} == {"0", "1"}
    for image in paths:
        crop = tifffile.imread(image)
        mask = tifffile.imread(tmp_path / "gt" / image.name)
        parts = _read(tmp_path / "parts" / f"{image.stem}.png")
        cells = json.loads((tmp_path / "cells" / f"{image.stem}.json").read_text())["cells"]
        assert crop.shape == (257, 257, 3) and crop.dtype == np.uint8
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
        np.testing.assert_array_equal(mask > 0, parts > 0)
        assert cells[0]["is_blast"] == image.stem.endswith("_1")


def test_masks_layout_and_byte_identical_rewrite(tmp_path):
    first = write_dataset("masks", tmp_path / "a", n=2, seed=4)
    again = write_dataset("masks", tmp_path / "b", n=2, seed=4)
    assert [p.name for p in first] == ["synth_0001.png", "synth_0002.png"]
    for p, q in zip(first, again, strict=True):
        assert p.read_bytes() == q.read_bytes()
        root = p.parent.parent
        assert _read(p).shape == (480, 640, 3)
        assert _read(root / "masks" / p.name).dtype == np.uint8
        assert _read(root / "instances" / p.name).dtype == np.uint16
        assert (root / "cells" / f"{p.stem}.json").is_file()


def test_unknown_layout_is_refused(tmp_path):
    assert LAYOUTS == ("allidb1", "allidb2", "masks")
    with pytest.raises(ValueError, match="unknown layout"):
        write_dataset("voc", tmp_path, n=1)


@pytest.mark.parametrize("seed", range(3))
def test_red_cell_size_is_a_knob_and_their_number_is_not(seed):
    from allseg.synth.smear import _red_cells

    def haemoglobin(red_cell_um):
        return float(_red_cells(np.random.default_rng(seed), 300, 400, 0.15, red_cell_um).sum())

    # (8 / 5)^2 = 2.56x the dye per red cell, as many red cells
    assert 2.2 < haemoglobin((8.0, 8.0)) / haemoglobin((5.0, 5.0)) < 2.9
    assert generate_field(np.random.default_rng(seed), 300, 400, 0.15,
                          n_leukocytes=1).image.tobytes() == generate_field(
        np.random.default_rng(seed), 300, 400, 0.15, n_leukocytes=1,
        red_cell_um=RED_CELL_UM).image.tobytes()


def test_a_recipe_with_other_synthetic_settings_gets_a_folder_of_its_own(tmp_path):
    from allseg.training.config import DataSource, SynthSource
    from allseg.training.run import source_folder

    plain = source_folder(DataSource(synth=SynthSource(layout="masks", n=1, seed=2)), tmp_path)
    bigger = source_folder(DataSource(synth=SynthSource(layout="masks", n=1, seed=2,
                                                        red_cell_um=(8.0, 8.0))), tmp_path)
    assert plain != bigger and bigger.name.endswith("_red8-8um")
    finer = source_folder(DataSource(synth=SynthSource(layout="masks", n=1, seed=2,
                                                       um_per_px=(0.1, 0.12))), tmp_path)
    assert finer.name.endswith("_px0.1-0.12") and (finer / "images" / "synth_0001.png").is_file()
    images = [_read(folder / "images" / "synth_0001.png") for folder in (plain, bigger)]
    assert not np.array_equal(*images)
    with pytest.raises(ValueError, match="red_cell_um must be .* got 7 and 5"):
        SynthSource(red_cell_um=(7.0, 5.0))
