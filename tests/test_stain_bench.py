"""The stain benches' copies: boxes and masks move with the pixels."""

from __future__ import annotations

import doctest
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allseg.data.readers import open_dataset
from allseg.data.readers.voc import read_voc_boxes

BENCH = Path(__file__).resolve().parents[1] / "bench"

VOC = """<annotation><size><width>640</width><height>480</height><depth>3</depth></size>
<object><name>WBC</name><bndbox><xmin>100</xmin><ymin>40</ymin><xmax>300</xmax><ymax>240</ymax>
</bndbox></object>
<object><name>RBC</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>64</xmax><ymax>48</ymax>
</bndbox></object></annotation>"""


def bench_module(name: str):  # noqa: ANN201
    """A script of bench/ as a module (its sibling imports resolved)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_squashing_a_bccd_photo_rescales_its_boxes(tmp_path: Path) -> None:
    bench = bench_module("stain_shift")
    image = np.zeros((480, 640, 3), np.uint8)
    squashed = bench.squashed(224)(image)
    assert squashed.shape == (224, 224, 3)
    (tmp_path / "a.xml").write_text(VOC)
    sy, sx = np.divide(squashed.shape[:2], image.shape[:2])
    bench.rescale_voc_boxes(tmp_path / "a.xml", tmp_path / "b.xml", sx, sy)
    leukocytes, red_cells = read_voc_boxes(tmp_path / "b.xml")
    np.testing.assert_allclose(leukocytes, [[35, 18.7, 105, 112]], atol=0.06)
    np.testing.assert_allclose(red_cells, [[0, 0, 22.4, 22.4]], atol=0.06)


def test_enlarging_keeps_mask_values() -> None:
    assert doctest.testmod(bench_module("crop_stain")).failed == 0


@pytest.mark.parametrize("shift", ["none", "squashed to 224 x 224"])
def test_copies_are_enlarged_shifted_and_read_at_their_true_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shift: str) -> None:
    bench = bench_module("crop_stain")
    zheng = tmp_path / "zheng"
    zheng.mkdir()
    for i in range(1, 11):  # fold 0 of 5 keeps two of ten
        image = np.full((120, 100, 3), 200, np.uint8)
        mask = np.zeros((120, 100), np.uint8)
        mask[30:90, 20:80], mask[50:70, 40:60] = 128, 255
        image[mask > 0] = (150, 80, 160)
        Image.fromarray(image).save(zheng / f"{i:03d}.bmp")
        Image.fromarray(mask).save(zheng / f"{i:03d}.png")
    monkeypatch.setattr(bench, "ZHENG", zheng)
    monkeypatch.setattr(bench, "HERE", tmp_path / "bench")
    root = bench.shifted_copy(shift, bench.SHIFTS[shift])
    records = list(open_dataset(root, "masks"))
    assert len(records) == 2
    for record in records:
        assert record.um_per_px == pytest.approx(bench.CROP_UM_PER_PX)
        assert record.parts.shape == record.image.shape[:2]
        assert set(np.unique(record.parts)) == {0, 128, 255}
        nucleus = record.image[record.parts == 255].astype(int)  # the stain sits on the mask
        slide = record.image[record.parts == 0].astype(int)
        assert nucleus[:, 1].mean() < 100 < slide[:, 1].mean()
    if shift == "none":
        assert records[0].image.shape == (204, 170, 3)  # 0.17 -> 0.1 um/px
    assert json.loads((root / "cells" / f"{records[0].source.stem}.json").read_text())[
        "um_per_px"] == bench.CROP_UM_PER_PX


def test_per_source_figures_count_photos_called_all_suspected(tmp_path: Path) -> None:
    """Every real set of the benches is normal blood: a photo with one cell called a blast
    is a false "ALL suspected", counted per source."""
    rows = ["image,blast_count,box_tp,box_fp,box_fn",
            "raabin_1.jpg,0,1,0,0", "raabin_2.jpg,2,1,1,0", "pbc_1.jpg,1,1,0,0",
            "pbc_2.jpg,0,0,0,1"]
    (tmp_path / "per_image.csv").write_text("\n".join(rows) + "\n")
    per = bench_module("source_figures").figures(tmp_path, split_by_prefix=True)
    assert per["raabin"]["photos_with_blast"] == 1 and per["pbc"]["photos_with_blast"] == 1
    assert per["raabin"]["detection_f1"] == pytest.approx(0.8)
