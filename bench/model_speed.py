"""CPU speed of each segmenter: eager torch (NCHW, channels_last) and onnxruntime.

Run: ``.venv/bin/python bench/model_speed.py`` (writes ``bench/model_speed.json``).
Warm median of 5 runs, 2 threads everywhere (a typical laptop / CI core budget),
default configs with random weights (speed does not depend on the weight values).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from allseg.models import ARCHITECTURES, build_model, export_onnx

SIZES = ((768, 1024), (512, 512))
RUNS = 5
THREADS = 2
OUT = Path(__file__).with_name("model_speed.json")


def median_ms(fn: Callable[[], object]) -> float:
    fn()  # warm-up: allocations, kernel selection
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def bench_arch(arch: str, onnx_dir: Path) -> list[dict]:
    model = build_model(arch).eval()
    params = sum(p.numel() for p in model.parameters())
    weights_mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 1e6
    onnx_path = export_onnx(model, onnx_dir / f"{arch}.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    model_cl = build_model(arch).eval().to(memory_format=torch.channels_last)
    model_cl.load_state_dict(model.state_dict())
    rows = []
    for h, w in SIZES:
        x = torch.rand(1, 3, h, w) * 255
        x_cl = x.contiguous(memory_format=torch.channels_last)
        x_np = x.numpy()
        with torch.inference_mode():
            rows.append({
                "arch": arch, "input": f"1x3x{h}x{w}", "params": params,
                "weights_mb": round(weights_mb, 2),
                "torch_ms": median_ms(lambda x=x: model(x)),
                "torch_channels_last_ms": median_ms(lambda x=x_cl: model_cl(x)),
                "onnxruntime_ms": median_ms(lambda x=x_np: session.run(None, {"image": x})),
            })
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    torch.set_num_threads(THREADS)
    segmenters = [a for a, cls in ARCHITECTURES.items() if cls.task == "segment"]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row for arch in segmenters for row in bench_arch(arch, Path(tmp))]
    header = ("arch", "input", "params", "weights_mb", "torch_ms", "torch_channels_last_ms",
              "onnxruntime_ms")
    print("\n" + " | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))
    OUT.write_text(json.dumps({"threads": THREADS, "runs": RUNS, "torch": torch.__version__,
                               "onnxruntime": ort.__version__, "numpy": np.__version__,
                               "results": rows}, indent=2) + "\n")
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
