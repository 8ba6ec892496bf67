"""Dataset scoring with a fake predictor built from the ground truth, and named splits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.draw import disk

from allseg.data.readers import open_dataset
from allseg.data.record import BLAST, LEUKOCYTE, Record
from allseg.evaluation import ALLIDB_TEST20, evaluate_dataset, score_image, select
from allseg.outputs.schema import CellResult, ImageResult
from allseg.synth import write_dataset

SHARED = Path(os.environ.get("ALLSEG_SHARED_DATA",
                             Path(__file__).resolve().parents[1].parent / "shared" / "data"))
BCCD = SHARED / "bccd" / "BCCD"


def cell(id_: int, centroid: list[float], blast: bool) -> CellResult:
    p = 0.9 if blast else 0.1
    return CellResult(id=id_, centroid=[float(v) for v in centroid], bbox=[0, 0, 1, 1],
                      area_px=1, cls=BLAST if blast else LEUKOCYTE, blast_probability=p,
                      features={}, contour=[])


def result_from_truth(record: Record, drop: tuple[int, ...] = (),
                      flip: tuple[int, ...] = ()) -> ImageResult:
    """What a perfect predictor would say, less the cells in ``drop`` and with the
    blast calls of the cells in ``flip`` reversed (ids are instance ids, or box numbers)."""
    h, w = record.shape
    labels = record.cell_labels or {}
    cells: list[CellResult] = []
    parts = np.zeros((h, w), np.uint8) if record.parts is None else record.parts.copy()
    instances = (np.zeros((h, w), np.int32) if record.instances is None
                 else record.instances.copy())
    if record.boxes is not None:  # boxes: one cell at each box centre
        for k, box in enumerate(record.boxes, start=1):
            if k not in drop:
                cells.append(cell(k, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], k in flip))
    else:
        for k in np.unique(instances[instances > 0]).tolist():
            if k in drop:
                parts[instances == k] = 0
                instances[instances == k] = 0
                continue
            y, x = ndimage.center_of_mass(instances == k)
            cells.append(cell(k, [x, y], (labels.get(k) == BLAST) != (k in flip)))
    return ImageResult(image=record.name, width=w, height=h,
                       um_per_px=record.um_per_px or 0.15, scale_source="dataset", cells=cells,
                       model={"name": "fake"}, timings={"total": 0.0}, parts=parts,
                       instances=instances)


class FakePredictor:
    """Duck-typed stand-in for :class:`allseg.Predictor`, looking answers up by file stem."""

    thresholds = {"blast_probability": 0.5}

    def __init__(self, dataset, drop: dict | None = None, flip: dict | None = None) -> None:
        self.records = {r.name: r for r in dataset.iter_records()}
        self.drop, self.flip = drop or {}, flip or {}
        self.calls: list[tuple[str, float | None]] = []

    def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
        stem = Path(name).stem
        self.calls.append((stem, um_per_px))
        record = self.records[stem]
        assert image.shape == record.image.shape
        return result_from_truth(record, self.drop.get(stem, ()), self.flip.get(stem, ()))


def evaluate(dataset, all_normal: bool = False, **fake) -> tuple[dict, list[dict]]:
    result = evaluate_dataset(FakePredictor(dataset, **fake), dataset, progress=False,
                              all_normal=all_normal)
    json.dumps([result.summary(), result.per_image], allow_nan=False)  # plain JSON types
    return result.summary(), result.per_image


# --- synthetic layouts ------------------------------------------------------------------


@pytest.fixture(scope="module")
def masks_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("masks")
    write_dataset("masks", root, 3, seed=0)
    return open_dataset(root)


@pytest.fixture(scope="module")
def allidb1_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("allidb1")
    write_dataset("allidb1", root, 2, seed=0)
    return open_dataset(root)


@pytest.fixture(scope="module")
def allidb2_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("allidb2")
    write_dataset("allidb2", root, 4, seed=0)
    return open_dataset(root)


def test_masks_perfect(masks_dataset) -> None:
    summary, rows = evaluate(masks_dataset)
    assert summary["images"] == len(rows) == 3 and summary["failures"] == []
    for part in ("nucleus", "cell"):
        assert summary["pixel"][part]["dice"] == summary["pixel"][part]["iou"] == 1.0
        assert summary["pixel"][part]["mean_dice_per_image"] == 1.0
        assert summary["pixel"][part]["images"] == 3
    n_cells = sum(len(np.unique(r.instances)) - 1 for r in masks_dataset.iter_records())
    for key in ("iou50", "iou75"):
        inst = summary["instances"][key]
        assert (inst["tp"], inst["fp"], inst["fn"]) == (n_cells, 0, 0)
        assert inst["f1"] == inst["ap"] == inst["panoptic_quality"] == 1.0
    # the generator's blasts (cells/*.json) are found exactly, and nothing else is called one
    n_blasts = sum(v == "blast" for r in masks_dataset.iter_records()
                   for v in r.cell_labels.values())
    assert n_blasts > 0
    assert summary["blast_points"]["f1"] == 1.0 and summary["blast_points"]["tp"] == n_blasts
    assert not {"image_level", "crop_level", "leukocyte_boxes"} & set(summary)
    assert all(row["cell_dice"] == 1.0 for row in rows)


def test_masks_dropped_cell_lowers_recall(masks_dataset) -> None:
    first = masks_dataset[0]
    n_cells = sum(len(np.unique(r.instances)) - 1 for r in masks_dataset.iter_records())
    summary, rows = evaluate(masks_dataset, drop={first.name: (1,)})
    inst = summary["instances"]["iou50"]
    assert (inst["tp"], inst["fp"], inst["fn"]) == (n_cells - 1, 0, 1)
    assert inst["recall"] == pytest.approx((n_cells - 1) / n_cells)
    assert inst["precision"] == 1.0
    area = int((first.instances == 1).sum())
    cell_px = int((first.parts > 0).sum())
    assert rows[0]["cell_fn"] == area
    assert rows[0]["cell_dice"] == pytest.approx(2 * (cell_px - area) / (2 * cell_px - area))
    assert rows[1]["cell_dice"] == 1.0 and summary["pixel"]["cell"]["fn"] == area


def test_allidb1_blasts_and_verdicts(allidb1_dataset) -> None:
    records = list(allidb1_dataset.iter_records())
    healthy, ill = records  # Im001_0, Im002_1
    assert (healthy.image_label, ill.image_label) == (0, 1) and len(ill.points) == 3
    summary, rows = evaluate(allidb1_dataset)
    blasts = summary["blast_points"]
    assert (blasts["tp"], blasts["fp"], blasts["fn"], blasts["f1"]) == (3, 0, 0, 1.0)
    assert blasts["mean_distance_px"] < 1.0  # .xyc points are rounded centroids
    assert rows[1]["blast_radius"] == pytest.approx(6.0 / ill.um_per_px)
    image = summary["image_level"]
    assert image["accuracy"] == image["sensitivity"] == image["specificity"] == 1.0
    assert image["roc_auc"] == 1.0 and image["n"] == 2
    assert [row["verdict"] for row in rows] == ["no blasts found", "ALL suspected"]
    assert summary["pixel"]["cell"]["dice"] == 1.0
    assert summary["instances"]["iou75"]["f1"] == 1.0


def test_allidb1_missed_and_false_blasts(allidb1_dataset) -> None:
    healthy, ill = allidb1_dataset.iter_records()
    blast_ids = [k for k, v in ill.cell_labels.items() if v == BLAST]
    summary, rows = evaluate(allidb1_dataset, flip={ill.name: (blast_ids[0],),
                                                    healthy.name: (1,)})
    blasts = summary["blast_points"]
    assert (blasts["tp"], blasts["fp"], blasts["fn"]) == (2, 1, 1)
    assert blasts["recall"] == pytest.approx(2 / 3) and blasts["precision"] == pytest.approx(2 / 3)
    assert (rows[0]["blast_fp"], rows[0]["blast_f1"]) == (1, 0.0)
    image = summary["image_level"]
    assert (image["tp"], image["fp"], image["tn"], image["fn"]) == (1, 1, 0, 0)
    assert image["specificity"] == 0.0 and image["accuracy"] == 0.5
    assert image["roc_auc"] == 0.5  # both images score 0.9


def test_blast_centroids_from_cell_labels_without_points(allidb1_dataset) -> None:
    ill = allidb1_dataset[1]
    ill.points = None  # the true blasts are then the instances labelled blast
    row = score_image(result_from_truth(ill), ill)
    assert (row["blast_tp"], row["blast_fp"], row["blast_fn"]) == (3, 0, 0)
    assert row["blast_sum_distance"] == pytest.approx(0.0, abs=1e-6)


def test_point_radius_and_scale_override(allidb1_dataset) -> None:
    fake = FakePredictor(allidb1_dataset)
    result = evaluate_dataset(fake, allidb1_dataset, point_radius_um=3.0, um_per_px=0.1,
                              progress=False)
    assert [um for _, um in fake.calls] == [0.1, 0.1]
    ill = result.per_image[1]
    assert ill["blast_radius"] == pytest.approx(3.0 / ill["um_per_px"])


def test_allidb2_crops(allidb2_dataset) -> None:
    summary, rows = evaluate(allidb2_dataset)
    crop = summary["crop_level"]
    assert crop["accuracy"] == crop["roc_auc"] == 1.0 and crop["n"] == 4
    assert [row["crop_label"] for row in rows] == [0, 0, 1, 1]
    assert [row["crop_score"] for row in rows] == [0.1, 0.1, 0.9, 0.9]
    assert "blast_points" not in summary  # crops are scored as crops, not as fields
    assert summary["pixel"]["cell"]["dice"] == 1.0
    missed, _ = evaluate(allidb2_dataset, flip={"Im003_1": (1,)})
    assert missed["crop_level"]["sensitivity"] == 0.5
    assert missed["crop_level"]["roc_auc"] == pytest.approx(0.75)
    empty, rows = evaluate(allidb2_dataset, drop={"Im004_1": (1,)})
    assert rows[3]["crop_score"] == 0.0 and not rows[3]["crop_called"]
    assert empty["crop_level"]["fn"] == 1


def test_names_filter_with_folds(allidb2_dataset) -> None:
    stems = [p.stem for p in allidb2_dataset.items]
    fold = select(stems, "fold-1/2")
    assert fold == ["Im002_0", "Im004_1"]
    result = evaluate_dataset(FakePredictor(allidb2_dataset), allidb2_dataset,
                              names_filter=fold, progress=False)
    assert [row["image"] for row in result.per_image] == fold


def test_unreadable_image_is_a_failure(tmp_path: Path) -> None:
    write_dataset("masks", tmp_path, 2, seed=1)
    fake = FakePredictor(open_dataset(tmp_path))
    bad = tmp_path / "images" / "synth_0002.png"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.warns(UserWarning):
        result = evaluate_dataset(fake, open_dataset(tmp_path), progress=False)
    summary = result.summary()
    assert summary["images"] == 1 and len(summary["failures"]) == 1
    assert "synth_0002" in summary["failures"][0]["image"]


# --- cell level -------------------------------------------------------------------------


def test_cell_level_on_labelled_instances(masks_dataset) -> None:
    records = list(masks_dataset.iter_records())
    n_cells = sum(len(r.cell_labels) for r in records)
    n_blasts = sum(v == BLAST for r in records for v in r.cell_labels.values())
    summary, rows = evaluate(masks_dataset)
    cells = summary["cell_level"]
    assert (cells["cells"], cells["n"], cells["positives"]) == (n_cells, n_cells, n_blasts)
    assert cells["blast_calls"] == cells["tp"] == n_blasts and cells["fp"] == 0
    assert cells["roc_auc"] == 1.0 and cells["images"] == 3
    assert cells["blast_call_rate"] == pytest.approx(n_blasts / n_cells)
    # P = 0.1 for normal cells, 0.9 for blasts: every one is 0.1 off its bin's truth
    assert cells["calibration"]["ece"] == pytest.approx(0.1)
    assert cells["calibration"]["brier"] == pytest.approx(0.01)
    assert sorted(rows[0]["cell_scores"]) == sorted(
        0.9 if v == BLAST else 0.1 for v in records[0].cell_labels.values())
    first = records[0]
    normal = next(k for k, v in first.cell_labels.items() if v != BLAST and k != 1)
    flipped, _ = evaluate(masks_dataset, flip={first.name: (normal,)}, drop={first.name: (1,)})
    assert flipped["cell_level"]["fp"] == 1 and flipped["cell_level"]["cells"] == n_cells - 1


def test_cell_level_skips_weak_labels_and_crops(voc: Path, allidb2_dataset) -> None:
    summary, _ = evaluate(open_dataset(voc, "voc", split="test"))
    assert "cell_level" not in summary  # colour-derived instances are no cell labels
    summary, rows = evaluate(allidb2_dataset)
    assert "cell_level" not in summary and "cell_scores" not in rows[0]


class RedCellTakenForALeukocyte(FakePredictor):
    """The fake predictor, plus one cell on the red-cell box (1, 1, 9, 9) of each image."""

    def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
        result = super().predict_image(image, name, um_per_px, cell_diameter_px)
        result.cells.append(cell(99, [5.0, 5.0], blast=True))
        return result


def test_all_normal_counts_every_boxed_cell_as_normal(voc: Path) -> None:
    dataset = open_dataset(voc, "voc", split="test")
    fake = RedCellTakenForALeukocyte(dataset, flip={"a": (2,)})
    result = evaluate_dataset(fake, dataset, progress=False, all_normal=True)
    cells = result.summary()["cell_level"]
    # 2 images x 2 boxed cells; the cells on red cells are not normal leukocytes
    assert (cells["cells"], cells["negatives"], cells["positives"]) == (4, 4, 0)
    assert (cells["blast_calls"], cells["blast_call_rate"]) == (1, 0.25)
    assert cells["specificity"] == 0.75 and cells["roc_auc"] is None
    assert cells["roc_auc_ci95"] is None and cells["sensitivity"] is None
    assert cells["calibration"]["ece"] == pytest.approx((3 * 0.1 + 0.9) / 4)
    assert result.per_image[0]["cell_scores"] == [0.1, 0.9]
    assert result.per_image[0]["cell_labels"] == [0, 0]


def test_all_normal_overrides_blast_labels_and_stays_out_of_the_csv(masks_dataset) -> None:
    from allseg.evaluation.run import per_image_csv
    from allseg.evaluation.score import EvalResult

    n_blasts = sum(v == BLAST for r in masks_dataset.iter_records()
                   for v in r.cell_labels.values())
    summary, rows = evaluate(masks_dataset, all_normal=True)
    cells = summary["cell_level"]
    assert cells["positives"] == 0 and cells["blast_calls"] == n_blasts > 0
    header = per_image_csv(EvalResult(per_image=rows)).splitlines()[0].split(",")
    assert "cell_scores" not in header and "cell_labels" not in header
    assert "cell_dice" in header


def test_cli_all_normal_end_to_end(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from allseg.cli import app

    write_dataset("masks", tmp_path / "data", n=2, seed=4)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path / "data"), "--out",
                                      str(out), "--baseline", "classical", "--all-normal"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    cells = metrics["metrics"]["cell_level"]
    assert metrics["dataset"]["all_normal"] is True
    assert cells["cells"] > 0 and cells["positives"] == 0 and cells["roc_auc"] is None
    assert f"{cells['blast_calls']} of {cells['cells']} cells called blasts" in result.output
    report = (out / "report.html").read_text()
    assert 'alt="cell reliability diagram"' in report
    assert f"{cells['blast_calls']} of {cells['cells']} normal cells" in report
    assert 'alt="cell score histogram"' in report
    plain = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path / "data"), "--out",
                                     str(tmp_path / "plain"), "--baseline", "classical"])
    assert plain.exit_code == 0, plain.output
    plain_cells = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert plain_cells["metrics"]["cell_level"]["positives"] > 0  # the synthetic blasts


# --- boxes ------------------------------------------------------------------------------


def smear(h: int = 200, w: int = 240) -> np.ndarray:
    img = np.full((h, w, 3), (236, 230, 234), np.uint8)
    for y, x in ((60, 60), (140, 150)):
        img[disk((y, x), 28, shape=(h, w))] = (175, 185, 215)
        img[disk((y, x), 18, shape=(h, w))] = (110, 55, 145)
    return img


def voc_xml(boxes: list[tuple[int, int, int, int]]) -> str:
    objects = "".join(
        f"<object><name>WBC</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>" for x0, y0, x1, y1 in boxes)
    rbc = ("<object><name>RBC</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
           "<ymax>9</ymax></bndbox></object>")
    return f"<annotation>{objects}{rbc}</annotation>"


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.fromarray(smear()).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        (tmp_path / "Annotations" / f"{name}.xml").write_text(
            voc_xml([(30, 30, 90, 90), (120, 110, 180, 170)]))
    (tmp_path / "ImageSets/Main/test.txt").write_text("a\nc\n")
    return tmp_path


def test_voc_boxes(voc: Path) -> None:
    dataset = open_dataset(voc, "voc", split="test")
    assert [p.stem for p in dataset.items] == ["a", "c"]
    summary, rows = evaluate(dataset)
    boxes = summary["leukocyte_boxes"]
    assert (boxes["tp"], boxes["fp"], boxes["fn"], boxes["f1"]) == (4, 0, 0, 1.0)
    assert boxes["images"] == 2
    assert "pixel" not in summary and "instances" not in summary  # weak masks are not scored
    dropped, rows = evaluate(dataset, drop={"a": (2,)})
    assert (dropped["leukocyte_boxes"]["fn"], dropped["leukocyte_boxes"]["recall"]) == (1, 0.75)
    assert rows[0]["box_recall"] == 0.5 and rows[1]["box_recall"] == 1.0


def test_real_bccd_test_split() -> None:
    if not (BCCD / "ImageSets" / "Main" / "test.txt").is_file():
        pytest.skip(f"BCCD not found at {BCCD}")
    dataset = open_dataset(BCCD, "voc", split="test")
    names = [p.stem for p in dataset.items[:2]]
    fake = FakePredictor(open_dataset(BCCD, "voc", split="test", weak_labels=False))
    result = evaluate_dataset(fake, dataset, names_filter=names, progress=False)
    summary = result.summary()
    assert summary["images"] == 2
    assert summary["leukocyte_boxes"]["recall"] == 1.0
    assert summary["leukocyte_boxes"]["fp"] == 0


# --- splits -----------------------------------------------------------------------------


def test_select_allidb_test20() -> None:
    assert len(ALLIDB_TEST20) == len(set(ALLIDB_TEST20)) == 20
    assert sum(n.endswith("_1") for n in ALLIDB_TEST20) == 10
    test_numbers = {n[:5] for n in ALLIDB_TEST20}
    names = sorted({f"Im{i:03d}_0" for i in range(1, 109) if f"Im{i:03d}" not in test_numbers}
                   | set(ALLIDB_TEST20))
    assert len(names) == 108
    chosen = select(names, "allidb-test20")
    assert sorted(chosen) == sorted(ALLIDB_TEST20)
    assert select(names, None) == select(names, "all") == names


def test_select_folds_partition_like_the_trainer() -> None:
    from allseg.training.config import DataSource

    names = [f"img{i:02d}" for i in range(13)]
    folds = [select(names, f"fold-{k}/5") for k in range(5)]
    assert sorted(sum(folds, [])) == names
    assert folds[0] == ["img00", "img05", "img10"]
    assert select(names, "fold-2", folds=4) == ["img02", "img06", "img10"]
    source = DataSource(path="x", hold_out=(5, 3))
    assert [n for i, n in enumerate(names) if source.held_out(i)] == folds[3]


@pytest.mark.parametrize("split", ["fold-5/5", "fold-x", "test", "fold-1/0"])
def test_select_rejects_bad_splits(split: str) -> None:
    with pytest.raises(ValueError):
        select(["a"], split)


def test_weak_box_masks_are_not_blast_labels(voc: Path) -> None:
    """A box dataset says where leukocytes are, not that none is a blast: no blast-point
    figures come from its weak masks (BCCD once showed a meaningless blast F1 of 1.0)."""
    dataset = open_dataset(voc, "voc", split="test")
    summary = evaluate_dataset(RedCellTakenForALeukocyte(dataset, flip={}), dataset,
                               progress=False).summary()
    assert "leukocyte_boxes" in summary and "blast_points" not in summary


class ScaleOff(FakePredictor):
    """The fake predictor, its scale ``factor`` times the truth for the first image."""

    def __init__(self, dataset, factor: float) -> None:
        super().__init__(dataset)
        self.first, self.factor = dataset.items[0].stem, factor

    def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
        result = super().predict_image(image, name, um_per_px, cell_diameter_px)
        if Path(name).stem == self.first:
            result.um_per_px *= self.factor
        return result


def test_scale_error_against_the_stated_scale(masks_dataset) -> None:
    result = evaluate_dataset(ScaleOff(masks_dataset, 1.5), masks_dataset, progress=False)
    errors = [row["scale_error"] for row in result.per_image]
    assert errors == pytest.approx([0.5, 0.0, 0.0])
    scale = result.summary()["scale"]
    assert scale["images"] == 3 and scale["max_abs_error"] == pytest.approx(0.5)
    assert scale["median_abs_error"] == pytest.approx(0.0)
