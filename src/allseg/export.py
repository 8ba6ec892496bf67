"""``allseg export``: turn a model folder into one that also carries ONNX graphs.

The output folder is a complete model folder (``config.json``, the ``.safetensors``
weights, ``segmenter.onnx``, ``classifier.onnx``, with ``--int8`` ``segmenter.int8.onnx``)
usable with ``--backend onnx`` (or ``onnx-int8``); the ONNX files are then used directly
instead of being exported into the user cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from allseg.errors import InputError, ModelError
from allseg.inference.backends import ONNX_TOLERANCE, SEGMENTER_EXAMPLE_HW
from allseg.inference.models import resolve_model_dir
from allseg.io.atomic import write_atomic
from allseg.models.folder import CONFIG_NAME, load_model_folder
from allseg.models.onnx_export import check_onnx, export_onnx

__all__ = ["ONNX_TOLERANCE", "export_model"]

SEGMENTER_CHECK_SHAPES = ((1, 97, 131), (2, 160, 224))  # (batch, H, W): odd, non-multiples
CLASSIFIER_CHECK_BATCH = 3


def export_model(model_dir: str | Path, out: Path, check: bool = True,
                 int8: bool = False) -> dict[str, Any]:
    """Write ``out/<stage>.onnx`` for both stages plus a copy of the model folder.

    With ``int8``, also ``out/segmenter.int8.onnx``, which must pass ``check_int8``
    against the float32 graph (its figures are returned under ``"int8"``).

    With ``check``, each graph is compared with torch (max |logit difference|) on
    random image-like inputs (segmenter at two sizes, classifier on a batch of crops)
    and on a synthetic smear field; any difference above ``ONNX_TOLERANCE`` raises a
    ModelError and the ONNX files just written are removed. Returns ``{"out", "files",
    "tolerance", "max_abs_diff": {"<stage>/<input>": float}}``.
    """
    src = resolve_model_dir(model_dir)
    out = Path(out)
    models, meta = load_model_folder(src)
    missing = {"segmenter", "classifier"} - set(models)
    if missing:
        raise ModelError(f"{src}: model folder lacks the {', '.join(sorted(missing))} stage")
    crop = int(meta.get("crop_size", 96))
    example = {"segmenter": SEGMENTER_EXAMPLE_HW, "classifier": (crop, crop)}

    written: list[Path] = []
    diffs: dict[str, float] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for stage in ("segmenter", "classifier"):
            written.append(export_onnx(models[stage], out / f"{stage}.onnx", example[stage]))
        if check:
            diffs = _check(models, out, crop)
            worst = max(diffs, key=diffs.__getitem__)
            if diffs[worst] > ONNX_TOLERANCE:
                raise ModelError(f"{out / (worst.split('/')[0] + '.onnx')}: onnxruntime differs "
                                 f"from torch by {diffs[worst]:.3g} on {worst} (tolerance "
                                 f"{ONNX_TOLERANCE} on logits); export refused")
        if int8:
            written.append(out / "segmenter.int8.onnx")
            int8_figures = _quantize(out, float(meta["canonical_um_per_px"]))
    except BaseException as exc:
        for path in written:
            path.unlink(missing_ok=True)
        if isinstance(exc, OSError):  # unwritable or full folder: say which, no traceback
            raise InputError(out, f"cannot write the export here ({exc.strerror or exc})"
                             ) from exc
        raise

    same = out.resolve() == src.resolve()
    names = sorted(p.name for p in src.iterdir() if p.suffix == ".safetensors")
    if not same:  # weights first, config.json last: a folder with a config is complete
        for name in [*names, CONFIG_NAME]:
            write_atomic(out / name, lambda tmp, n=name: shutil.copyfile(src / n, tmp))
    files = sorted(str(p) for p in [*written, *(out / n for n in [*names, CONFIG_NAME])])
    return {"out": str(out), "files": files, "tolerance": ONNX_TOLERANCE,
            "max_abs_diff": diffs, **({"int8": int8_figures} if int8 else {})}


def _quantize(out: Path, canonical_um_per_px: float) -> dict[str, float]:
    """Write and check ``out/segmenter.int8.onnx`` from ``out/segmenter.onnx``."""
    from allseg.inference.backends import OnnxRunner
    from allseg.models.quantize import check_int8, quantize_segmenter

    path = quantize_segmenter(out / "segmenter.onnx", out / "segmenter.int8.onnx",
                              canonical_um_per_px)
    return check_int8(OnnxRunner(path, "segment"), OnnxRunner(out / "segmenter.onnx", "segment"),
                      canonical_um_per_px)


def _check(models: dict, out: Path, crop: int) -> dict[str, float]:
    from allseg.synth import generate_field

    rng = np.random.default_rng(0)
    seg, cls = models["segmenter"], models["classifier"]
    seg_path, cls_path = out / "segmenter.onnx", out / "classifier.onnx"
    diffs: dict[str, float] = {}
    for b, h, w in SEGMENTER_CHECK_SHAPES:
        x = _image_like(rng, b, h, w)
        diffs[f"segmenter/random_{b}x{h}x{w}"] = check_onnx(seg, seg_path, x)
    diffs[f"classifier/random_{CLASSIFIER_CHECK_BATCH}x{crop}x{crop}"] = check_onnx(
        cls, cls_path, _image_like(rng, CLASSIFIER_CHECK_BATCH, crop, crop))

    smear = generate_field(np.random.default_rng(0), 384, 512, 0.3).image
    x = torch.from_numpy(np.ascontiguousarray(smear.transpose(2, 0, 1)[None], np.float32))
    diffs["segmenter/smear_1x384x512"] = check_onnx(seg, seg_path, x)
    # Three crops of the smear resized to the classifier's crop size.
    side = min(smear.shape[:2]) // 2
    crops = [cv2.resize(smear[y:y + side, x0:x0 + side], (crop, crop),
                        interpolation=cv2.INTER_AREA)
             for y, x0 in ((0, 0), (side // 2, side), (side, 2 * side // 3))]
    batch = torch.from_numpy(np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32))
    diffs[f"classifier/smear_crops_{len(crops)}x{crop}x{crop}"] = check_onnx(cls, cls_path, batch)
    return diffs


def _image_like(rng: np.random.Generator, b: int, h: int, w: int) -> torch.Tensor:
    """Smooth random colour fields plus noise in 0..255: closer to a smear than pure noise."""
    base = rng.uniform(60, 230, (b, 3, 1, 1))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    phase = rng.uniform(0, 2 * np.pi, (b, 3, 1, 1))
    wave = 40 * np.sin(6 * xx[None, None] + 4 * yy[None, None] + phase)
    noise = rng.normal(0, 12, (b, 3, h, w))
    return torch.from_numpy(np.clip(base + wave + noise, 0, 255).astype(np.float32))
