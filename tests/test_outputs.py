"""Output files: contents, types, round trips and atomicity."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.draw import disk

from allseg import DISCLAIMER, __version__
from allseg.outputs import (
    CellResult,
    ImageResult,
    RunWriter,
    draw_overlay,
    output_paths,
    outputs_complete,
    to_geojson,
    verdict_for,
    write_image_outputs,
)
from allseg.outputs.writers import CSV_COLUMNS
from allseg.postprocess import cell_features

H, W = 90, 140


def fake_result(probabilities: tuple[float, ...] = (0.93, 0.12),
                name: str = "data/Im001_1.jpg") -> tuple[ImageResult, np.ndarray]:
    """An image with one cell per probability, run through the real feature code."""
    image = np.full((H, W, 3), 230, np.uint8)
    parts = np.zeros((H, W), np.uint8)
    instances = np.zeros((H, W), np.int32)
    for k in range(len(probabilities)):
        centre = (45, 35 + 70 * k)
        rr, cc = disk(centre, 25, shape=(H, W))
        parts[rr, cc], instances[rr, cc], image[rr, cc] = 128, k + 1, (200, 160, 210)
        rr, cc = disk(centre, 15, shape=(H, W))
        parts[rr, cc], image[rr, cc] = 255, (90, 50, 120)
    feats = cell_features(image, parts, instances, um_per_px=0.3)
    cells = [CellResult.from_features(f, p) for f, p in zip(feats, probabilities, strict=True)]
    result = ImageResult(image=name, width=W, height=H, um_per_px=0.3, scale_source="red-cells",
                         cells=cells, model={"name": "test", "version": "0"},
                         timings={"segment": 0.5, "classify": 0.25}, parts=parts,
                         instances=instances)
    return result, image


def test_verdict() -> None:
    assert verdict_for(0) == "no blasts found"
    assert verdict_for(3) == "ALL suspected"
    result, _ = fake_result((0.2, 0.4))
    assert result.verdict == "no blasts found" and result.blast_count == 0


def test_all_image_outputs(tmp_path: Path) -> None:
    result, image = fake_result()
    paths = write_image_outputs(result, image, tmp_path, "Im001_1")
    assert paths == output_paths(tmp_path, "Im001_1")
    assert outputs_complete(tmp_path, "Im001_1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["Im001_1.json", "Im001_1_parts.png", "Im001_1_instances.png", "Im001_1_overlay.png",
         "Im001_1.geojson"])

    doc = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert list(doc) == ["image", "width", "height", "um_per_px", "scale_source",
                         "scale_confidence", "monochrome", "verdict",
                         "blast_count", "leukocyte_count", "cells", "model", "timings",
                         "disclaimer"]
    assert doc["image"] == "data/Im001_1.jpg"
    assert (doc["width"], doc["height"], doc["um_per_px"]) == (W, H, 0.3)
    assert doc["verdict"] == "ALL suspected"
    assert (doc["blast_count"], doc["leukocyte_count"]) == (1, 2)
    assert doc["disclaimer"] == DISCLAIMER and doc["model"]["name"] == "test"
    assert doc["timings"] == {"segment": 0.5, "classify": 0.25}
    instances = cv2.imread(str(paths["instances"]), cv2.IMREAD_UNCHANGED)
    for cell in doc["cells"]:
        assert list(cell) == ["id", "centroid", "bbox", "area_px", "class",
                              "blast_probability", "features", "contour"]
        assert isinstance(cell["id"], int) and isinstance(cell["area_px"], int)
        assert all(isinstance(v, float) for v in cell["centroid"])
        assert all(isinstance(v, int) for v in cell["bbox"])
        assert cell["class"] in ("blast", "leukocyte")
        assert isinstance(cell["blast_probability"], float)
        assert set(cell["features"]) == {"area_um2", "nc_ratio", "circularity", "diameter_um",
                                         "chromatin_texture", "nucleolus_count"}
        assert all(isinstance(v, int) for point in cell["contour"] for v in point)
        x, y = map(round, cell["centroid"])
        assert instances[y, x] == cell["id"]  # id = value in S_instances.png
        assert cell["area_px"] == int((instances == cell["id"]).sum())
    assert [c["class"] for c in doc["cells"]] == ["blast", "leukocyte"]

    assert instances.dtype == np.uint16 and (instances == result.instances).all()
    parts = cv2.imread(str(paths["parts"]), cv2.IMREAD_UNCHANGED)
    assert parts.dtype == np.uint8 and parts.shape == (H, W)
    assert set(np.unique(parts).tolist()) <= {0, 128, 255} and (parts == result.parts).all()
    overlay = cv2.imread(str(paths["overlay"]))
    assert overlay.shape[1] == W and overlay.shape[0] > H

    geo = json.loads(paths["geojson"].read_text(encoding="utf-8"))
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == 2
    for feature, cell in zip(geo["features"], doc["cells"], strict=True):
        ring = feature["geometry"]["coordinates"][0]
        assert feature["geometry"]["type"] == "Polygon"
        assert ring[0] == ring[-1] and len(ring) >= 4
        xs, ys = np.array(ring).T
        assert xs.min() >= 0 and ys.min() >= 0 and xs.max() < W and ys.max() < H
        props = feature["properties"]
        assert props["objectType"] == "detection" and props["cell_id"] == cell["id"]
        assert props["classification"]["name"] == cell["class"].capitalize()
        assert props["measurements"]["blast_probability"] == cell["blast_probability"]
    assert not list(tmp_path.glob("*.tmp*"))


def test_geojson_ids_are_stable_and_nulls_left_out() -> None:
    result, _ = fake_result()
    result.cells[0].features["area_um2"] = None
    first, again = to_geojson(result), to_geojson(result)
    assert [f["id"] for f in first["features"]] == [f["id"] for f in again["features"]]
    assert "area_um2" not in first["features"][0]["properties"]["measurements"]


@pytest.mark.parametrize("size", [(480, 640), (1944, 2592)])
def test_overlay_scales_with_the_image(size: tuple[int, int]) -> None:
    result, small = fake_result()
    image = cv2.resize(small, size[::-1])
    sy, sx = size[0] / H, size[1] / W
    result.parts = cv2.resize(result.parts, size[::-1], interpolation=cv2.INTER_NEAREST)
    result.instances = cv2.resize(result.instances.astype(np.uint16), size[::-1],
                                  interpolation=cv2.INTER_NEAREST).astype(np.int32)
    for cell in result.cells:
        cell.contour = [[round(x * sx), round(y * sy)] for x, y in cell.contour]
        cell.bbox = [round(cell.bbox[0] * sx), round(cell.bbox[1] * sy),
                     round(cell.bbox[2] * sx), round(cell.bbox[3] * sy)]
    overlay = draw_overlay(image, result)
    assert overlay.dtype == np.uint8 and overlay.shape[1] == size[1]
    header = overlay.shape[0] - size[0]
    assert 10 < header < size[0] / 8
    assert (overlay[header:] != image).any()  # something was drawn on the image
    magenta = (overlay[..., 0] > 200) & (overlay[..., 1] < 60) & (overlay[..., 2] > 150)
    assert magenta.any()


def test_a_dark_photo_is_shown_brightened_and_a_bright_one_as_it_is() -> None:
    """A quarter-exposure photo's overlay shows its slide as the networks saw it (150 of
    255), not black; a photo lit normally is drawn unchanged outside the contours."""
    result, image = fake_result()
    header = draw_overlay(image, result).shape[0] - H
    dark = (image // 4).astype(np.uint8)
    slide = (slice(H - 5, H), slice(0, 5))  # a corner far from both cells
    assert (draw_overlay(image, result)[header:][slide] == image[slide]).all()
    assert dark[slide].max() < 60 and draw_overlay(dark, result)[header:][slide].min() >= 145


def test_the_header_of_a_narrow_crop_wraps_instead_of_shrinking() -> None:
    """A 120 px single-cell crop (Zheng, Raabin thumbnails): the verdict and disclaimer
    break onto several lines of readable text, none running past the right edge."""
    result, image = fake_result()
    narrow = cv2.resize(image, (120, 80))
    result.cells = []
    header = draw_overlay(narrow, result)[:-80]
    text_rows = (header > 200).all(axis=2).any(axis=1)
    bands = np.count_nonzero(np.diff(text_rows.astype(int)) == 1)  # lines of text
    assert bands >= 3
    assert header.shape[0] >= bands * 12  # each line at least ~9 px capitals plus spacing
    assert not (header[:, -3:] > 200).all(axis=2).any()  # the text stops before the edge
    wide = draw_overlay(cv2.resize(image, (1200, 800)), result)
    assert wide.shape[0] - 800 < 60  # a wide image keeps one line


def test_too_many_ids_for_16_bit_png(tmp_path: Path) -> None:
    result, image = fake_result()
    result.instances[0, 0] = 70000
    with pytest.raises(ValueError, match="16-bit"):
        write_image_outputs(result, image, tmp_path, "big")
    assert not list(tmp_path.iterdir())


def test_failed_write_leaves_destination_untouched(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    result, image = fake_result()
    paths = write_image_outputs(result, image, tmp_path, "S")
    before = {name: path.read_bytes() for name, path in paths.items()}

    def crash_halfway(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", crash_halfway)
    result.cells.pop()
    with pytest.raises(OSError, match="disk full"):
        write_image_outputs(result, image, tmp_path, "S")
    assert paths["json"].read_bytes() == before["json"]
    assert paths["geojson"].read_bytes() == before["geojson"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_outputs_incomplete(tmp_path: Path) -> None:
    result, image = fake_result()
    paths = write_image_outputs(result, image, tmp_path, "S")
    paths["overlay"].unlink()
    assert not outputs_complete(tmp_path, "S")
    assert not outputs_complete(tmp_path, "other")


def test_run_writer(tmp_path: Path) -> None:
    first, _ = fake_result(name="a/Im001_1.jpg")
    second, _ = fake_result((0.1,), name="a/Ïm002_0.jpg")
    with RunWriter(tmp_path) as run:
        run.add(first)
        run.add(second)
        run.add_failure(Path("a/broken.jpg"), "cannot decode image")
    with (tmp_path / "cells.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 3
    assert [r["image"] for r in rows] == ["a/Im001_1.jpg"] * 2 + ["a/Ïm002_0.jpg"]
    assert [r["class"] for r in rows] == ["blast", "leukocyte", "leukocyte"]
    assert float(rows[0]["blast_probability"]) == 0.93
    assert float(rows[0]["area_um2"]) == pytest.approx(first.cells[0].features["area_um2"])
    assert int(rows[1]["id"]) == 2 and int(rows[1]["bbox_x1"]) == 105 + 25  # centre + radius

    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert set(summary) == {"allseg_version", "model", "images", "failures", "totals",
                            "disclaimer"}
    assert summary["allseg_version"] == __version__ and summary["model"]["name"] == "test"
    assert summary["images"][0] == {"image": "a/Im001_1.jpg", "verdict": "ALL suspected",
                                    "blast_count": 1, "leukocyte_count": 2, "seconds": 0.75}
    assert summary["failures"] == [{"image": "a/broken.jpg", "error": "cannot decode image"}]
    assert summary["totals"] == {"images": 2, "failures": 1, "all_suspected": 1, "blasts": 1,
                                 "leukocytes": 3, "seconds": 1.5}
    assert summary["disclaimer"] == DISCLAIMER
    assert not list(tmp_path.glob(".*tmp*"))
