"""Batch prediction across processes (torchrun, gloo) and after a kill, with the real model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from allseg.synth import generate_field

TORCHRUN = Path(sys.executable).with_name("torchrun")
N_IMAGES = 5


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("dist") / "images"
    folder.mkdir()
    for i in range(N_IMAGES):
        field = generate_field(np.random.default_rng(500 + i), 480, 640, 0.1, n_leukocytes=3)
        Image.fromarray(field.image).save(folder / f"img{i}.png")
    return folder


def _predict(args: list[str], out: Path, launcher: list[str] | None = None
             ) -> subprocess.CompletedProcess:
    cmd = [*(launcher or [sys.executable]), "-m", "allseg", "predict", *args, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _comparable(out: Path) -> dict:
    """Every output except timings (which differ run to run); hidden files are left to
    the callers (a killed writer's temporaries are hidden)."""
    found = {}
    for path in sorted(out.glob("[!.]*.json")):
        data = json.loads(path.read_text())
        if path.name == "summary.json":
            for image in data["images"]:
                image.pop("seconds")
            data["totals"].pop("seconds")
            data.pop("model")
        else:
            data.pop("timings")
            data.pop("model")
        found[path.name] = data
    for path in sorted(out.glob("[!.]*.png")):
        found[path.name] = np.asarray(Image.open(path)).tobytes()
    found["cells.csv"] = (out / "cells.csv").read_text()
    return found


@pytest.fixture(scope="module")
def single(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    done = _predict([str(images)], out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed beside python")
def test_two_ranks_shard_merge_and_match_one_process(images: Path, single: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _predict([str(images)], out, [str(TORCHRUN), "--standalone", "--nproc-per-node",
                                         "2"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0" in done.stderr + done.stdout and "rank 1" in done.stderr + done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(Path(i["image"]).name for i in summary["images"]) == [
        f"img{i}.png" for i in range(N_IMAGES)]
    assert not list(out.glob(".failures.*"))
    assert _comparable(out) == _comparable(single)


def test_killed_run_leaves_no_partial_files_and_skip_existing_finishes_it(
        images: Path, single: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "allseg", "predict", str(images), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    # Kill as soon as the first image is being written, to catch it mid-write if we can.
    while (not list(out.glob(".*.tmp*")) and not list(out.glob("*.json"))
           and time.time() < deadline and proc.poll() is None):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(out.glob("img*.json")))
    assert finished < N_IMAGES, "the run ended before it could be killed"
    for path in out.glob("img*.json"):  # whatever exists under a final name is whole
        json.loads(path.read_text())
    for path in out.glob("img*.png"):
        Image.open(path).load()
    done = _predict([str(images), "--skip-existing"], out)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".*.tmp*")), "a killed writer's temporaries were left behind"
    assert _comparable(out) == _comparable(single)
    shutil.rmtree(out)


def test_two_process_ddp_training_then_resume(tmp_path: Path) -> None:
    """Lightning DDP on CPU (gloo): rank 0 writes the model; --resume continues it."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(
        'patch_size = 64\ncrop_size = 32\nval_fraction = 0.4\n'
        'accelerator = "cpu"\ndevices = 2\nstrategy = "ddp"\n'
        '[segmenter]\nkwargs = { base_channels = 4, depth = 3 }\nepochs = 1\n'
        'steps_per_epoch = 2\nbatch_size = 2\n'
        '[classifier]\nkwargs = { width = 4 }\nepochs = 1\nsteps_per_epoch = 2\nbatch_size = 4\n'
        '[[data]]\nsynth = { layout = "masks", n = 4, seed = 5 }\n', encoding="utf-8")
    run = tmp_path / "run"
    base = [sys.executable, "-m", "allseg", "train", "-c", str(recipe), "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(base, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    from allseg.models import load_model_folder

    _, meta = load_model_folder(run / "model")
    assert meta["training"]["segmenter"]["world_size"] == 2
    assert not list((run / "checkpoints").rglob(".*.tmp"))
    # The same seed and world size give the same weights.
    run2 = tmp_path / "run2"
    done = subprocess.run([*base[:-1], str(run2)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("segmenter.safetensors", "classifier.safetensors"):
        assert (run / "model" / name).read_bytes() == (run2 / "model" / name).read_bytes()
    shutil.rmtree(run / "model")  # as if the run died before writing its model folder
    done = subprocess.run([*base, "--resume", "--stage", "segmenter", "--epochs", "2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    _, meta = load_model_folder(run / "model")
    assert meta["training"]["segmenter"]["epochs_run"] == 2
