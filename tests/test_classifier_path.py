"""The user's path to a classifier: labelled crops in class folders or with a CSV, a split by
patient, per-type loss weights, the validation AUC with its interval and a learning curve.

Synthetic ALL-IDB2 crops stand in for a user's labelled cells: ``Im..._1`` become ``blast/``,
``Im..._0`` become ``lymphocyte/``, four "patients" named in the file names.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from allseg.cli import app
from allseg.data.labels_table import read_labels_table, stem_key
from allseg.data.readers import detect_format, open_dataset
from allseg.errors import AllsegError, InputError
from allseg.inference.contrast import TARGET_SPAN
from allseg.inference.monochrome import for_red_cells, is_monochrome
from allseg.inference.scale import ScaleEstimate, estimate_scale
from allseg.io.images import read_image
from allseg.synth import write_dataset
from allseg.training.config import load_config
from allseg.training.datasets import CellCropDataset
from allseg.training.run import collect_samples, train

TINY = ["classifier.kwargs={ width = 4 }", "classifier.epochs=1", "classifier.steps_per_epoch=2",
        "classifier.batch_size=4", "crop_size=32", "val_fraction=0.5", "stage=classifier"]


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cells")
    crops = write_dataset("allidb2", tmp / "synth", n=24, seed=11)
    root = tmp / "classes"
    for i, path in enumerate(crops):
        folder = root / ("blast" if path.stem.endswith("_1") else "lymphocyte")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"P{i % 4}_{path.name}")
    return root


def recipe(tmp_path: Path, source: str, *extra: str):
    path = tmp_path / "recipe.toml"
    path.write_text(f'out = "{tmp_path / "run"}"\n[[data]]\n{source}\n', encoding="utf-8")
    return load_config(path, [*TINY, *extra])


def test_class_folders_are_detected_and_labelled(class_folders: Path) -> None:
    assert detect_format(class_folders) == "classes"
    dataset = open_dataset(class_folders)
    records = list(dataset.iter_records())
    assert len(records) == 24
    blasts = [r for r in records if r.crop_label == 1]
    assert len(blasts) == 12 and all(r.cell_type is None for r in blasts)
    assert {r.cell_type for r in records if r.crop_label == 0} == {"lymphocyte"}


def test_split_keeps_each_patient_on_one_side(class_folders: Path, tmp_path: Path) -> None:
    cfg = recipe(tmp_path, f'path = "{class_folders}"\ngroup_pattern = "^(P\\\\d+)_"\n'
                 'um_per_px = 0.1\nmasks = false')
    data = collect_samples(cfg, tmp_path)["classifier"]
    train_groups, val_groups = ({s.group for s in data.train}, {s.group for s in data.val})
    assert len(train_groups | val_groups) == 4 and not train_groups & val_groups
    without = collect_samples(recipe(tmp_path, f'path = "{class_folders}"\num_per_px = 0.1'),
                              tmp_path)["classifier"]
    assert len({s.group for s in without.train} | {s.group for s in without.val}) == 24


def test_labels_table_sets_classes_and_patients(class_folders: Path, tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["File", "Class", "Patient"])
        for i, path in enumerate(sorted(class_folders.rglob("*.tif"))):
            writer.writerow([path.name, "1" if path.parent.name == "blast" else "2",
                             f"donor{i % 3}"])
    names = {"1": "blast", "2": "monocyte"}
    labels = read_labels_table(table, names)
    assert len(labels) == 24 and {v.cell_type for v in labels.values()} == {"blast", "monocyte"}
    cfg = recipe(tmp_path, f'path = "{class_folders}"\num_per_px = 0.1\nmasks = false\n'
                 f'labels_csv = "{table}"\nclass_names = {{ 1 = "blast", 2 = "monocyte" }}')
    data = collect_samples(cfg, tmp_path)["classifier"]
    samples = data.train + data.val
    assert {s.cell_type for s in samples if s.label == 0} == {"monocyte"}
    assert len({s.group for s in samples}) == 3
    with pytest.raises(InputError, match=r"labels.csv:2: class '1' is not in class_names"):
        read_labels_table(table, {"2": "monocyte"})
    assert stem_key("P0_Im001_1.tif") == stem_key("p0_im001_1")


def test_type_weights_reach_the_loss(class_folders: Path, tmp_path: Path) -> None:
    cfg = recipe(tmp_path, f'path = "{class_folders}"\num_per_px = 0.1\nmasks = false',
                 "classifier.type_weights={ lymphocyte = 3.0 }")
    samples = collect_samples(cfg, tmp_path)["classifier"].train
    items = CellCropDataset(samples, augment=False,
                            type_weights=cfg.classifier.type_weights)
    weights = {(s.label, float(items[i]["weight"])) for i, s in enumerate(samples)}
    assert weights == {(1, 1.0), (0, 3.0)}
    with pytest.raises(InputError, match="type_weights"):
        recipe(tmp_path, 'path = "x"', "classifier.type_weights={ lymphocyte = -1 }")


def test_learning_curve_and_validation_auc(class_folders: Path, tmp_path: Path) -> None:
    cfg = recipe(tmp_path, f'path = "{class_folders}"\num_per_px = 0.1\nmasks = false\n'
                 'group_pattern = "^(P\\\\d+)_"', "val_fraction=0.25")
    model_dir = train(cfg, learning_curve_shares=[0.5, 1.0])
    info = json.loads((model_dir / "config.json").read_text())["meta"]["training"]["classifier"]
    report = info["validation"]
    assert report["groups"] == 1 and report["cells"] == 6
    assert set(report["blast_vs_type"]) == {"lymphocyte"}
    rows = list(csv.DictReader((tmp_path / "run" / "learning_curve.csv").open()))
    assert [float(r["fraction"]) for r in rows] == [0.5, 1.0]
    assert [int(r["train_groups"]) for r in rows] == [2, 3]
    assert int(rows[0]["train_cells"]) < int(rows[1]["train_cells"]) == 18
    if report["auc"] is not None:
        assert 0 <= report["auc"] <= 1 and report["auc_ci95"] is not None
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 1000


def test_cli_learning_curve_option(class_folders: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--data", str(class_folders), "--learning-curve", "0,2"])
    flat = " ".join(bad.output.replace("│", " ").split())
    assert bad.exit_code == 2 and "every share must be in (0, 1]" in flat
    result = runner.invoke(app, ["train", "--data", str(class_folders), "--out",
                                 str(tmp_path / "cli"), "--stage", "classifier",
                                 "--learning-curve", "0.5", "--set", "data.0.um_per_px=0.1",
                                 "--set", r"data.0.group_pattern=^(P\d+)_",
                                 *sum((["--set", o] for o in TINY[:-1]), [])])
    assert result.exit_code == 0, result.output
    squeezed = "".join(result.output.split())  # rich wraps long lines anywhere
    assert "validationAUC" in squeezed and "learning_curve.csvand.png" in squeezed
    assert "from2images/patients(toofew" in squeezed  # 4 patients, half in validation
    assert np.isfinite(json.loads((tmp_path / "cli" / "model" / "config.json").read_text())
                       ["meta"]["thresholds"]["blast_probability"])


def test_a_group_pattern_that_finds_no_patient_is_reported(class_folders: Path,
                                                           tmp_path: Path) -> None:
    cfg = recipe(tmp_path, f'path = "{class_folders}"\num_per_px = 0.1\nmasks = false\n'
                 'group_pattern = "^(Patient\\\\d+)-"')
    with pytest.warns(UserWarning, match=r"names no patient in 24 file name\(s\)"):
        data = collect_samples(cfg, tmp_path)["classifier"]
    assert len({s.group for s in data.train + data.val}) == 24  # split by image instead
    typed = load_config(None, ["data=[{ path = 'x' }]", r"data.0.group_pattern=^(P\d+)_"])
    assert typed.data[0].group_of("P07_cell") == "P07"  # the guide's --set form works


def test_one_class_only_is_refused_clearly(class_folders: Path, tmp_path: Path) -> None:
    only_normal = tmp_path / "cells"
    shutil.copytree(class_folders / "lymphocyte", only_normal / "lymphocyte")
    (only_normal / "blast").mkdir()
    (only_normal / "blast" / "broken.png").write_text("not an image")
    with pytest.warns(UserWarning, match="broken.png"), \
            pytest.raises(AllsegError, match="training cells are all normal cells"):
        train(recipe(tmp_path, f'path = "{only_normal}"\num_per_px = 0.1\nmasks = false'))


def test_monochrome_crops_are_trained_as_the_predictor_sees_them(
        class_folders: Path, tmp_path: Path) -> None:
    """A grey camera's crops are given a stained smear's colours for training too: the
    predictor recolours such photos, so a model trained on them must see them recoloured."""
    grey = tmp_path / "grey"
    for path in class_folders.rglob("*.tif"):
        target = grey / path.relative_to(class_folders)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(target)
    cfg = recipe(tmp_path, f'path = "{grey}"\num_per_px = 0.1\nmasks = false')
    crops = [s.crop for s in collect_samples(cfg, tmp_path)["classifier"].train]
    assert crops and all(not is_monochrome(crop) for crop in crops)


def test_faint_photos_are_trained_as_the_predictor_sees_them(
        class_folders: Path, tmp_path: Path) -> None:
    """A washed-out camera's photos are level-spread for training too: the predictor
    segments, measures and classifies a faint photo's spread copy, so a model must learn
    that copy (``appearance.as_networks_see_it``), not the photo's own narrow band."""
    faint = tmp_path / "faint"
    for path in class_folders.rglob("*.tif"):
        target = faint / path.relative_to(class_folders)
        target.parent.mkdir(parents=True, exist_ok=True)
        washed = 130 + 0.45 * read_image(path).astype(np.float32)  # levels 130-245
        Image.fromarray(washed.astype(np.uint8)).save(target)
    cfg = recipe(tmp_path, f'path = "{faint}"\num_per_px = 0.1\nmasks = false')
    crops = [s.crop for s in collect_samples(cfg, tmp_path)["classifier"].train]
    spans = [float(np.percentile(c, 99.5) - np.percentile(c, 0.5)) for c in crops]
    assert crops and min(spans) >= 0.8 * TARGET_SPAN, spans  # measured 151-163; unspread <= 115


def test_training_prepares_a_photo_exactly_as_prediction_does(
        class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Faint crops whose slide is clipped white: the scale estimate does not call them
    over-exposed (they have no red cells to lose), so prediction spreads their levels, and
    so must training (measuring the white share alone, it left such crops unspread)."""
    from allseg.inference.predictor import Predictor
    from allseg.training import run

    photos = tmp_path / "white_slide"
    for path in [p for folder in ("blast", "lymphocyte")
                 for p in sorted((class_folders / folder).glob("*.tif"))[:2]]:
        image = read_image(path).astype(np.float32)
        brightest = image.min(axis=2)
        washed = 120 + 0.5 * image
        washed[brightest > np.percentile(brightest, 55)] = 255  # the slide, 45% white
        target = photos / path.relative_to(class_folders)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(washed.astype(np.uint8)).save(target)
    trained: dict[str, np.ndarray] = {}

    def recording(record, *args, **kwargs):
        trained[record.name] = record.image
        return cell_samples(record, *args, **kwargs)

    cell_samples = run.cell_samples
    monkeypatch.setattr(run, "cell_samples", recording)
    collect_samples(recipe(tmp_path, f'path = "{photos}"\num_per_px = 0.1\nmasks = false'),
                    tmp_path)
    assert len(trained) == 4
    for path in photos.rglob("*.tif"):
        name = next(n for n in trained if path.stem in n)
        assert np.array_equal(trained[name], Predictor._prepare(read_image(path))[0])


def test_monochrome_photos_are_measured_as_the_predictor_measures_them(
        class_folders: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a known scale, a grey photo's red cells are measured on the recolouring the
    predictor's red-cell ruler sees, not on the one its networks see."""
    grey = tmp_path / "grey"
    for path in [p for folder in ("blast", "lymphocyte")
                 for p in sorted((class_folders / folder).glob("*.tif"))[:2]]:
        target = grey / path.relative_to(class_folders)
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(path).convert("L").save(target)
    expected = {for_red_cells(read_image(p)).tobytes() for p in grey.rglob("*.tif")}
    measured: list[np.ndarray] = []

    def recording(image: np.ndarray) -> ScaleEstimate:
        measured.append(image)
        return estimate_scale(image)

    monkeypatch.setattr("allseg.inference.scale.estimate_scale", recording)
    collect_samples(recipe(tmp_path, f'path = "{grey}"\nmasks = false'), tmp_path)
    assert len(measured) == 4 and all(image.tobytes() in expected for image in measured)
