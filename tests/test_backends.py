"""Inference backends: onnxruntime agrees with torch, the ONNX cache and ``allseg export``."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import allseg.inference.backends as backends
from allseg.errors import ModelError
from allseg.export import ONNX_TOLERANCE, export_model
from allseg.inference.backends import BACKENDS, OnnxRunner, make_runner
from allseg.inference.models import TorchRunner
from allseg.models import build_model, export_onnx, load_model_folder, save_model_folder

META = {"canonical_um_per_px": 0.3, "crop_size": 32, "crop_um": 24.0,
        "thresholds": {"blast_probability": 0.5, "centre": 0.5, "min_cell_area_um2": 15.0},
        "classes": {}}
CROP = (32, 32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = {"segmenter": build_model("unet_small", base_channels=4, depth=3),
              "classifier": build_model("cnn_classifier", width=4)}
    return save_model_folder(tmp_path_factory.mktemp("backends") / "m", models, META)


@pytest.fixture(scope="module")
def models(folder: Path) -> dict:
    return load_model_folder(folder)[0]


def image_batch(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (b, 3, h, w)).astype(np.float32)


def test_onnx_runner_matches_torch_on_odd_sizes(models: dict, tmp_path: Path):
    seg, cls = models["segmenter"], models["classifier"]
    seg_onnx = OnnxRunner(export_onnx(seg, tmp_path / "s.onnx"), "segment", threads=1)
    cls_onnx = OnnxRunner(export_onnx(cls, tmp_path / "c.onnx", CROP), "classify")
    seg_torch, cls_torch = TorchRunner(seg, "segment"), TorchRunner(cls, "classify")
    for b, h, w in ((1, 37, 53), (2, 97, 131)):
        x = image_batch(b, h, w)
        got, expected = seg_onnx(x), seg_torch(x)
        assert got.shape == expected.shape == (b, 4, h, w) and got.dtype == np.float32
        assert np.abs(got - expected).max() < 1e-4
        np.testing.assert_allclose(got[:, :3].sum(1), 1.0, atol=1e-5)
    x = image_batch(5, *CROP)
    got, expected = cls_onnx(x), cls_torch(x)
    assert got.shape == (5, 1) and np.abs(got - expected).max() < 1e-4


def test_numpy_activations_match_torch_on_extreme_logits():
    logits = np.random.default_rng(1).normal(0, 8, (2, 4, 5, 7)).astype(np.float32)
    logits[0, :, 0, :4] = [[-1e4], [1e4], [-100.0], [100.0]]  # saturated pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        seg = backends.apply_activation(logits, "segment")
        cls = backends.apply_activation(logits[:, :1], "classify")
    t = torch.from_numpy(logits)
    expected = torch.cat([t[:, :3].softmax(1), t[:, 3:].sigmoid()], 1).numpy()
    assert seg.dtype == cls.dtype == np.float32
    np.testing.assert_allclose(seg, expected, atol=1e-6)
    np.testing.assert_allclose(cls, t[:, :1].sigmoid().numpy(), atol=1e-6)


def test_backend_selection(models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    seg = models["segmenter"]
    assert make_runner(seg, "segment", "torch", tmp_path).backend == "torch"
    assert make_runner(seg, "segment", "onnx", tmp_path).backend == "onnx"
    # This test machine has no CUDA, so "auto" means onnxruntime: float32 on a CPU without
    # int8 dot products, else int8; an int8 graph that fails its acceptance check makes
    # auto fall back to float32 with a warning, and onnx-int8 asked by name an error.
    monkeypatch.setattr(backends, "cpu_has_int8_dot", lambda: False)
    assert backends.resolve_backend("auto") == "onnx"
    assert make_runner(seg, "segment", "auto", tmp_path).backend == "onnx"
    monkeypatch.setattr(backends, "cpu_has_int8_dot", lambda: True)
    assert backends.resolve_backend("auto") == "onnx-int8"
    monkeypatch.setattr("allseg.models.quantize.check_int8", _refuse)
    with pytest.warns(UserWarning, match="using the float32 segmenter.*refused here"):
        assert make_runner(seg, "segment", "auto", tmp_path).backend == "onnx"
    with pytest.raises(ModelError, match="refused here"), pytest.warns(UserWarning):
        make_runner(seg, "segment", "onnx-int8", tmp_path)  # warns: re-quantising the cache
    with pytest.raises(ValueError) as info:
        make_runner(seg, "segment", "tensorrt", tmp_path)
    assert all(name in str(info.value) for name in BACKENDS)
    with pytest.raises(ValueError, match="example_hw"):
        make_runner(models["classifier"], "classify", "onnx", tmp_path)


def _refuse(runner: OnnxRunner, *_: object) -> None:
    raise ModelError(f"{runner.path}: refused here")


def test_a_graph_the_quantiser_cannot_handle(models: dict, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    """Whatever onnxruntime's quantiser raises becomes a ModelError naming the graph: auto
    falls back to float32, onnx-int8 by name stops."""
    def crash(*_: object) -> None:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr("allseg.models.quantize.quantize_segmenter", crash)
    monkeypatch.setattr(backends, "cpu_has_int8_dot", lambda: True)
    seg = models["segmenter"]
    with pytest.warns(UserWarning, match="cannot quantise.*unsupported operator"):
        assert make_runner(seg, "segment", "auto", tmp_path).backend == "onnx"
    with pytest.raises(ModelError, match=r"segmenter\.onnx: onnxruntime cannot quantise"):
        make_runner(seg, "segment", "onnx-int8", tmp_path)


@pytest.mark.parametrize(("cpuinfo", "expected"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", True),
    ("flags\t\t: fpu sse2 avx2 avx_vnni\n", True),
    ("flags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: avx512_vnni\n", False),
    ("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\n", True),
    ("Features\t: fp asimd evtstrm crc32\n", False),
    (None, False),
])
def test_int8_dot_product_detection(tmp_path: Path, cpuinfo: str | None, expected: bool):
    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    assert backends.cpu_has_int8_dot(path) is expected


def test_default_cache_dir_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert backends.default_cache_root() == tmp_path / "allseg" / "onnx"


def test_onnx_cache_is_exported_once(models: dict, folder: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch):
    calls: list[Path] = []

    def counting_export(model, path, example_hw=(256, 256)):
        calls.append(Path(path))
        return export_onnx(model, path, example_hw)

    monkeypatch.setattr(backends, "export_onnx", counting_export)
    cls = models["classifier"]
    first = make_runner(cls, "classify", "onnx", tmp_path, model_dir=folder, example_hw=CROP)
    second = make_runner(cls, "classify", "onnx", tmp_path, model_dir=folder, example_hw=CROP)
    assert len(calls) == 1 and first.path == second.path == calls[0]
    assert first.path.name == "classifier.onnx" and first.path.parent.parent == tmp_path
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp.onnx")]
    x = image_batch(2, *CROP)
    np.testing.assert_array_equal(first(x), second(x))
    # A truncated cache entry is replaced, not trusted.
    first.path.write_bytes(first.path.read_bytes()[:100])
    with pytest.warns(UserWarning, match="re-exporting"):
        third = make_runner(cls, "classify", "onnx", tmp_path, model_dir=folder, example_hw=CROP)
    assert len(calls) == 2 and np.abs(third(x) - first(x)).max() < 1e-6


def test_export_model_round_trip(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "exported"
    report = export_model(folder, out)
    names = {"segmenter.onnx", "classifier.onnx", "segmenter.safetensors",
             "classifier.safetensors", "config.json"}
    assert names <= {p.name for p in out.iterdir()}
    models, meta = load_model_folder(out)
    assert set(models) == {"segmenter", "classifier"} and meta == META
    diffs = report["max_abs_diff"]
    assert any(k.startswith("segmenter/smear") for k in diffs)
    assert any(k.startswith("classifier/") for k in diffs)
    assert all(0 <= d <= ONNX_TOLERANCE for d in diffs.values())

    # The exported folder's own graphs are used directly: nothing is exported.
    monkeypatch.setattr(backends, "export_onnx", lambda *a, **k: pytest.fail("re-exported"))
    runner = make_runner(models["segmenter"], "segment", "onnx", tmp_path / "cache",
                         stage="segmenter", model_dir=out)
    assert runner.path == out / "segmenter.onnx"
    x = image_batch(1, 45, 67)
    assert np.abs(runner(x) - TorchRunner(models["segmenter"], "segment")(x)).max() < 1e-4


def test_corrupted_onnx_in_model_folder_is_refused(models: dict, folder: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    save_model_folder(bad, models, META)
    (bad / "segmenter.onnx").write_bytes(b"\x08\x07garbage, not protobuf" * 10)
    with pytest.raises(ModelError, match="segmenter.onnx") as info:
        make_runner(models["segmenter"], "segment", "onnx", tmp_path / "cache",
                    model_dir=bad)
    assert "ONNX" in str(info.value)
    # A well-formed graph of other weights is refused too (it would give other answers).
    other = build_model("unet_small", base_channels=4, depth=3)
    export_onnx(other, bad / "segmenter.onnx")
    with pytest.raises(ModelError, match="does not match"):
        make_runner(models["segmenter"], "segment", "onnx", tmp_path / "cache",
                    model_dir=bad)


class _Fixed:
    """A runner stub returning a fixed output (for the int8 acceptance rule)."""

    path = Path("stub.int8.onnx")

    def __init__(self, out: np.ndarray) -> None:
        self.out = out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.out


def test_int8_acceptance_rule_refuses_a_straying_graph():
    from allseg.models.quantize import check_int8

    rng = np.random.default_rng(0)
    probs = rng.uniform(size=(1, 4, 384, 512)).astype(np.float32)
    assert check_int8(_Fixed(probs), _Fixed(probs), 0.3) == {
        "class_agreement": 1.0, "centre_mean_diff": 0.0}
    shuffled = probs.copy()
    shuffled[:, :3] = probs[:, [1, 2, 0]]
    with pytest.raises(ModelError, match="stub.int8.onnx.*strays"):
        check_int8(_Fixed(shuffled), _Fixed(probs), 0.3)


def test_int8_segmenter_of_the_bundled_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Exported with --int8 it is used as shipped; otherwise quantised once into the cache
    (a damaged cache entry is re-quantised); either agrees with float32 on a smear."""
    from allseg.inference.models import resolve_model_dir
    from allseg.models.quantize import check_int8, synthetic_fields

    models, meta = load_model_folder(resolve_model_dir("default"))
    from typer.testing import CliRunner

    from allseg.cli import app

    done = CliRunner().invoke(app, ["export", "--int8", "--out", str(tmp_path / "exported")])
    assert done.exit_code == 0, done.output
    assert "int8 segmenter class agreement: 0.99" in done.output or (
        "int8 segmenter class agreement: 1.0" in done.output), done.output
    seg = models["segmenter"]
    shipped = make_runner(seg, "segment", "onnx-int8", tmp_path / "cache", stage="segmenter",
                          model_dir=tmp_path / "exported")
    assert shipped.path == tmp_path / "exported" / "segmenter.int8.onnx"
    assert not (tmp_path / "cache").exists()
    _predict_agrees_with_float32(tmp_path)

    cached = make_runner(seg, "segment", "onnx-int8", tmp_path / "cache")
    assert cached.path.name == "segmenter.int8.onnx" and cached.path.parent.parent == (
        tmp_path / "cache")
    (batch,) = synthetic_fields(1, 5, 0.3)
    assert np.array_equal(cached(batch), shipped(batch))  # same graph, same calibration
    cached.path.write_bytes(b"not onnx")
    with pytest.warns(UserWarning, match="re-quantising"):
        again = make_runner(seg, "segment", "onnx-int8", tmp_path / "cache")
    check_int8(again, make_runner(seg, "segment", "onnx", tmp_path / "cache"), 0.3)
    # Classifiers stay float32 under onnx-int8.
    cls = make_runner(models["classifier"], "classify", "onnx-int8", tmp_path / "cache",
                      example_hw=(int(meta["crop_size"]),) * 2)
    assert cls.path.name == "classifier.onnx"


def test_bundled_model_ships_its_int8_segmenter(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch):
    """Under 30 MB with its int8 graph, which auto uses as shipped on a CPU with int8 dot
    products: nothing is quantised on a first run."""
    from allseg.inference.models import resolve_model_dir

    folder = resolve_model_dir("default")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 30e6
    monkeypatch.setattr(backends, "cpu_has_int8_dot", lambda: True)
    models, meta = load_model_folder(folder)
    runner = make_runner(models["segmenter"], "segment", "auto", tmp_path / "cache",
                         stage="segmenter", model_dir=folder)
    assert runner.backend == "onnx-int8" and runner.path == folder / "segmenter.int8.onnx"
    assert not list((tmp_path / "cache").rglob("*.int8.onnx"))


def _predict_agrees_with_float32(tmp_path: Path) -> None:
    """``allseg predict --backend onnx-int8`` finds the same cells on a synthetic field.

    At the field's known scale: this field's few red cells leave the scale to the
    leukocytes, which read it 45% fine with either backend, and at that scale the float32
    segmenter on the faint field's spread levels finds 3 of its 4 leukocytes and int8 all 4
    (the comparison is of backends, not of the scale estimate)."""
    import json

    from PIL import Image
    from typer.testing import CliRunner

    from allseg.cli import app
    from allseg.synth import generate_field

    field = generate_field(np.random.default_rng(3), 600, 800, 0.1, n_leukocytes=4)
    Image.fromarray(field.image).save(tmp_path / "field.png")
    found = {}
    for backend in ("onnx", "onnx-int8"):
        out = tmp_path / backend
        done = CliRunner().invoke(app, ["predict", str(tmp_path / "field.png"), "--model",
                                        str(tmp_path / "exported"), "--backend", backend,
                                        "--um-per-px", "0.1", "--out", str(out)])
        assert done.exit_code == 0, done.output
        found[backend] = json.loads((out / "field.json").read_text())
        assert found[backend]["model"]["backend"] == backend
    assert found["onnx-int8"]["leukocyte_count"] == found["onnx"]["leukocyte_count"] >= 3
    assert found["onnx-int8"]["verdict"] == found["onnx"]["verdict"]


def test_export_to_an_unwritable_place_is_a_clear_error(folder: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from allseg.cli import app

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    done = CliRunner().invoke(app, ["export", "--model", str(folder), "--out",
                                    str(blocker / "exported")])
    assert done.exit_code == 2 and "Traceback" not in done.output
    assert "a_file/exported" in done.output and "cannot write the export" in done.output
