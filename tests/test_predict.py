"""Prediction end to end with the bundled model: the output contract, scales, bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allseg.inference.batch import predict_files
from allseg.inference.predictor import Predictor
from allseg.synth import generate_field

JSON_KEYS = {"image", "width", "height", "um_per_px", "verdict", "blast_count",
             "leukocyte_count", "cells", "model", "disclaimer"}
CELL_KEYS = {"id", "centroid", "bbox", "area_px", "class", "blast_probability", "features",
             "contour"}
FEATURE_KEYS = {"area_um2", "nc_ratio", "circularity", "diameter_um", "chromatin_texture",
                "nucleolus_count"}


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor("default")


@pytest.fixture(scope="module")
def field() -> tuple[np.ndarray, float]:
    f = generate_field(np.random.default_rng(4242), 900, 1200, um_per_px=0.1,
                       blast_fraction=0.5, n_leukocytes=5)
    return f.image, f.um_per_px


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, predictor: Predictor,
            field: tuple[np.ndarray, float]) -> Path:
    folder = tmp_path_factory.mktemp("run") / "inputs"
    folder.mkdir()
    Image.fromarray(field[0]).save(folder / "field.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.png").write_text("this is text", encoding="utf-8")
    out = folder.parent / "out"
    predict_files(predictor, [folder], out, progress=False)
    return out


def test_every_output_file_and_field(run_dir: Path, field: tuple[np.ndarray, float]) -> None:
    image, _ = field
    h, w = image.shape[:2]
    for suffix in (".json", "_parts.png", "_instances.png", "_overlay.png", ".geojson"):
        assert (run_dir / f"field{suffix}").is_file(), suffix
    data = json.loads((run_dir / "field.json").read_text())
    assert set(data) >= JSON_KEYS and (data["width"], data["height"]) == (w, h)
    assert data["leukocyte_count"] == len(data["cells"]) >= 3
    assert data["verdict"] in ("ALL suspected", "no blasts found")
    assert "not a medical device" in data["disclaimer"]
    parts = np.asarray(Image.open(run_dir / "field_parts.png"))
    instances = np.asarray(Image.open(run_dir / "field_instances.png"))
    assert parts.shape == instances.shape == (h, w)
    assert parts.dtype == np.uint8 and set(np.unique(parts)) <= {0, 128, 255}
    assert instances.dtype == np.uint16
    assert set(np.unique(instances)) - {0} == {c["id"] for c in data["cells"]}
    for cell in data["cells"]:
        assert set(cell) >= CELL_KEYS and set(cell["features"]) >= FEATURE_KEYS
        x, y = cell["centroid"]
        x0, y0, x1, y1 = cell["bbox"]
        assert 0 <= x0 <= x < x1 <= w and 0 <= y0 <= y < y1 <= h
        assert instances[round(y), round(x)] == cell["id"] or cell["features"]["nc_ratio"] >= 0
        assert 0.0 <= cell["blast_probability"] <= 1.0
        assert cell["class"] in ("blast", "leukocyte")
    geo = json.loads((run_dir / "field.geojson").read_text())
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(data["cells"])


def test_bad_files_are_reported_and_the_rest_go_on(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    failed = sorted(Path(f["image"]).name for f in summary["failures"])
    assert failed == ["broken.jpg", "notes.png"]
    assert all("broken.jpg" in f["error"] or "notes.png" in f["error"]
               for f in summary["failures"])
    assert [Path(i["image"]).name for i in summary["images"]] == ["field.png"]
    rows = (run_dir / "cells.csv").read_text().splitlines()
    assert rows[0].startswith("image,") and len(rows) - 1 == summary["totals"]["leukocytes"]
    assert not [p for p in os.listdir(run_dir) if p.endswith(".tmp") or p.startswith(".")]


def test_skip_existing_does_not_redo_finished_images(run_dir: Path, predictor: Predictor) -> None:
    before = (run_dir / "field.json").stat().st_mtime_ns
    (run_dir / "field_overlay.png").unlink()  # an incomplete image is predicted again
    writer = predict_files(predictor, [run_dir.parent / "inputs"], run_dir, skip_existing=True,
                           progress=False)
    assert (run_dir / "field_overlay.png").is_file()
    assert len(writer.failures) == 2
    after = (run_dir / "field.json").stat().st_mtime_ns
    predict_files(predictor, [run_dir.parent / "inputs"], run_dir, skip_existing=True,
                  progress=False)
    assert (run_dir / "field.json").stat().st_mtime_ns == after != before


@pytest.mark.parametrize("factor", [0.5, 1.5])
def test_coordinates_are_in_original_pixels_at_any_scale(
        predictor: Predictor, field: tuple[np.ndarray, float], factor: float) -> None:
    image, um = field
    base = predictor.predict_image(image, "base", um_per_px=um)
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    scaled_image = np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))
    scaled = predictor.predict_image(scaled_image, "scaled", um_per_px=um / factor)
    assert scaled.instances.shape == scaled_image.shape[:2]
    assert scaled.leukocyte_count == base.leukocyte_count
    expected = np.array([c.centroid for c in base.cells]) * factor
    got = np.array([c.centroid for c in scaled.cells])
    dist = np.linalg.norm(expected[:, None] - got[None], axis=2).min(axis=1)
    assert dist.max() < 6 * max(1.0, factor), dist
    area_ratio = sum(c.area_px for c in scaled.cells) / sum(c.area_px for c in base.cells)
    assert area_ratio == pytest.approx(factor ** 2, rel=0.1)


def test_extra_formats_coco_and_imagej(run_dir: Path, predictor: Predictor,
                                       tmp_path: Path) -> None:
    import zipfile

    from roifile import ImagejRoi

    out = tmp_path / "fmt"
    predict_files(predictor, [run_dir.parent / "inputs" / "field.png"], out, progress=False,
                  formats=["coco", "imagej-roi"])
    data = json.loads((out / "field.json").read_text())
    coco = json.loads((out / "coco.json").read_text())
    assert len(coco["annotations"]) == len(data["cells"]) and coco["images"][0]["width"] == 1200
    assert {c["name"] for c in coco["categories"]} == {"leukocyte", "blast"}
    for ann in coco["annotations"]:
        assert len(ann["segmentation"][0]) >= 6 and ann["bbox"][2] > 0
    with zipfile.ZipFile(out / "field_rois.zip") as archive:
        names = archive.namelist()
        assert len(names) == len(data["cells"])
        roi = ImagejRoi.frombytes(archive.read(names[0]))
        assert len(roi.coordinates()) == len(data["cells"][0]["contour"])


def test_a_monochrome_photo_is_recoloured_and_said_once(
        tmp_path: Path, predictor: Predictor, field: tuple[np.ndarray, float],
        capsys: pytest.CaptureFixture) -> None:
    """A grey camera's photos are flagged in S.json and named in one warning per run."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    grey = Image.fromarray(field[0]).convert("L")
    for name in ("grey_a.png", "grey_b.png"):
        grey.save(folder / name)
    Image.fromarray(field[0]).save(folder / "colour.png")
    predict_files(predictor, [folder], tmp_path / "out", progress=False, um_per_px=field[1])
    flags = {name: json.loads((tmp_path / "out" / f"{name}.json").read_text())["monochrome"]
             for name in ("grey_a", "grey_b", "colour")}
    assert flags == {"grey_a": True, "grey_b": True, "colour": False}
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no colour" in line]
    assert len(warnings) == 1 and "2 of 3 image(s)" in warnings[0]


def test_flips_are_averaged_by_default_only_on_small_inputs(
        predictor: Predictor, field: tuple[np.ndarray, float],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from allseg.inference.predictor import AUTO_TTA_MAX_PIXELS

    flipped_calls = []
    flipped = predictor.flipped_segmenter
    monkeypatch.setattr(predictor, "flipped_segmenter",
                        lambda batch: flipped_calls.append(batch.shape) or flipped(batch))
    image, um = field  # 1200 x 900 at 0.1 µm/px: 400 x 300 canonical pixels, too large
    assert AUTO_TTA_MAX_PIXELS < 400 * 300
    assert predictor.model_info["tta"] == "auto"
    assert predictor.predict_image(image, um_per_px=um).model["tta"] is False
    assert not flipped_calls
    crop = image[300:600, 300:600]  # 100 x 100 canonical pixels: a crop, flips are cheap
    result = predictor.predict_image(crop, um_per_px=um)
    assert result.model["tta"] is True and flipped_calls
    assert predictor.model_info["tta"] == "auto"  # the per-image flag does not leak


@pytest.mark.parametrize("sample", ["BloodImage_00007.jpg", "BloodImage_00011.jpg"])
def test_a_dark_photo_gives_the_cell_of_its_bright_copy(predictor: Predictor, sample: str) -> None:
    """A camera at a quarter of the exposure: the same leukocyte, outlined and measured as
    in the bright photo. Without brightening, the outline grew by 12% and the scale of one
    sample read 24% fine; brightened, the areas agree within 3.3% and 5.4% (both photos
    segmented on their level-spread copies; 3.3% and 4.1% before they were)."""
    from allseg.io.images import read_image

    image = read_image(Path(__file__).parents[1] / "src" / "allseg" / "samples" / sample)
    dark = np.clip(image * 0.25 + 0.5, 0, 255).astype(np.uint8)
    bright, dim = predictor.predict_image(image), predictor.predict_image(dark)
    assert dim.leukocyte_count == bright.leukocyte_count == 1
    assert dim.um_per_px == pytest.approx(bright.um_per_px, rel=0.1)
    assert dim.cells[0].area_px == pytest.approx(bright.cells[0].area_px, rel=0.07)
    assert np.allclose(dim.cells[0].centroid, bright.cells[0].centroid, atol=3)


def test_an_over_exposed_photo_is_predicted_at_the_finer_ruler_s_scale(
        predictor: Predictor) -> None:
    """At 1.5x the exposure a bundled sample's red cells read 1.7x coarse with full
    confidence, and its leukocyte fell in two. White takes the pale parts of red cells and
    leukocytes alike, so both rulers read coarse and the finer one is kept."""
    from allseg.io.images import read_image

    image = read_image(Path(__file__).parents[1] / "src" / "allseg" / "samples"
                       / "BloodImage_00011.jpg")
    clipped = np.clip(image * 1.5 + 0.5, 0, 255).astype(np.uint8)
    normal, over = predictor.predict_image(image), predictor.predict_image(clipped)
    assert over.leukocyte_count == normal.leukocyte_count == 1
    assert over.um_per_px == pytest.approx(normal.um_per_px, rel=0.15)
    assert over.scale_confidence < 0.5  # the user is told the scale is a guess


def test_one_photo_saved_twice_in_one_folder_gets_two_sets_of_outputs(
        tmp_path: Path, predictor: Predictor, field: tuple[np.ndarray, float]) -> None:
    """``x.png`` beside ``x.tif`` (a raw camera file and its export): both were written to
    one set of outputs, the second over the first, and the summary named one of them twice."""
    folder = tmp_path / "in"
    folder.mkdir()
    small = Image.fromarray(field[0][:300, :400])
    for name in ("x.png", "x.tif"):
        small.save(folder / name)
    predict_files(predictor, [folder], tmp_path / "out", progress=False, um_per_px=field[1])
    images = {json.loads((tmp_path / "out" / f"in_x_{kind}.json").read_text())["image"]
              for kind in ("png", "tif")}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert images == {str(folder / "x.png"), str(folder / "x.tif")}
    assert sorted(im["image"] for im in summary["images"]) == sorted(images)
