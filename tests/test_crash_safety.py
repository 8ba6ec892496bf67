"""Crash safety: a killed training run resumes, a failed checkpoint write keeps the old
checkpoint, and a full disk during prediction leaves only whole files behind.

(The kill test for ``allseg predict`` lives in test_distributed.py.)
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from allseg.io import atomic

TINY_RECIPE = """\
stage = "segmenter"
patch_size = 64
val_fraction = 0.4
accelerator = "cpu"
devices = 1
[segmenter]
kwargs = { base_channels = 4, depth = 3 }
epochs = 8
steps_per_epoch = 3
batch_size = 2
patience = 100  # all 8 epochs run: early stopping would depend on when the kill lands
[[data]]
synth = { layout = "masks", n = 3, seed = 5 }
"""


def _no_partial_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


# ---------------------------------------------------------------- (a) kill training


def test_killed_training_resumes_and_writes_a_loadable_model(tmp_path: Path) -> None:
    from allseg.models import load_model_folder

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE, encoding="utf-8")
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "allseg", "train", "-c", str(recipe), "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    last = run / "checkpoints" / "segmenter" / "last.ckpt"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 180
        while not last.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before a checkpoint appeared: " + \
            proc.stderr.read().decode(errors="replace")[-2000:]
        time.sleep(0.3)  # into the next epoch
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (run / "model" / "config.json").exists(), "run finished before the kill"
    killed_epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert killed_epoch < 7
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    models, meta = load_model_folder(run / "model")
    assert "segmenter" in models and meta["training"]["segmenter"]["epochs_run"] == 8
    assert not _no_partial_files(run / "model") and not _no_partial_files(last.parent)


# ---------------------------------------------------------------- (b) crash mid-checkpoint


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.fabric.plugins.io import torch_io

    from allseg.training.run import AtomicCheckpointIO

    io_plugin = AtomicCheckpointIO()
    last = tmp_path / "ckpt" / "last.ckpt"
    io_plugin.save_checkpoint({"epoch": 1, "state": torch.arange(1000)}, last)
    before = last.read_bytes()

    def half_then_full_disk(checkpoint: dict, path: str) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with open(path, "wb") as f:
            f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(torch_io, "_atomic_save", half_then_full_disk)
    with pytest.raises(OSError, match="No space left"):
        io_plugin.save_checkpoint({"epoch": 2, "state": torch.arange(2000)}, last)
    assert last.read_bytes() == before
    assert torch.load(last, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


def test_interrupted_model_folder_write_keeps_previous_weights(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from allseg.models import build_model, load_model_folder, save_model_folder
    from allseg.models import folder as folder_module

    folder = tmp_path / "m"
    save_model_folder(folder, {"segmenter": build_model("unet_small", base_channels=4, depth=3)},
                      {"v": 1})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def dying_save_file(tensors: dict, filename: str, metadata: dict | None = None) -> None:
        Path(filename).write_bytes(b"\x00" * 100)
        raise KeyboardInterrupt  # as if killed mid-write

    monkeypatch.setattr(folder_module, "save_file", dying_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_model_folder(folder, {"segmenter": build_model("unet_small", base_channels=4,
                                                            depth=3)}, {"v": 2})
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert load_model_folder(folder)[1] == {"v": 1}


# ---------------------------------------------------------------- (c) full disk for predict


@pytest.fixture(scope="module")
def tiny_predictor(tmp_path_factory: pytest.TempPathFactory):
    from allseg.inference.predictor import Predictor
    from allseg.models import build_model, save_model_folder

    meta = {"canonical_um_per_px": 0.3, "crop_size": 32, "crop_um": 24.0,
            "thresholds": {"blast_probability": 0.5, "centre": 0.5, "min_cell_area_um2": 15.0},
            "classes": {"segmenter": ["background", "cytoplasm", "nucleus"],
                        "classifier": ["other", "blast"]}}
    models = {"segmenter": build_model("unet_small", base_channels=4, depth=3),
              "classifier": build_model("cnn_classifier", width=4)}
    folder = save_model_folder(tmp_path_factory.mktemp("crash") / "m", models, meta)
    return Predictor(folder, backend="torch")


def _inputs(folder: Path, n: int = 3, size: int = 96) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate("abcdefgh"[:n]):
        noise = np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(noise).save(folder / f"{name}.png")
    return folder


def _assert_final_files_whole(out: Path) -> None:
    assert not _no_partial_files(out), _no_partial_files(out)
    for path in out.iterdir():
        if path.suffix in (".json", ".geojson"):
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".png":
            Image.open(path).load()


def test_full_disk_fails_one_image_clearly_and_leaves_no_corrupt_files(
        tmp_path: Path, tiny_predictor, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """ENOSPC half-way through every write of image ``b`` (patched write_atomic)."""
    from allseg.inference.batch import predict_files

    real = atomic.write_atomic

    def full_disk_for_b(path: str | Path, write):
        if not Path(path).name.startswith("b"):
            return real(path, write)

        def half(tmp: Path) -> None:
            write(tmp)
            data = tmp.read_bytes()
            tmp.write_bytes(data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

        return real(path, half)

    monkeypatch.setattr(atomic, "write_atomic", full_disk_for_b)
    out = tmp_path / "out"
    predict_files(tiny_predictor, [_inputs(tmp_path / "in")], out, progress=False)
    err = capsys.readouterr().err
    assert "b.png" in err and "No space left on device" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(i["image"]).name for i in summary["images"]] == ["a.png", "c.png"]
    [failure] = summary["failures"]
    assert failure["image"].endswith("b.png") and "No space left" in failure["error"]
    assert not list(out.glob("b*")), "no output of the failed image under a final name"
    _assert_final_files_whole(out)


@contextlib.contextmanager
def _small_tmpfs(mountpoint: Path, size: str):
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(mountpoint)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the patched "
                    "ENOSPC test covers this")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0,
                    reason="mounting a tmpfs needs root on Linux")
def test_real_full_tmpfs_for_predict_outputs(tmp_path: Path, tiny_predictor,
                                             capsys: pytest.CaptureFixture) -> None:
    """A 200 KiB tmpfs: noise images' overlays fill it after an image or two."""
    from allseg.inference.batch import predict_files

    inputs = _inputs(tmp_path / "in", n=5, size=128)
    with _small_tmpfs(tmp_path / "disk", "200k") as out:
        try:
            predict_files(tiny_predictor, [inputs], out, progress=False)
            summary = json.loads((out / "summary.json").read_text())
            assert summary["failures"], "the disk never filled up"
            assert all("No space left" in f["error"] for f in summary["failures"])
        except OSError as exc:  # summary.json itself did not fit: still a clear error
            assert exc.errno == errno.ENOSPC
        err = capsys.readouterr().err
        assert "No space left on device" in err
        _assert_final_files_whole(out)
        for path in out.glob("*.json"):
            if path.name != "summary.json":  # a finished image has every output
                stem = path.stem
                assert (out / f"{stem}_overlay.png").exists() and (out / f"{stem}.geojson").exists()


def test_stale_temporaries_of_one_path_are_removed_and_no_others(tmp_path: Path) -> None:
    target = tmp_path / "img[1].json"
    mine = tmp_path / ".img[1].json.abc123.tmp.json"
    other_stem = tmp_path / ".img[1]0.json.abc123.tmp.json"  # another image's writer
    for path in (target, mine, other_stem):
        path.write_text("{}")
    assert atomic.remove_stale_temporaries(target) == 1
    assert not mine.exists() and target.exists() and other_stem.exists()


@pytest.mark.parametrize(("shape", "dtype"), [
    ((37, 53, 3), np.uint8), ((1, 1, 3), np.uint8), ((2, 4001, 3), np.uint8),
    ((1001, 3, 3), np.uint8), ((37, 53), np.uint8), ((37, 53), np.uint16),
    ((1001, 7), np.uint16)])
def test_png_encodings_are_lossless(tmp_path: Path, shape: tuple, dtype: type) -> None:
    """RGB images and 8/16-bit label masks (parallel encoder, any number of row bands)
    must round-trip through PIL."""
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    array[5:20, 5:30] = 7  # a run, as in label masks
    path = atomic.write_image_atomic(tmp_path / "x.png", array)
    assert np.array_equal(np.asarray(Image.open(path)), array)
