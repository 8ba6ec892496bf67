"""``report.html``: self-contained, complete where the data allows, and rendered by a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from allseg import DISCLAIMER
from allseg.data.readers import open_dataset
from allseg.data.record import BLAST, LEUKOCYTE
from allseg.errors import InputError
from allseg.evaluation.report import truth_overlay, worst_images, write_report
from allseg.evaluation.score import EvalResult
from allseg.outputs.overlay import draw_overlay
from allseg.outputs.schema import CellResult, ImageResult
from allseg.synth import write_dataset

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which(
    "chromium")


def field_row(k: int, rng: np.random.Generator) -> dict:
    """One ALL-IDB1-like field: masks, instances, blast points and an image label."""
    label = k % 2
    row = {"image": f"field_{k:02d}.jpg", "image_label": label}
    for part, size in (("nucleus", 4000), ("cell", 9000)):
        tp = int(size * rng.uniform(0.55, 0.95))
        fp, fn = (int(size * rng.uniform(0.02, 0.2)) for _ in range(2))
        row |= {f"{part}_tp": tp, f"{part}_fp": fp, f"{part}_fn": fn,
                f"{part}_dice": 2 * tp / (2 * tp + fp + fn)}
    for key, miss in (("iou50", 0), ("iou75", 1)):
        tp = 5 - miss - int(rng.integers(0, 2))
        row |= {f"{key}_tp": tp, f"{key}_fp": 5 - tp, f"{key}_fn": 5 - tp,
                f"{key}_sum_iou": tp * (0.8 - 0.05 * miss)}
    blasts = 3 * label
    row |= {"blast_tp": max(0, blasts - 1), "blast_fp": int(rng.integers(0, 2)),
            "blast_fn": min(1, blasts), "blast_sum_distance": 4.0 * max(0, blasts - 1)}
    cell_labels = [int(k < blasts) for k in range(5)]
    row |= {"cell_labels": cell_labels, "cell_scores": [
        float(np.clip(rng.normal(0.2 + 0.6 * v, 0.2), 0, 1)) for v in cell_labels]}
    score = float(np.clip(rng.normal(0.35 + 0.4 * label, 0.2), 0, 1))
    return row | {"image_score": score, "image_called": score >= 0.5,
                  "verdict": "ALL suspected" if score >= 0.5 else "no blasts found"}


def crop_row(k: int, rng: np.random.Generator) -> dict:
    label = k % 2
    score = float(np.clip(rng.normal(0.3 + 0.45 * label, 0.2), 0, 1))
    return {"image": f"crop_{k:03d}.tif", "crop_label": label, "crop_score": score,
            "crop_called": score >= 0.5}


def metrics_for(rows: list[dict]) -> dict:
    return {"dataset": {"path": "/data/ALL_IDB <1&2>", "format": "allidb", "split": "all",
                        "images": len(rows), "failures": []},
            "model": {"name": "allseg-unet", "version": "0.1.0", "arch": {"x": 1}},
            "metrics": EvalResult(per_image=rows).summary(),
            "versions": {"allseg": "0.1.0", "python": "3.11"},
            "date": "2024-05-01T12:00:00+00:00", "disclaimer": DISCLAIMER}


def predicted(record, rng: np.random.Generator) -> ImageResult:
    """A plausible imperfect prediction: the first cell missed, the others eroded."""
    instances = record.instances.copy()
    instances[instances == 1] = 0
    instances = cv2.erode(instances.astype(np.float32), np.ones((7, 7))).astype(np.int32)
    parts = np.where(instances > 0, record.parts, 0).astype(np.uint8)
    cells = []
    for k in np.unique(instances[instances > 0]).tolist():
        contour = max(cv2.findContours((instances == k).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)[0], key=len)
        x, y, w, h = cv2.boundingRect(contour)
        p = float(rng.uniform(0, 1))
        cells.append(CellResult(id=k, centroid=[x + w / 2, y + h / 2], bbox=[x, y, x + w, y + h],
                                area_px=int((instances == k).sum()),
                                cls=BLAST if p >= 0.5 else LEUKOCYTE, blast_probability=p,
                                features={}, contour=contour.reshape(-1, 2).tolist()))
    h, w = record.shape
    return ImageResult(image=record.name, width=w, height=h, um_per_px=0.15,
                       scale_source="dataset", cells=cells, model={"name": "fake"},
                       timings={"total": 0.0}, parts=parts, instances=instances)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, dict, list]:
    rng = np.random.default_rng(0)
    rows = [field_row(k, rng) for k in range(10)] + [crop_row(k, rng) for k in range(30)]
    root = tmp_path_factory.mktemp("masks")
    write_dataset("masks", root, 2, seed=0)
    gallery = [(f"{r.name}: cell Dice 0.61", truth_overlay(r.image, r.parts, r.instances),
                draw_overlay(r.image, predicted(r, rng))) for r in open_dataset(root)]
    out = tmp_path_factory.mktemp("report")
    metrics = metrics_for(rows)
    return write_report(out, metrics, rows, gallery), metrics, gallery


def test_full_report(full_report) -> None:
    path, metrics, gallery = full_report
    text = path.read_text(encoding="utf-8")
    assert path.name == "report.html" and text.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", text)
    assert "<script" not in text and "<link" not in text and "@import" not in text
    assert DISCLAIMER in text
    assert "/data/ALL_IDB &lt;1&amp;2&gt;" in text  # escaped
    m = metrics["metrics"]
    for figure in (m["pixel"]["cell"]["dice"], m["pixel"]["nucleus"]["iou"],
                   m["instances"]["iou75"]["panoptic_quality"], m["blast_points"]["f1"],
                   m["image_level"]["sensitivity"], m["image_level"]["roc_auc"],
                   m["crop_level"]["specificity"], m["crop_level"]["roc_auc"],
                   m["cell_level"]["roc_auc"], m["cell_level"]["blast_call_rate"],
                   m["cell_level"]["calibration"]["ece"]):
        assert f"{figure:.3f}" in text
    # per level: curves, confusion matrix, histogram, reliability diagram; one Dice plot;
    # two images per gallery item
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', text)
    assert len(images) == 3 * 4 + 1 + 2 * len(gallery) == text.count("<img")
    for level in ("image", "crop", "cell"):
        assert f'alt="{level} reliability diagram"' in text
    assert "normal cells" not in text  # blasts among the cells: no all-normal statement
    assert "Worst images" in text and "omitted" not in text


def test_absent_sections_omitted(tmp_path) -> None:
    rows = [{"image": f"a{k}.jpg", "image_label": 1, "image_score": 0.7, "image_called": True}
            for k in range(3)]
    text = write_report(tmp_path, metrics_for(rows), rows).read_text(encoding="utf-8")
    assert text.count("<img") == 3  # confusion matrix, histogram, reliability; no ROC
    assert "One class only" in text and "Crop level (single cells): no labels" in text
    assert "Cell level (every scored leukocyte): no labels" in text
    assert "Per-image Dice: no drawn masks" in text and "Worst images</h2>" not in text
    assert "Pixel:" not in text and "Instances @" not in text
    empty = write_report(tmp_path, {"metrics": {}}, []).read_text(encoding="utf-8")
    assert "<img" not in empty and DISCLAIMER in empty


def test_worst_images_and_truth_overlay() -> None:
    rows = [{"image": "a", "cell_dice": 0.9}, {"image": "b", "cell_dice": 0.2},
            {"image": "c"}, {"image": "d", "cell_dice": 0.5}]
    assert worst_images(rows, n=2) == ["b", "d"]
    assert worst_images(rows, key="nucleus_dice") == []
    image = np.full((60, 80, 3), 200, np.uint8)
    instances = np.zeros((60, 80), np.int32)
    instances[10:30, 10:30] = 1
    parts = np.where(instances > 0, 128, 0).astype(np.uint8)
    for overlay in (truth_overlay(image, parts, instances), truth_overlay(image, parts, None)):
        assert overlay.shape == image.shape and overlay.dtype == np.uint8
        cyan = (overlay[..., 0] < 120) & (overlay[..., 2] > 220)  # contour drawn
        assert cyan.sum() > 40
    assert (truth_overlay(image, None, None) == image).all()


def screenshot(report: Path, png: Path, timeout: float = 60) -> np.ndarray:
    """Render ``report`` with headless chromium; the screenshot as an RGB array."""
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--no-first-run", f"--user-data-dir={png.parent / 'profile'}",
                    f"--screenshot={png}", "--window-size=1280,2000", report.as_uri()],
                   check=False, capture_output=True, timeout=timeout)
    assert png.exists(), "chromium wrote no screenshot"
    return np.asarray(Image.open(png).convert("RGB"))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed "
                    "(apt-get install -y chromium) - browser rendering not checked")
def test_report_renders_in_browser(full_report, tmp_path) -> None:
    pixels = screenshot(full_report[0], tmp_path / "report.png")
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 20  # not a blank page
    assert (pixels.reshape(-1, 3) != 255).any(axis=1).mean() > 0.05


def test_evaluate_writes_metrics_csv_and_report_with_a_gallery(tmp_path: Path) -> None:
    """End to end through allseg.evaluation.run with the classical baseline (no network)."""
    from allseg.evaluation.run import evaluate
    from allseg.synth import write_dataset

    write_dataset("masks", tmp_path / "data", n=3, seed=11)
    metrics = evaluate(tmp_path / "data", tmp_path / "eval", baseline="classical")
    assert metrics["dataset"]["images"] == 3 and metrics["model"]["name"] == "classical-baseline"
    assert 0.0 <= metrics["metrics"]["pixel"]["cell"]["dice"] <= 1.0
    rows = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()
    assert len(rows) == 4 and rows[0].startswith("image,")
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "Research use only" in report and report.count("<img") >= 3


def test_evaluate_saved_predictions_equals_predicting(tmp_path: Path) -> None:
    """`evaluate --predictions DIR` scores `allseg predict` outputs exactly as predicting."""
    from allseg.evaluation.run import evaluate
    from allseg.inference.batch import predict_files
    from allseg.inference.predictor import Predictor
    from allseg.synth import write_dataset

    write_dataset("masks", tmp_path / "data", n=2, seed=12)
    predict_files(Predictor("default"), [tmp_path / "data" / "images"], tmp_path / "pred",
                  progress=False)
    direct = evaluate(tmp_path / "data", tmp_path / "e1")
    saved = evaluate(tmp_path / "data", tmp_path / "e2", predictions=tmp_path / "pred")
    assert saved["metrics"] == direct["metrics"]
    assert saved["model"]["predictions"] == str(tmp_path / "pred")
    with pytest.raises(InputError, match="no prediction for this image"):
        evaluate(tmp_path / "data", tmp_path / "e3", predictions=tmp_path / "e1")
