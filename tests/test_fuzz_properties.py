"""Property-based tests over every untrusted-input surface.

Each reader gets arbitrary (and mutated-valid) input and must either succeed or raise
its typed error (ImageReadError / InputError / ModelError): any other exception type,
or a hang past the deadline, is a bug. Inputs that once broke a reader are kept under
``tests/regressions/`` and replayed by :func:`test_regression_inputs`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from allseg.data.readers import open_dataset
from allseg.data.record import Record
from allseg.errors import ImageReadError, InputError, ModelError
from allseg.io.images import read_image, read_mask
from allseg.training.config import TrainConfig, load_config

REGRESSIONS = Path(__file__).parent / "regressions"
#: ALLSEG_FUZZ_EXAMPLES=2000 for a longer, randomised search (default: 60, reproducible).
_EXAMPLES = int(os.environ.get("ALLSEG_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_EXAMPLES or 60, deadline=2000, derandomize=not _EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---------------------------------------------------------------- seeds and mutation


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    rgb = Image.fromarray(np.arange(6 * 5 * 3, dtype=np.uint8).reshape(6, 5, 3))
    exif = Image.Exif()
    exif[0x0112] = 6
    return [
        _encode(rgb, "PNG"), _encode(rgb, "JPEG", exif=exif), _encode(rgb, "TIFF"),
        _encode(rgb, "BMP"), _encode(rgb.convert("P"), "GIF"),
        _encode(rgb.convert("RGBA"), "PNG"), _encode(rgb.convert("L"), "TIFF"),
        _encode(Image.fromarray(np.full((4, 3), 40000, np.uint16)), "PNG"),
    ]


SEEDS = _seeds()


@st.composite
def image_bytes(draw: st.DrawFn) -> bytes:
    """Random bytes, a valid header with random tail, or a valid file with a few bytes
    flipped / removed / truncated."""
    kind = draw(st.sampled_from(["random", "header", "mutate", "mutate", "truncate"]))
    if kind == "random":
        return draw(st.binary(max_size=512))
    seed = draw(st.sampled_from(SEEDS))
    if kind == "header":
        return seed[:draw(st.integers(4, 40))] + draw(st.binary(max_size=256))
    if kind == "truncate":
        return seed[:draw(st.integers(0, len(seed)))]
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, len(data) - 1))
        data[pos] = draw(st.integers(0, 255))
    return bytes(data)


def _write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(data)
    return path


TINY_JPEG = _encode(Image.fromarray(np.full((16, 20, 3), 180, np.uint8)), "JPEG")
# Text that looks like a label file sometimes, and like anything at other times.
NUMBER = st.one_of(st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.sampled_from(["nan", "inf", "-0", "1e400", "0x10", "١٢", "", "1_0"]))
LINE = st.lists(NUMBER, max_size=6).map(" ".join)
LABEL_TEXT = st.one_of(st.lists(LINE, max_size=6).map("\n".join), st.text(max_size=200))


# ---------------------------------------------------------------- image files


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
@FUZZ
@given(data=image_bytes())
def test_read_image_and_mask_never_raise_other_errors(suffix: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = _write(Path(tmp), f"x{suffix}", data)
        try:
            image = read_image(path)
        except ImageReadError as exc:
            assert "x" + suffix in str(exc)
        else:
            assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
            assert image.flags.c_contiguous
        try:
            mask = read_mask(path)
        except ImageReadError:
            pass
        else:
            assert isinstance(mask, np.ndarray)


# ---------------------------------------------------------------- dataset readers


def _load_all(root: Path, fmt: str) -> None:
    """Listing + loading: records, or InputError; nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            dataset = open_dataset(root, format=fmt)
        except InputError:
            return
        for record in dataset.iter_records():
            assert isinstance(record, Record)
        for i in range(len(dataset)):
            with contextlib.suppress(InputError):
                assert isinstance(dataset[i], Record)


def _load_files(fmt: str, files: dict[str, bytes | str | None]) -> None:
    """Write ``files`` (relative name -> content; None: left out) into a fresh folder and
    read it as ``fmt`` with :func:`_load_all`."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            if data is not None:
                _write(Path(tmp), name, data)
        _load_all(Path(tmp), fmt)


@FUZZ
@given(text=LABEL_TEXT)
def test_allidb1_xyc_text(text: str) -> None:
    _load_files("allidb1", {"im/Im001_1.jpg": TINY_JPEG, "xyc/Im001_1.xyc": text})


@st.composite
def voc_xml(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    objects = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["WBC", "wbc ", "RBC", "", "<x/>"]))
        coords = "".join(f"<{k}>{draw(NUMBER)}</{k}>"
                         for k in draw(st.one_of(
                             st.just(["xmin", "ymin", "xmax", "ymax"]),
                             st.lists(st.sampled_from(["xmin", "ymin", "xmax", "ymax"]),
                                      max_size=5))))
        box = draw(st.sampled_from([f"<bndbox>{coords}</bndbox>", coords, ""]))
        objects.append(f"<object><name>{name}</name>{box}</object>")
    body = "<annotation>" + "".join(objects) + "</annotation>"
    return body[:draw(st.integers(0, len(body)))] if draw(st.booleans()) else body


@FUZZ
@given(text=voc_xml())
def test_voc_xml_text(text: str) -> None:
    _load_files("voc", {"JPEGImages/a.jpg": TINY_JPEG, "Annotations/a.xml": text})


@FUZZ
@given(text=LABEL_TEXT, classes=st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=80)),
       yaml=st.one_of(st.none(), st.text(max_size=120)))
def test_yolo_label_text(text: str, classes: bytes | str | None, yaml: str | None) -> None:
    _load_files("yolo", {"images/a.jpg": TINY_JPEG, "labels/a.txt": text,
                         "classes.txt": classes, "data.yaml": yaml})


@FUZZ
@given(mask=image_bytes())
def test_mask_folder_with_hostile_mask(mask: bytes) -> None:
    _load_files("masks", {"images/a.jpg": TINY_JPEG, "masks/a.png": mask})


# ---------------------------------------------------------------- training recipe

KEYS = st.sampled_from(["out", "seed", "stage", "patch_size", "segmenter.epochs", "data",
                        "segmenter.kwargs", "classifier.lr", "a.b.c", "", ".", "folds",
                        "hold_out", "segmenter"])
VALUES = st.one_of(st.text(max_size=30), NUMBER, st.sampled_from(
    ["[1, 2]", "{ a = 1 }", "true", '"x"', "[" * 3000, "[{path='x'}]", "[{synth={n=0}}]",
     "1979-05-27T07:32:00Z", "inf", "-nan"]))
OVERRIDE = st.one_of(st.text(max_size=40), st.tuples(KEYS, VALUES).map("=".join))


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=200)),
       overrides=st.lists(OVERRIDE, max_size=4))
def test_load_config_is_trainconfig_or_input_error(text: str | bytes, overrides: list[str]
                                                   ) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = _write(Path(tmp), "r.toml", text)
        for path in (recipe, None):
            with contextlib.suppress(InputError):
                assert isinstance(load_config(path, overrides), TrainConfig)


# ---------------------------------------------------------------- model folder


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from allseg.models import build_model, save_model_folder

    models = {"segmenter": build_model("unet_small", base_channels=4, depth=3),
              "classifier": build_model("cnn_classifier", width=4)}
    return save_model_folder(tmp_path_factory.mktemp("fuzzmodel") / "m", models, {})


JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(),
              st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
KWARGS = st.dictionaries(st.sampled_from(["base_channels", "depth", "width", "in_channels",
                                          "n_classes", "dropout", "bogus"]),
                         st.one_of(st.integers(-3, 70), st.integers(-10**20, 10**20),
                                   st.floats(), st.none(), st.text(max_size=3)), max_size=3)


@st.composite
def model_config(draw: st.DrawFn) -> str:
    """Arbitrary JSON, or a plausible config.json with fuzzed stage entries."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.one_of(st.text(max_size=200), JSONISH.map(json.dumps)))
    stages = {}
    for stage in draw(st.lists(st.sampled_from(["segmenter", "classifier", "x"]), max_size=2,
                               unique=True)):
        stages[stage] = {
            "arch": draw(st.sampled_from(["unet_small", "cnn_classifier", "effnet_unet", "?"])),
            "task": draw(st.sampled_from(["segment", "classify", "other"])),
            "config": draw(KWARGS),
            "weights": draw(st.sampled_from([f"{stage}.safetensors", "segmenter.safetensors",
                                             "../x.safetensors", "w.pt", ""]))}
    doc = {"schema_version": draw(st.sampled_from([1, 1, 2, "1"])), "allseg_version": "0",
           "stages": stages, "meta": draw(JSONISH)}
    return json.dumps(doc)


@FUZZ
@given(text=model_config())
def test_model_folder_config_raises_only_model_error(model_folder: Path, text: str) -> None:
    from allseg.models import load_model_folder

    config = model_folder / "config.json"
    original = config.read_bytes()
    try:
        config.write_text(text, encoding="utf-8")
        try:
            models, meta = load_model_folder(model_folder)
        except ModelError:
            return
        assert models and isinstance(meta, dict)
    finally:
        config.write_bytes(original)


# ---------------------------------------------------------------- kept regressions


def _replay(path: Path, tmp: Path) -> None:
    kind = path.name.split("__")[0]
    data = path.read_bytes()
    if kind == "xyc":
        _write(tmp, "im/Im001_1.jpg", TINY_JPEG)
        _write(tmp, "xyc/Im001_1.xyc", data)
        _load_all(tmp, "allidb1")
    elif kind == "voc":
        _write(tmp, "JPEGImages/a.jpg", TINY_JPEG)
        _write(tmp, "Annotations/a.xml", data)
        _load_all(tmp, "voc")
    elif kind == "yolo-classes":
        _write(tmp, "images/a.jpg", TINY_JPEG)
        _write(tmp, "labels/a.txt", "0 0.5 0.5 0.2 0.2\n")
        _write(tmp, "classes.txt", data)
        _load_all(tmp, "yolo")
    elif kind == "recipe":
        with contextlib.suppress(InputError):
            load_config(_write(tmp, "r.toml", data))
    elif kind == "override":
        with contextlib.suppress(InputError):
            load_config(None, [data.decode()])
    elif kind == "modelconfig":
        from allseg.models import build_model, load_model_folder, save_model_folder

        folder = save_model_folder(tmp / "m", {"segmenter": build_model(
            "unet_small", base_channels=4, depth=3)}, {})
        (folder / "config.json").write_bytes(data)
        with pytest.raises(ModelError):
            load_model_folder(folder)
    elif kind == "image":
        for suffix in (".png", ".jpg", ".tif"):
            target = _write(tmp, f"x{suffix}", data)
            for reader in (read_image, read_mask):
                with contextlib.suppress(ImageReadError):
                    reader(target)
    else:
        raise AssertionError(f"unknown regression kind {kind!r} ({path.name})")


@pytest.mark.parametrize("path", sorted(p for p in REGRESSIONS.glob("*__*") if p.is_file()),
                         ids=lambda p: p.name)
def test_regression_inputs(path: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _replay(path, tmp_path)
