"""The int8 segmenter for ONNX Runtime (static, per-channel, QDQ); `--backend auto` runs it
on CPUs with int8 dot products (`allseg.inference.backends.cpu_has_int8_dot`).

Measured on a 2-core AMD EPYC with AVX-512 VNNI (`make bench`, 2026-11-26): the int8
segmenter ran a 2592x1944 field in 0.091 s against 0.181 s for float32, and kept the class
of 99.98% of the pixels of the acceptance field (`allseg export --int8`). Activation
ranges are calibrated on synthetic smear fields drawn at the canonical scale, the input
the segmenter sees at inference. Only the segmenter is quantised: the classifier's time
is small and its probability is the number users threshold.

``check_int8`` is the acceptance test every int8 graph must pass before it is used.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from allseg.errors import ModelError
from allseg.io.atomic import write_atomic
from allseg.models.onnx_export import INPUT_NAME

if TYPE_CHECKING:  # backends imports this module lazily; no import cycle at run time
    from allseg.inference.backends import OnnxRunner

#: Synthetic fields (height, width) used to calibrate, and their seed.
CALIBRATION_FIELDS = 6
CALIBRATION_HW = (384, 512)
CALIBRATION_SEED = 1234
#: Acceptance: share of pixels whose class (background/cytoplasm/nucleus) is unchanged,
#: and the largest mean change of the centre map, on a held-out synthetic field.
MIN_CLASS_AGREEMENT = 0.99
MAX_CENTRE_MEAN_DIFF = 0.02


def synthetic_fields(n: int, seed: int, canonical_um_per_px: float,
                     hw: tuple[int, int] = CALIBRATION_HW) -> Iterator[np.ndarray]:
    """``n`` synthetic smear fields as ``(1, 3, H, W)`` float32 batches at the given scale."""
    from allseg.synth import generate_field

    rng = np.random.default_rng(seed)
    for _ in range(n):
        image = generate_field(rng, *hw, canonical_um_per_px).image
        yield np.ascontiguousarray(image.transpose(2, 0, 1)[None], np.float32)


def quantize_segmenter(fp32_path: str | Path, out_path: str | Path,
                       canonical_um_per_px: float) -> Path:
    """Write a statically quantised copy of the float32 segmenter graph at ``fp32_path``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Fields(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = synthetic_fields(CALIBRATION_FIELDS, CALIBRATION_SEED,
                                            canonical_um_per_px)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="allseg-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # The graph's shapes are symbolic (any H, W): ONNX's own shape inference suffices.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        write_atomic(out_path, lambda dest: quantize_static(
            str(prepared), str(dest), Fields(), quant_format=QuantFormat.QDQ,
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8))
    return Path(out_path)


def check_int8(int8_runner: OnnxRunner, fp32_runner: OnnxRunner,
               canonical_um_per_px: float) -> dict[str, float]:
    """Compare the int8 and float32 segmenters on a synthetic field not used to calibrate.

    Returns ``{"class_agreement", "centre_mean_diff"}``; raises ModelError naming the
    int8 file when either misses its bound.
    """
    (batch,) = synthetic_fields(1, CALIBRATION_SEED + 1, canonical_um_per_px)
    try:
        got = int8_runner(batch)
    except Exception as exc:  # onnxruntime raises its own types
        raise ModelError(f"{int8_runner.path}: onnxruntime failed on the int8 graph ({exc}); "
                         "delete it or re-run 'allseg export --int8'") from exc
    expected = fp32_runner(batch)
    if got.shape != expected.shape:
        raise ModelError(f"{int8_runner.path}: output {got.shape}, float32 gives "
                         f"{expected.shape}; re-run 'allseg export --int8'")
    figures = {
        "class_agreement": float((got[:, :3].argmax(1) == expected[:, :3].argmax(1)).mean()),
        "centre_mean_diff": float(np.abs(got[:, 3] - expected[:, 3]).mean()),
    }
    if (figures["class_agreement"] < MIN_CLASS_AGREEMENT
            or figures["centre_mean_diff"] > MAX_CENTRE_MEAN_DIFF):
        raise ModelError(f"{int8_runner.path}: the int8 segmenter strays from float32 "
                         f"(class agreement {figures['class_agreement']:.4f} < "
                         f"{MIN_CLASS_AGREEMENT} or mean centre difference "
                         f"{figures['centre_mean_diff']:.4f} > {MAX_CENTRE_MEAN_DIFF}); "
                         "use --backend onnx")
    return figures
