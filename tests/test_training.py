"""Training: the recipe, a few-step run of both stages, resume, and the model folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from allseg.errors import InputError
from allseg.models import load_model_folder
from allseg.training.augment import stain_red_cells_like_nuclei
from allseg.training.centre_threshold import CANDIDATES
from allseg.training.config import load_config
from allseg.training.run import train
from allseg.training.samples import centre_map, split_names

TINY = [
    "segmenter.kwargs={ base_channels = 4, depth = 3 }", "segmenter.epochs=1",
    "segmenter.steps_per_epoch=2", "segmenter.batch_size=2", "patch_size=64",
    "classifier.kwargs={ width = 4 }", "classifier.epochs=1", "classifier.steps_per_epoch=2",
    "classifier.batch_size=4", "crop_size=32", "val_fraction=0.3",
]


def tiny_config(tmp_path: Path, *extra: str):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f'out = "{tmp_path / "run"}"\n'
        '[[data]]\nsynth = { layout = "masks", n = 3, seed = 5 }\n'
        '[[data]]\nsynth = { layout = "allidb2", n = 8, seed = 6 }\n', encoding="utf-8")
    return load_config(recipe, [*TINY, *extra])


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "segmenter.lr=0.01")
    assert cfg.segmenter.lr == 0.01 and cfg.patch_size == 64 and len(cfg.data) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("out = [unclosed", encoding="utf-8")
    with pytest.raises(InputError, match="bad.toml.*not valid TOML"):
        load_config(bad)
    with pytest.raises(InputError, match="invalid training config"):
        load_config(None, ["no_such_key=1"])
    with pytest.raises(InputError, match="exactly one of 'path' or 'synth'"):
        load_config(None, ['data=[{ format = "voc" }]'])
    cfg = tiny_config(tmp_path, "data.1.hold_out=[4, 3]")
    assert cfg.data[1].hold_out == (4, 3) and cfg.data[0].hold_out is None
    for wrong in ("data.2.hold_out=[4, 3]", "data.x.hold_out=1", "data.0=1"):
        with pytest.raises(InputError, match="not an index|name a key"):
            tiny_config(tmp_path, wrong)


def test_split_is_by_image_and_folds_partition() -> None:
    names = [f"im{i}" for i in range(10)]
    vals = [split_names(names, 0.0, seed=1, folds=5, fold=k)[1] for k in range(5)]
    assert set().union(*vals) == set(names)
    assert sum(len(v) for v in vals) == len(names)


def test_centre_map_peaks_once_per_cell() -> None:
    inst = np.zeros((20, 40), np.int32)
    inst[2:18, 2:18] = 1
    inst[5:15, 25:35] = 2
    m = centre_map(inst)
    assert m[inst == 1].max() == pytest.approx(1.0) and m[inst == 2].max() == pytest.approx(1.0)
    assert (m[inst == 0] == 0).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("train")
    tuning = 'segmenter.centre_tuning={ layout = "masks", n = 1, seed = 9 }'
    return train(tiny_config(tmp, tuning)), tmp


def test_train_writes_a_loadable_model_folder(trained: tuple[Path, Path]) -> None:
    model_dir, tmp = trained
    models, meta = load_model_folder(model_dir)
    assert set(models) == {"segmenter", "classifier"}
    assert meta["canonical_um_per_px"] == pytest.approx(0.3)
    for stage in ("segmenter", "classifier"):
        info = meta["training"][stage]
        assert info["n_train"] > 0 and info["n_val"] > 0
        assert "val_score" in info["best"]
    assert (tmp / "run" / "checkpoints" / "segmenter" / "last.ckpt").is_file()
    assert list((tmp / "run" / "logs").rglob("metrics.csv"))
    assert not list(model_dir.glob("*.ckpt")) and not list(model_dir.glob("*.pt"))
    json.loads((model_dir / "config.json").read_text())
    tuned = meta["training"]["segmenter"]["centre_threshold"]
    assert set(tuned["instance_f1_iou50"]) == {"onnx", "onnx-int8"}
    for scores in tuned["instance_f1_iou50"].values():
        assert set(scores) == {str(t) for t in CANDIDATES}
    assert tuned["fields"] == 1 and meta["thresholds"]["centre"] == tuned["threshold"]


def test_resume_skips_finished_stages(trained: tuple[Path, Path]) -> None:
    model_dir, tmp = trained
    before = (model_dir / "segmenter.safetensors").read_bytes()
    assert train(tiny_config(tmp), resume=True) == model_dir
    assert (model_dir / "segmenter.safetensors").read_bytes() == before


def test_resume_tunes_the_centre_threshold_once_and_keeps_the_rest(
        trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A run stopped while tuning the centre threshold tunes it on --resume, and keeps
    what the finished stages had set."""
    model_dir, _ = trained
    stopped = tmp_path / "run" / "model"
    shutil.copytree(model_dir, stopped)
    config = json.loads((stopped / "config.json").read_text())
    del config["meta"]["training"]["segmenter"]["centre_threshold"]
    config["meta"]["thresholds"]["blast_probability"] = 0.77  # as the classifier chose it
    (stopped / "config.json").write_text(json.dumps(config))
    tuning = 'segmenter.centre_tuning={ layout = "masks", n = 1, seed = 9 }'
    assert train(tiny_config(tmp_path, tuning), resume=True) == stopped
    meta = load_model_folder(stopped)[1]
    assert meta["training"]["segmenter"]["centre_threshold"]["fields"] == 1
    assert meta["thresholds"]["blast_probability"] == 0.77


def test_one_stage_on_a_base_model_keeps_the_other(trained: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    base_dir, _ = trained
    out = f'out="{tmp_path / "run"}"'
    model_dir = train(tiny_config(tmp_path, 'stage="classifier"', out), base_model=base_dir)
    assert (model_dir / "segmenter.safetensors").read_bytes() == (
        base_dir / "segmenter.safetensors").read_bytes()
    meta = load_model_folder(model_dir)[1]
    assert set(meta["training"]) == {"segmenter", "classifier"}
    assert meta["thresholds"]["centre"] == load_model_folder(base_dir)[1]["thresholds"]["centre"]
    # The bundled model (by name) crops 96 px cells; a recipe with 32 px crops cannot use it.
    with pytest.raises(InputError, match="crop_size"):
        train(tiny_config(tmp_path, 'stage="classifier"', out), base_model="default")


def test_resume_on_a_base_model_trains_what_this_run_has_not(trained: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    """The base model's record of a stage is not this run having trained it: --resume
    on a fresh run folder trains (it once did nothing and said the model was written)."""
    base_dir, _ = trained
    model_dir = train(tiny_config(tmp_path, 'stage="segmenter"', "seed=1"), resume=True,
                      base_model=base_dir)
    assert (model_dir / "segmenter.safetensors").read_bytes() != (
        base_dir / "segmenter.safetensors").read_bytes()
    assert (model_dir / "classifier.safetensors").read_bytes() == (
        base_dir / "classifier.safetensors").read_bytes()


def test_resume_continues_from_last_checkpoint(tmp_path: Path) -> None:
    """A run that died after epoch 1 (model folder never written) resumes at epoch 2."""
    import csv
    import shutil

    train(tiny_config(tmp_path, 'stage="segmenter"'))
    shutil.rmtree(tmp_path / "run" / "model")
    model_dir = train(tiny_config(tmp_path, 'stage="segmenter"', "segmenter.epochs=2"),
                      resume=True)
    _, meta = load_model_folder(model_dir)
    assert meta["training"]["segmenter"]["epochs_run"] == 2
    logs = sorted((tmp_path / "run" / "logs" / "segmenter").glob("version_*/metrics.csv"))
    with logs[-1].open() as f:
        epochs = {row["epoch"] for row in csv.DictReader(f) if row["epoch"]}
    assert epochs == {"1"}, "the resumed run must not repeat epoch 0"


def test_training_without_labels_fails_clearly(tmp_path: Path) -> None:
    from allseg.errors import AllsegError

    cfg = load_config(None, [*TINY, f'out="{tmp_path / "r"}"', 'stage="classifier"',
                             'data=[{ synth = { layout = "masks", n = 2 }, cell_labels = false }]'])
    with pytest.raises(AllsegError, match="no training samples for the classifier"):
        train(cfg)


def test_fine_tuning_starts_from_a_model_folders_network(trained: tuple[Path, Path],
                                                         tmp_path: Path) -> None:
    """init_from: at a vanishing learning rate the fine-tuned segmenter keeps the folder's
    weights (a fresh one does not), and its architecture whatever the recipe's arch says."""
    base_dir, _ = trained
    base = dict(load_model_folder(base_dir)[0]["segmenter"].named_parameters())

    def largest_change(*extra: str) -> float:
        run = tmp_path / f"run{len(extra)}"
        cfg = tiny_config(tmp_path, 'stage="segmenter"', f'out="{run}"', "segmenter.lr=1e-12",
                          *extra)
        tuned = load_model_folder(train(cfg))[0]["segmenter"].named_parameters()
        return max(float((p - base[name]).abs().max()) for name, p in tuned)

    assert largest_change(f'segmenter.init_from="{base_dir}"',
                          "segmenter.kwargs={ base_channels = 8, depth = 2 }") < 1e-6
    assert largest_change() > 1e-3


def test_augmentations_draw_independently() -> None:
    """Each transform draws on its own (albumentations 2.0.8 seeds every transform of a
    Compose alike, which flipped both ways or neither): single mirror flips happen, no two
    transforms of the recipe's pipelines share a stream, and reseeding from one generator
    replays one sequence exactly."""
    from collections import Counter

    import albumentations as A

    from allseg.training.augment import (
        _seeded,
        classification_augment,
        reseed,
        segmentation_augment,
    )

    image = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    flips = _seeded([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=0)
    views = {"none": image, "left-right": image[:, ::-1], "up-down": image[::-1],
             "both": image[::-1, ::-1]}
    seen = Counter()
    for _ in range(200):
        out = flips(image=image)["image"]
        seen[next(name for name, view in views.items() if np.array_equal(out, view))] += 1
    assert min(seen[name] for name in views) >= 30

    def streams(transform: A.BasicTransform | A.BaseCompose) -> list[str]:
        own = [str(transform.random_generator.bit_generator.state["state"])]
        children = transform.transforms if isinstance(transform, A.BaseCompose) else []
        return own + [s for child in children for s in streams(child)]

    for pipeline in (segmentation_augment(32, seed=0), classification_augment(seed=0)):
        assert len(set(streams(pipeline))) == len(streams(pipeline)) > 10
    full = segmentation_augment(32, seed=0)
    runs = []
    for _ in range(2):
        reseed(full, np.random.default_rng(11))
        runs.append([full(image=image)["image"] for _ in range(3)])
    assert all(np.array_equal(a, b) for a, b in zip(*runs, strict=True))
    assert not np.array_equal(runs[0][0], runs[0][1])


def test_red_cells_take_the_nuclei_hue_and_leukocytes_keep_theirs() -> None:
    image = np.full((64, 64, 3), (235, 225, 225), np.uint8)  # the slide
    image[4:24, 4:24] = (205, 125, 125)  # a red cell: darker than the slide, reddish
    image[36:60, 36:60] = (90, 60, 150)  # a leukocyte nucleus
    classes = np.zeros((64, 64), np.uint8)
    classes[36:60, 36:60] = 2
    out = stain_red_cells_like_nuclei(image, classes, np.random.default_rng(0))
    assert np.array_equal(out[36:60, 36:60], image[36:60, 36:60])
    assert np.array_equal(out[40:64, 0:30], image[40:64, 0:30])  # the slide is not tinted
    lab = [cv2.cvtColor(x[None, None], cv2.COLOR_RGB2LAB)[0, 0, 1:].astype(float)
           for x in (image[14, 14], out[14, 14], image[48, 48])]
    before, after = (np.linalg.norm(x - lab[2]) for x in lab[:2])
    assert after < 0.6 * before  # at least 40% of the way to the nucleus's hue


def test_dark_background_windows_show_red_cell_clumps() -> None:
    """With ``dark_background`` every patch is centred on the darkest background: the
    clump of overlapping red cells (where false leukocytes came from) is in view; without
    it most patches are centred on the leukocyte, far from the clump."""
    from allseg.training.datasets import SegPatchDataset
    from allseg.training.samples import SegSample

    image = np.full((400, 400, 3), (235, 225, 225), np.uint8)  # the slide
    image[250:310, 250:310] = (120, 40, 60)  # overlapping red cells: dark, background
    image[20:50, 20:50] = (90, 60, 150)  # a leukocyte nucleus, far from them
    classes = np.zeros((400, 400), np.uint8)
    classes[20:50, 20:50] = 2
    sample = SegSample("field", image, classes, np.zeros((400, 400), np.float32))

    def clump_in_view(dark_background: float) -> int:
        dataset = SegPatchDataset([sample], patch_size=96, length=30, seed=0,
                                  dark_background=dark_background)
        torch.manual_seed(0)
        items = [dataset[i] for i in range(len(dataset))]
        # Something dark and no nucleus: the clump (no window reaches both).
        greys = [item["image"].mean(dim=0) for item in items]
        return sum(bool(g.min() < 0.6 * g.max() and not (item["classes"] == 2).any())
                   for g, item in zip(greys, items, strict=True))

    assert clump_in_view(1.0) == 30
    assert clump_in_view(0.0) <= 12, clump_in_view(0.0)
