"""The blast head: the CNN weighed with the cell's morphometry (allseg.models.blast_head),
how it is stored in a model folder, applied by the predictor and fitted in training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from allseg.errors import ModelError
from allseg.evaluation.metrics import roc_auc
from allseg.inference.models import resolve_model_dir
from allseg.inference.predictor import Predictor
from allseg.models.blast_head import CNN_LOGIT, FEATURES, BlastHead
from allseg.synth import generate_field
from allseg.training.config import load_config
from allseg.training.run import train


def cells(rng: np.random.Generator, n: int, blast: bool) -> list[dict]:
    """Blast-like cells: larger, higher N:C, smoother chromatin; a few features missing."""
    out = []
    for _ in range(n):
        diameter = rng.normal(14 if blast else 9, 1.5)
        out.append({"area_um2": np.pi * diameter**2 / 4, "diameter_um": diameter,
                    "nc_ratio": rng.normal(0.88 if blast else 0.7, 0.05),
                    "circularity": rng.normal(0.85, 0.05),
                    "chromatin_texture": rng.normal(0.1 if blast else 0.2, 0.03),
                    "nucleolus_count": int(rng.integers(0, 3 if blast else 1))})
    out[0]["area_um2"] = None  # the predictor gives None when a value cannot be measured
    return out


def test_fit_separates_morphometry_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    train = cells(rng, 60, True) + cells(rng, 60, False)
    labels = [1] * 60 + [0] * 60
    head = BlastHead.fit(train, labels)
    assert head.inputs == FEATURES and not head.uses_cnn
    test = cells(rng, 40, True) + cells(rng, 40, False)
    probs = head.probabilities(test)
    assert roc_auc(probs, [1] * 40 + [0] * 40) > 0.95
    again = BlastHead.from_json(json.loads(json.dumps(head.to_json())))
    assert np.allclose(again.probabilities(test), probs)
    with pytest.raises(ValueError, match="blasts and normal cells"):
        BlastHead.fit(train[:10], [0] * 10)


def test_cnn_logit_is_weighed_in() -> None:
    rng = np.random.default_rng(1)
    same = cells(rng, 80, False)  # morphometry says nothing; only the CNN tells them apart
    labels = np.array([1, 0] * 40)
    cnn = np.where(labels == 1, 0.9, 0.1) + rng.normal(0, 0.02, 80)
    head = BlastHead.fit(same, labels, cnn)
    assert head.inputs[-1] == CNN_LOGIT and head.weights()[CNN_LOGIT] > 1
    assert roc_auc(head.probabilities(same, cnn), labels) > 0.95


@pytest.mark.parametrize("edit, problem", [
    (lambda h: h.pop("coef"), "malformed"),
    (lambda h: h.update(inputs=["area_um2"]), "inputs"),
    (lambda h: h.update(std=h["std"][:-1]), "wrong length"),
    (lambda h: h.update(bias=float("nan")), "non-finite"),
])
def test_a_malformed_head_is_refused(edit, problem: str) -> None:
    rng = np.random.default_rng(2)
    data = BlastHead.fit(cells(rng, 30, True) + cells(rng, 30, False), [1] * 30 + [0] * 30
                         ).to_json()
    edit(data)
    with pytest.raises(ModelError, match=problem):
        BlastHead.from_json(data)


def with_head(tmp_path: Path, head: dict) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(resolve_model_dir("default"), folder)
    config = json.loads((folder / "config.json").read_text())
    config["meta"]["blast_head"] = head
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_predictor_applies_the_head_from_the_folder(tmp_path: Path) -> None:
    field = generate_field(np.random.default_rng(7), 600, 800, um_per_px=0.1,
                           blast_fraction=0.0, n_leukocytes=3)
    n = len(FEATURES) + 1
    everything_blast = {"inputs": [*FEATURES, CNN_LOGIT], "median": [0.0] * n,
                        "mean": [0.0] * n, "std": [1.0] * n, "coef": [0.0] * n, "bias": 8.0}
    result = Predictor(with_head(tmp_path, everything_blast), backend="torch").predict_image(
        field.image, um_per_px=0.1)
    assert result.cells and all(c.blast_probability > 0.99 and c.is_blast for c in result.cells)
    broken = with_head(tmp_path / "b", {**everything_blast, "coef": [0.0]})
    with pytest.raises(ModelError, match="blast_head"):
        Predictor(broken, backend="torch")


def test_training_fits_a_head_on_validation_cells(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'out = "{tmp_path / "run"}"\nstage = "classifier"\n'
                      'val_fraction = 0.5\ncrop_size = 96\n'
                      '[classifier]\nepochs = 1\nsteps_per_epoch = 3\nbatch_size = 16\n'
                      '[[data]]\nsynth = { layout = "allidb2", n = 100, seed = 31 }\n',
                      encoding="utf-8")
    model_dir = train(load_config(recipe), base_model="default")
    meta = json.loads((model_dir / "config.json").read_text())["meta"]
    summary = meta["training"]["classifier"]["blast_head"]
    assert summary["cells_measured"] >= 40 and "skipped" not in summary, summary
    assert 0 <= summary["cross_fitted_auc"] <= 1 and summary["cross_fitted_auc_ci95"]
    assert BlastHead.from_json(meta["blast_head"]).uses_cnn
    assert Predictor(model_dir, backend="torch").blast_head is not None


def test_crop_background_is_balanced_in_training_and_prediction(tmp_path: Path) -> None:
    """A model trained on balanced crops says so in its folder, and the predictor then
    balances its crops too: a tinted photo gives the CNN the same input as a neutral one."""
    from allseg.data.record import Record
    from allseg.postprocess.crops import balance_background
    from allseg.training.samples import cell_samples

    field = generate_field(np.random.default_rng(8), 400, 400, um_per_px=0.1,
                           blast_fraction=0.0, n_leukocytes=1)
    record = Record(source=Path("f.png"), image=field.image, instances=field.instances,
                    cell_labels=dict.fromkeys(np.unique(field.instances)[1:].tolist(),
                                              "leukocyte"))
    plain = cell_samples(record, 0.1, 48, 24.0)
    balanced = cell_samples(record, 0.1, 48, 24.0, balance=True)
    assert np.array_equal(balanced[0].crop, balance_background(plain[0].crop[None])[0])
    bright = np.percentile(balanced[0].crop.reshape(-1, 3), 90, axis=0)
    assert np.allclose(bright, 235, atol=3)
    tinted = np.clip(field.image * np.array([1.0, 0.9, 0.7]), 0, 255).astype(np.uint8)
    folder = with_head(tmp_path, None)
    config = json.loads((folder / "config.json").read_text())
    config["meta"].pop("blast_head")
    logit_gap = {}
    for balance in (True, False):
        config["meta"]["crop_background"] = balance
        (folder / "config.json").write_text(json.dumps(config))
        predictor = Predictor(folder, backend="torch")
        p = [float(predictor._classify(image, [{"centroid": [200.0, 200.0]}], 0.1)[0])
             for image in (field.image, tinted)]
        logit_gap[balance] = abs(np.log(p[0] / (1 - p[0])) - np.log(p[1] / (1 - p[1])))
    assert logit_gap[True] < 0.5 * logit_gap[False]
