"""The crop stain bench's copies: enlarged crops whose masks keep their place and values."""

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

BENCH = Path(__file__).resolve().parents[1] / "bench"


def crop_stain():  # noqa: ANN201
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("crop_stain")
    finally:
        sys.path.remove(str(BENCH))


def test_enlarging_keeps_mask_values() -> None:
    assert doctest.testmod(crop_stain()).failed == 0


@pytest.mark.parametrize("shift", ["none", "squashed to 224 x 224"])
def test_copies_are_enlarged_shifted_and_read_at_their_true_scale(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shift: str) -> None:
    bench = crop_stain()
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
