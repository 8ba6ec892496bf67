"""The stain bench's squashed copies: the boxes move with the pixels."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

from allseg.data.readers.voc import read_voc_boxes

BENCH = Path(__file__).resolve().parents[1] / "bench"

VOC = """<annotation><size><width>640</width><height>480</height><depth>3</depth></size>
<object><name>WBC</name><bndbox><xmin>100</xmin><ymin>40</ymin><xmax>300</xmax><ymax>240</ymax>
</bndbox></object>
<object><name>RBC</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>64</xmax><ymax>48</ymax>
</bndbox></object></annotation>"""


def stain_shift():  # noqa: ANN201
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("stain_shift")
    finally:
        sys.path.remove(str(BENCH))


def test_squashing_a_bccd_photo_rescales_its_boxes(tmp_path: Path) -> None:
    bench = stain_shift()
    image = np.zeros((480, 640, 3), np.uint8)
    squashed = bench.squashed(224)(image)
    assert squashed.shape == (224, 224, 3)
    (tmp_path / "a.xml").write_text(VOC)
    sy, sx = np.divide(squashed.shape[:2], image.shape[:2])
    bench.rescale_voc_boxes(tmp_path / "a.xml", tmp_path / "b.xml", sx, sy)
    leukocytes, red_cells = read_voc_boxes(tmp_path / "b.xml")
    np.testing.assert_allclose(leukocytes, [[35, 18.7, 105, 112]], atol=0.06)
    np.testing.assert_allclose(red_cells, [[0, 0, 22.4, 22.4]], atol=0.06)
