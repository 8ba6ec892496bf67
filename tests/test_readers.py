"""Dataset readers: every layout, the real public sets when present, and every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.draw import disk

from allseg.data.readers import FORMATS, detect_format, open_dataset
from allseg.data.record import BLAST, CYTOPLASM, LEUKOCYTE, NUCLEUS
from allseg.errors import ImageReadError, InputError

#: The shared public data sit beside the repository: <repo>/../shared/data.
SHARED = Path(os.environ.get("ALLSEG_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))
CELLS = ((60, 60), (140, 150))  # (y, x) of two leukocytes in the drawn smear


def smear(h: int = 200, w: int = 240) -> np.ndarray:
    """Pink red cells and two purple-nucleus leukocytes with blue cytoplasm on white."""
    img = np.full((h, w, 3), (236, 230, 234), np.uint8)
    img[disk((170, 40), 18, shape=(h, w))] = (222, 150, 160)
    for y, x in CELLS:
        img[disk((y, x), 28, shape=(h, w))] = (175, 185, 215)
        img[disk((y, x), 18, shape=(h, w))] = (110, 55, 145)
    return img


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def truncated_jpeg(path: Path) -> Path:
    save(path, smear())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


@pytest.fixture
def allidb1(tmp_path: Path) -> Path:
    save(tmp_path / "im" / "Im001_1.jpg", smear())
    write(tmp_path / "xyc" / "Im001_1.xyc", f"{CELLS[0][1]}\t{CELLS[0][0]}\n")
    save(tmp_path / "im" / "Im002_0.jpg", smear())
    write(tmp_path / "xyc" / "Im002_0.xyc", "")
    return tmp_path


def test_formats_and_detection(tmp_path: Path, allidb1: Path) -> None:
    assert FORMATS == ("allidb1", "allidb2", "masks", "voc", "yolo", "classes")
    assert detect_format(allidb1) == "allidb1"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="tried:") as err:
        detect_format(empty)
    assert all(name in str(err.value) for name in FORMATS)
    with pytest.raises(InputError, match="no such folder"):
        open_dataset(tmp_path / "nowhere")


def test_allidb1_weak_labels(allidb1: Path) -> None:
    ds = open_dataset(allidb1)
    assert ds.format == "allidb1" and len(ds) == 2 and not ds.warnings
    rec = ds[0]
    assert rec.image.shape == (200, 240, 3) and rec.image_label == 1 and rec.weak
    assert rec.points.tolist() == [[60.0, 60.0]]
    assert rec.instances.max() == 2 and set(np.unique(rec.parts)) == {0, CYTOPLASM, NUCLEUS}
    assert rec.cell_labels[rec.instances[60, 60]] == BLAST
    assert rec.cell_labels[rec.instances[140, 150]] == LEUKOCYTE
    assert ds[1].image_label == 0 and len(ds[1].points) == 0
    assert open_dataset(allidb1, weak_labels=False)[0].parts is None


def test_allidb1_ground_truth(allidb1: Path) -> None:
    parts = np.zeros((200, 240), np.uint8)
    parts[10:30, 10:30] = CYTOPLASM
    parts[15:25, 15:25] = NUCLEUS
    instances = (parts > 0).astype(np.uint16) * 7
    save(allidb1 / "gt" / "parts" / "Im001_1.png", parts)
    save(allidb1 / "gt" / "instances" / "Im001_1.png", instances)
    write(allidb1 / "gt" / "cells" / "Im001_1.json", json.dumps({"um_per_px": 0.2, "cells": [
        {"id": 7, "type": "lymphoblast", "centroid": [20, 20], "diameter_px": 20,
         "is_blast": True}]}))
    rec = open_dataset(allidb1)[0]
    assert not rec.weak and rec.um_per_px == 0.2 and rec.cell_labels == {7: BLAST}
    assert rec.instances.dtype == np.int32 and rec.instances[20, 20] == 7
    assert (rec.parts == parts).all()


def test_allidb1_bad_xyc_lines_and_points(allidb1: Path) -> None:
    write(allidb1 / "xyc" / "Im001_1.xyc", "60 60\n1.5 3\nabc\n1 2 3\n999 10\n")
    with pytest.warns(UserWarning):
        ds = open_dataset(allidb1)
    assert any("Im001_1.xyc:2" in w for w in ds.warnings)
    assert any("Im001_1.xyc:3" in w for w in ds.warnings)
    assert any("Im001_1.xyc:4" in w for w in ds.warnings)
    with pytest.warns(UserWarning, match="outside"):
        rec = ds[0]
    assert rec.points.tolist() == [[60.0, 60.0]]
    with pytest.raises(InputError, match="Im001_1.xyc:2"):
        open_dataset(allidb1, strict=True)


def test_unpaired_files_warn_or_fail_in_strict(allidb1: Path) -> None:
    save(allidb1 / "im" / "Im003_1.jpg", smear())
    write(allidb1 / "xyc" / "Im004_1.xyc", "1 1\n")
    with pytest.warns(UserWarning):
        ds = open_dataset(allidb1)
    assert len(ds) == 2
    assert any("Im003_1.jpg" in w and "no xyc" in w for w in ds.warnings)
    assert any("Im004_1.xyc" in w and "without an image" in w for w in ds.warnings)
    with pytest.raises(InputError, match="Im003_1.jpg"):
        open_dataset(allidb1, strict=True)


def test_missing_folder_is_named(allidb1: Path) -> None:
    (allidb1 / "xyc" / "Im001_1.xyc").unlink()
    (allidb1 / "xyc" / "Im002_0.xyc").unlink()
    (allidb1 / "xyc").rmdir()
    with pytest.raises(InputError, match="xyc"):
        open_dataset(allidb1, format="allidb1")


def test_truncated_image_is_skipped_unless_strict(allidb1: Path) -> None:
    truncated_jpeg(allidb1 / "im" / "Im001_1.jpg")
    ds = open_dataset(allidb1)
    with pytest.raises(ImageReadError, match="Im001_1.jpg"):
        ds[0]
    with pytest.warns(UserWarning, match="Im001_1.jpg"):
        records = list(ds.iter_records())
    assert [r.name for r in records] == ["Im002_0"]
    with pytest.raises(ImageReadError):
        list(open_dataset(allidb1, strict=True).iter_records())


@pytest.fixture
def masks(tmp_path: Path) -> Path:
    parts = np.zeros((40, 50), np.uint8)
    parts[5:20, 5:20] = CYTOPLASM
    parts[8:15, 8:15] = NUCLEUS
    parts[25:35, 30:45] = CYTOPLASM
    rgb = np.full((40, 50, 3), 200, np.uint8)
    save(tmp_path / "images" / "rgb.jpg", rgb)
    save(tmp_path / "images" / "grey.png", rgb[..., 0])
    save(tmp_path / "images" / "rgba.png", np.dstack([rgb, np.full((40, 50), 128, np.uint8)]))
    save(tmp_path / "images" / "deep.png", (rgb[..., 0].astype(np.uint16) * 256))
    save(tmp_path / "images" / "palette.bmp", rgb)
    Image.open(tmp_path / "images" / "palette.bmp").convert("P").save(
        tmp_path / "images" / "palette.bmp")
    for name in ("rgb", "grey", "rgba", "deep", "palette"):
        save(tmp_path / "masks" / f"{name}.png", parts)
    return tmp_path


def test_masks_non_rgb_images_and_zheng_parts(masks: Path) -> None:
    ds = open_dataset(masks)
    assert ds.format == "masks" and len(ds) == 5
    for rec in ds.iter_records():
        assert rec.image.shape == (40, 50, 3) and rec.image.dtype == np.uint8
        assert set(np.unique(rec.parts)) == {0, CYTOPLASM, NUCLEUS}
        assert rec.instances.max() == 2 and rec.cell_labels == {1: LEUKOCYTE, 2: LEUKOCYTE}
    assert not ds.warnings


def test_masks_two_value_and_instances(masks: Path) -> None:
    binary = np.zeros((40, 50), np.uint8)
    binary[5:20, 5:20] = 1
    save(masks / "masks" / "rgb.png", binary)
    instances = np.zeros((40, 50), np.uint16)
    instances[5:20, 5:12], instances[5:20, 12:20] = 300, 301
    save(masks / "instances" / "rgb.png", instances)
    rec = open_dataset(masks)[[p.stem for p in open_dataset(masks).items].index("rgb")]
    assert set(np.unique(rec.parts)) == {0, CYTOPLASM} and "nucleus unknown" in rec.notes[0]
    assert set(np.unique(rec.instances)) == {0, 300, 301}


def test_masks_wrong_size_names_mask(masks: Path) -> None:
    save(masks / "masks" / "rgb.png", np.zeros((10, 10), np.uint8))
    ds = open_dataset(masks)
    index = [p.stem for p in ds.items].index("rgb")
    with pytest.raises(InputError, match=r"masks/rgb\.png"):
        ds[index]
    with pytest.warns(UserWarning, match="rgb.png"):
        assert len(list(ds.iter_records())) == 4


def test_masks_paired_in_one_folder(tmp_path: Path) -> None:
    save(tmp_path / "001.bmp", smear(40, 50))
    save(tmp_path / "001.png", np.where(np.arange(50) < 25, 255, 128).astype(np.uint8)[None]
         .repeat(40, 0))
    save(tmp_path / "002.bmp", smear(40, 50))
    with pytest.warns(UserWarning, match="002.bmp"):
        ds = open_dataset(tmp_path)
    assert ds.format == "masks" and len(ds) == 1


def test_allidb2_crops(tmp_path: Path) -> None:
    crop = smear(257, 257)
    crop[:] = (236, 230, 234)
    crop[disk((128, 128), 60)] = (175, 185, 215)
    crop[disk((128, 128), 40)] = (110, 55, 145)
    save(tmp_path / "Im001_1.tif", crop)
    save(tmp_path / "Im002_0.tif", crop)
    gt = np.zeros((257, 257), np.uint8)
    gt[disk((128, 128), 60)] = 255
    save(tmp_path / "gt" / "Im001_1.tif", gt)
    save(tmp_path / "gt" / "Im009_1.tif", gt)
    with pytest.warns(UserWarning, match="Im009_1"):
        ds = open_dataset(tmp_path)
    assert ds.format == "allidb2" and len(ds) == 2
    rec = ds[0]
    assert rec.crop_label == 1 and rec.weak and rec.cell_labels == {1: BLAST}
    assert (rec.instances == (gt > 0)).all()
    nucleus = np.zeros((257, 257), bool)
    nucleus[disk((128, 128), 40)] = True
    assert ((rec.parts == NUCLEUS) == nucleus).mean() > 0.99
    weak = ds[1]
    assert weak.crop_label == 0 and weak.cell_labels == {1: LEUKOCYTE}
    assert (weak.instances > 0)[128, 128] and (weak.instances > 0).sum() > 0.8 * gt.sum() / 255


VOC_XML = """<annotation><size><width>240</width><height>200</height></size>
<object><name>WBC</name><bndbox><xmin>25</xmin><ymin>25</ymin><xmax>95</xmax><ymax>95</ymax>
</bndbox></object>
<object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>
</bndbox></object>
<object><name>WBC</name><bndbox><xmin>110</xmin><ymin>105</ymin><xmax>300</xmax><ymax>180</ymax>
</bndbox></object>
<object><name>WBC</name><bndbox><xmin>250</xmin><ymin>10</ymin><xmax>260</xmax><ymax>20</ymax>
</bndbox></object></annotation>"""


def test_voc_boxes_weak_masks_split_and_bad_xml(tmp_path: Path) -> None:
    for name in ("a", "b"):
        save(tmp_path / "JPEGImages" / f"{name}.jpg", smear())
        write(tmp_path / "Annotations" / f"{name}.xml", VOC_XML)
    write(tmp_path / "ImageSets" / "Main" / "test.txt", "b\n")
    ds = open_dataset(tmp_path)
    assert ds.format == "voc" and len(ds) == 2
    with pytest.warns(UserWarning, match="empty box"):
        rec = ds[0]
    assert rec.boxes.tolist() == [[25, 25, 95, 95], [110, 105, 240, 180]]
    assert rec.weak and rec.instances.max() == 2 and rec.instances[60, 60] == 1
    assert rec.parts[60, 60] == NUCLEUS
    assert [p.stem for p in open_dataset(tmp_path, split="test").items] == ["b"]
    write(tmp_path / "Annotations" / "b.xml", "<annotation><object>")
    with pytest.raises(InputError, match=r"b\.xml.*malformed"):
        ds[1]


@pytest.mark.filterwarnings("ignore:.*line skipped")
def test_yolo_boxes_classes_and_bad_lines(tmp_path: Path) -> None:
    save(tmp_path / "images" / "a.jpg", smear())
    write(tmp_path / "classes.txt", "RBC\nWBC\n")
    write(tmp_path / "labels" / "a.txt", "1 0.25 0.3 0.3 0.35\n0 0.1 0.1 0.1 0.1\n"
          "1 0.5 0.5\n1 1.5 0.5 0.1 0.1\n1 x 0.5 0.1 0.1\n")
    with pytest.warns(UserWarning) as caught:
        ds = open_dataset(tmp_path)
    assert len(caught) == 3 and ds.format == "yolo"
    assert [w.split(": ")[0][-7:] for w in ds.warnings] == ["a.txt:3", "a.txt:4", "a.txt:5"]
    rec = ds[0]
    np.testing.assert_allclose(rec.boxes, [[24, 25, 96, 95]])
    assert rec.instances[60, 60] == 1 and rec.weak
    with pytest.raises(InputError, match="a.txt:3"):
        open_dataset(tmp_path, strict=True)
    (tmp_path / "classes.txt").unlink()
    write(tmp_path / "data.yaml", "nc: 2\nnames:\n  - leukocyte\n  - platelet\n")
    assert len(open_dataset(tmp_path)[0].boxes) == 1
    (tmp_path / "data.yaml").unlink()
    assert len(open_dataset(tmp_path)[0].boxes) == 2  # no names: every box


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set ALLSEG_SHARED_DATA)")
    return path


def test_real_bccd() -> None:
    root = shared("bccd", "BCCD")
    ds = open_dataset(root)
    assert ds.format == "voc" and len(ds) == 364 and not ds.warnings
    test = open_dataset(root, split="test")
    assert len(test) == 72
    records = list(test.iter_records())
    assert len(records) == 72 and sum(len(r.boxes) for r in records) == 71
    plain = list(open_dataset(root, weak_labels=False).iter_records())
    assert sum(len(r.boxes) for r in plain) == 372  # the README's WBC count
    for rec in records[:5]:
        assert rec.instances.max() == len(rec.boxes) and rec.weak


def test_real_bccd_weak_cells_leave_out_boxed_red_cells() -> None:
    """BCCD's crowded red cells lie over its leukocytes' boxes: their own boxes keep them
    out of the weak cytoplasm (without them 6.7% of it lay in red-cell ellipses)."""
    from allseg.data.weak_labels import red_cell_area

    trainval = open_dataset(shared("bccd", "BCCD"), split="trainval")
    cytoplasm = in_red_cells = 0
    for i in range(0, len(trainval), 8):
        rec = trainval[i]
        weak_cytoplasm = rec.parts == CYTOPLASM
        cytoplasm += weak_cytoplasm.sum()
        in_red_cells += (weak_cytoplasm & red_cell_area(rec.red_cell_boxes, rec.shape)).sum()
    assert cytoplasm > 0 and in_red_cells / cytoplasm < 0.002


def test_real_zheng() -> None:
    root = shared("zheng_wbc", "Dataset 1")
    ds = open_dataset(root)
    assert ds.format == "masks" and len(ds) == 300 and not ds.warnings
    for rec in (ds[0], ds[299]):
        assert rec.image.shape == (120, 120, 3)
        assert set(np.unique(rec.parts)) == {0, CYTOPLASM, NUCLEUS} and rec.instances.max() >= 1


def test_synthetic_mask_folder_keeps_blast_labels_and_scale(tmp_path: Path) -> None:
    """Exact cell classes and pixel size of generated mask folders are not lost."""
    from allseg.synth import write_dataset

    write_dataset("masks", tmp_path, n=3, seed=21)
    ds = open_dataset(tmp_path)
    for i, path in enumerate(ds.items):
        cells = json.loads((tmp_path / "cells" / f"{path.stem}.json").read_text())
        record = ds[i]
        assert record.um_per_px == pytest.approx(cells["um_per_px"])
        assert record.cell_labels == {c["id"]: "blast" if c["is_blast"] else "leukocyte"
                                      for c in cells["cells"]}


def test_real_txl_crops_with_red_cells_cut_by_the_border_keep_a_ruler() -> None:
    """At 100x most red cells of a Raabin crop touch the border: their uncut sides measure it
    (before, 53 of 350 crops had no ruler and were trained at a guess up to 2.7x off), and
    on photos with enough whole boxes too, those sides read the same scale."""
    from allseg.data.ruler import RBC_DIAMETER_UM, cut_box_sides, red_cell_scale, whole_boxes

    dataset = open_dataset(shared("txl_pbc", "train"), "yolo", weak_labels=False)
    raabin = [i for i, p in enumerate(dataset.items) if p.stem.startswith("raabin_")]
    few_whole, without_scale, ratios = 0, 0, []
    for i in raabin[::3]:
        record = dataset[i]
        boxes, shape = record.red_cell_boxes, record.shape
        whole = len(whole_boxes(boxes, shape))
        few_whole += whole < 3
        without_scale += record.um_per_px is None
        sides = cut_box_sides(boxes, shape)
        if len(sides) >= 3 and whole >= 3:  # both rulers: compare
            cut_sides_scale = RBC_DIAMETER_UM / float(np.median(sides))
            ratios.append(cut_sides_scale / red_cell_scale(boxes, shape))
    assert few_whole >= 10 and without_scale <= 1
    assert len(ratios) >= 50 and abs(np.median(ratios) - 1) < 0.03
