"""Fuzz targets for every untrusted-input surface of allseg.

    python fuzz/fuzz_targets.py TARGET SECONDS [--engine atheris|random]

Each target takes raw bytes and raises only on a bug: the reader's own typed error
(ImageReadError / InputError / ModelError, or an HTTP status below 500) is a pass.
With atheris installed the coverage-guided libFuzzer engine runs; otherwise (or with
``--engine random``) a seed-mutating random fuzzer does. Crashing inputs are written
to ``fuzz/findings/TARGET-<sha1>``; keep a small one under ``tests/regressions/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

FINDINGS = Path(__file__).resolve().parent / "findings"
_WORK = Path(tempfile.mkdtemp(prefix="allseg-fuzz-"))
_CACHE: dict[str, object] = {}


def _imports() -> None:
    """Import allseg (instrumented for coverage when atheris runs)."""
    global np, Image, ImageReadError, InputError, ModelError, read_image, read_mask
    global open_dataset, load_config
    import numpy as np
    from PIL import Image

    from allseg.data.readers import open_dataset
    from allseg.errors import ImageReadError, InputError, ModelError
    from allseg.io.images import read_image, read_mask
    from allseg.training.config import load_config


def _tiny_jpeg() -> bytes:
    if "jpeg" not in _CACHE:
        buffer = io.BytesIO()
        Image.fromarray(np.full((16, 20, 3), 180, np.uint8)).save(buffer, format="JPEG")
        _CACHE["jpeg"] = buffer.getvalue()
    return _CACHE["jpeg"]


def _fresh(name: str) -> Path:
    folder = _WORK / name
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _load_dataset(root: Path, fmt: str) -> None:
    try:
        dataset = open_dataset(root, format=fmt)
        for _ in dataset.iter_records():
            pass
    except InputError:
        pass


# ---------------------------------------------------------------- targets


def target_image(data: bytes) -> None:
    suffix = (".png", ".jpg", ".tif", ".bmp")[data[0] % 4] if data else ".png"
    path = _write(_fresh("image") / f"x{suffix}", data[1:])
    for reader in (read_image, read_mask):
        with contextlib.suppress(ImageReadError):
            reader(path)


def target_xyc(data: bytes) -> None:
    root = _fresh("xyc")
    _write(root / "im" / "Im001_1.jpg", _tiny_jpeg())
    _write(root / "xyc" / "Im001_1.xyc", data)
    _load_dataset(root, "allidb1")


def target_voc(data: bytes) -> None:
    root = _fresh("voc")
    _write(root / "JPEGImages" / "a.jpg", _tiny_jpeg())
    _write(root / "Annotations" / "a.xml", data)
    _load_dataset(root, "voc")


def target_yolo(data: bytes) -> None:
    labels, _, classes = data.partition(b"\x00")
    root = _fresh("yolo")
    _write(root / "images" / "a.jpg", _tiny_jpeg())
    _write(root / "labels" / "a.txt", labels)
    if classes:
        _write(root / ("classes.txt" if classes[0] % 2 else "data.yaml"), classes[1:])
    _load_dataset(root, "yolo")


def target_toml(data: bytes) -> None:
    text, _, override = data.partition(b"\x00")
    recipe = _write(_fresh("toml") / "r.toml", text)
    overrides = [override.decode("utf-8", "replace")] if override else []
    for path in (recipe, None):
        with contextlib.suppress(InputError):
            load_config(path, overrides)


def _model_folder() -> Path:
    if "model" not in _CACHE:
        from allseg.models import build_model, save_model_folder

        _CACHE["model"] = save_model_folder(_WORK / "model", {
            "segmenter": build_model("unet_small", base_channels=4, depth=3),
            "classifier": build_model("cnn_classifier", width=4)}, {})
        _CACHE["model_config"] = (_WORK / "model" / "config.json").read_bytes()
    return _CACHE["model"]


def target_modelconfig(data: bytes) -> None:
    from allseg.models import load_model_folder

    folder = _model_folder()
    (folder / "config.json").write_bytes(data)
    with contextlib.suppress(ModelError):
        load_model_folder(folder)


def _client():
    if "client" not in _CACHE:
        from fastapi.testclient import TestClient

        from allseg.outputs.schema import ImageResult
        from allseg.service import create_app

        class Stub:
            meta = {"canonical_um_per_px": 0.3}
            model_info = {"name": "stub", "backend": "none", "tta": False}

            def predict_image(self, image, name="image", um_per_px=None, cell_diameter_px=None):
                h, w = image.shape[:2]
                return ImageResult(image=name, width=w, height=h, um_per_px=0.3,
                                   scale_source="default", cells=[], model={"name": "stub"},
                                   timings={"total": 0.0}, parts=np.zeros((h, w), np.uint8),
                                   instances=np.zeros((h, w), np.uint16))

        _CACHE["client"] = TestClient(create_app(Stub(), max_upload_bytes=100_000,
                                                 max_pixels=4_000_000),
                                      raise_server_exceptions=False)
    return _CACHE["client"]


def target_http(data: bytes) -> None:
    client = _client()
    mode = data[0] % 3 if data else 0
    body = data[1:]
    if mode == 0:
        reply = client.post("/v1/predict", content=body)
    elif mode == 1:
        reply = client.post("/v1/predict", files={"file": ("x.png", body, "image/png")})
    else:
        reply = client.post("/Inference", content=body, headers={"content-type": "image/jpeg"})
    if reply.status_code >= 500:
        raise AssertionError(f"HTTP {reply.status_code}: {reply.text[:300]}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "image": target_image, "xyc": target_xyc, "voc": target_voc, "yolo": target_yolo,
    "toml": target_toml, "modelconfig": target_modelconfig, "http": target_http}


# ---------------------------------------------------------------- seeds and engines


def seeds(target: str) -> list[bytes]:
    def enc(img, fmt, **kw) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, format=fmt, **kw)
        return buffer.getvalue()

    rgb = Image.fromarray(np.arange(90, dtype=np.uint8).reshape(6, 5, 3))
    images = [enc(rgb, f) for f in ("PNG", "JPEG", "TIFF", "BMP")] + [
        enc(rgb.convert("RGBA"), "PNG"), enc(rgb.convert("P"), "GIF")]
    if target == "image":
        return [bytes([i]) + im for i, im in enumerate(images)]
    if target == "http":
        return [bytes([i % 3]) + im for i, im in enumerate(images)]
    if target == "modelconfig":
        _model_folder()
        return [_CACHE["model_config"], b"{}", b"[]"]
    return {
        "xyc": [b"10 20\n30 40\n", b"1 2 3\n-5 x\n"],
        "voc": [b"<annotation><object><name>WBC</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
                b"<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"],
        "yolo": [b"0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.1 0.1\n\x00\x01WBC\nRBC\n",
                 b"0 0.5 0.5 0.3 0.3\n\x00\x00names: [RBC, WBC]\n"],
        "toml": [b'seed = 1\n[segmenter]\nepochs = 2\n[[data]]\npath = "x"\n\x00patch_size=64',
                 b"[[data]]\nsynth = { layout = \"masks\", n = 3 }\n\x00data=[{path='y'}]"],
    }[target]


def mutate(data: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and buf:
            del buf[pos:pos + rng.randint(1, 16)]
        elif op == 3:
            buf = buf[:pos]
        elif op == 4:
            buf[pos:pos] = rng.choice([b"nan", b"1e400", b"-1", b"9" * 40, b"[" * 1500,
                                       b"\xff\xfe", b"<!DOCTYPE", b"\x00", b"\n"])
        else:
            other = rng.choice(pool)
            buf[pos:] = other[rng.randrange(len(other) + 1):]
    return bytes(buf)


def save_finding(target: str, data: bytes, error: BaseException) -> Path:
    FINDINGS.mkdir(parents=True, exist_ok=True)
    path = FINDINGS / f"{target}-{hashlib.sha1(data).hexdigest()[:16]}"
    if not path.exists():
        path.write_bytes(data)
        path.with_suffix(".txt").write_text("".join(traceback.format_exception(error)))
    return path


def run_random(target: str, seconds: float, seed: int = 0) -> tuple[int, int]:
    fn, rng = TARGETS[target], random.Random(seed)
    pool = seeds(target)
    execs, crashes, corpus = 0, set(), list(pool)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        data = mutate(rng.choice(corpus), rng, pool)
        execs += 1
        try:
            fn(data)
        except Exception as exc:  # anything escaping a target is a finding
            key = (type(exc).__name__, traceback.extract_tb(exc.__traceback__)[-1][:2])
            if key not in crashes:
                crashes.add(key)
                print(f"[{target}] FINDING {type(exc).__name__}: {exc!s:.200} -> "
                      f"{save_finding(target, data, exc)}", flush=True)
        if len(corpus) < 200 and rng.random() < 0.05:
            corpus.append(data)
    print(f"[{target}] engine=random executions={execs} findings={len(crashes)}", flush=True)
    return execs, len(crashes)


def run_atheris(target: str, seconds: float) -> None:
    import atheris

    fn = TARGETS[target]
    corpus = _WORK / f"corpus-{target}"
    corpus.mkdir(exist_ok=True)
    for i, s in enumerate(seeds(target)):
        (corpus / f"seed{i}").write_bytes(s)
    FINDINGS.mkdir(parents=True, exist_ok=True)

    def one(data: bytes) -> None:
        fn(data)

    sys.argv = [sys.argv[0], str(corpus), f"-max_total_time={int(seconds)}",
                f"-artifact_prefix={FINDINGS}/{target}-", "-print_final_stats=1",
                "-rss_limit_mb=4096", "-timeout=20"]
    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*TARGETS, "list"])
    parser.add_argument("seconds", type=float, nargs="?", default=30)
    parser.add_argument("--engine", choices=["auto", "atheris", "random"], default="auto")
    args = parser.parse_args()
    if args.target == "list":
        print(" ".join(TARGETS))
        return
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["allseg"]):
            _imports()
        print(f"[{args.target}] engine=atheris seconds={args.seconds:g}", flush=True)
        run_atheris(args.target, args.seconds)
    else:
        _imports()
        execs, found = run_random(args.target, args.seconds,
                                  seed=int(os.environ.get("FUZZ_SEED", "0")))
        sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
