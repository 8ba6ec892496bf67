"""``make bench``: end-to-end speed of the bundled model, beside eager torch and a reference U-Net.

Writes ``bench/results.json`` and prints a table. Everything is measured in this one run
on this machine: warm medians, seconds per stage, a folder of 50 images, peak memory,
model FLOPs and the machine's own matrix-multiply rate (the hardware's ceiling).
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from allseg.inference.backends import resolve_backend
from allseg.inference.batch import predict_files
from allseg.inference.predictor import Predictor
from allseg.io.atomic import write_image_atomic, write_json_atomic
from allseg.models import build_model
from allseg.outputs.writers import write_image_outputs
from allseg.synth import generate_field

RUNS = 5
OUT = Path(__file__).with_name("results.json")
#: ONNX Runtime float32, its int8 segmenter, and eager PyTorch; ``--backend auto`` (the
#: default) is one of them, recorded as the machine's ``default_backend``.
BACKENDS = ("onnx", "onnx-int8", "torch")
#: name -> (height, width, µm per pixel): an ALL-IDB1 field and a BCCD-sized photo.
IMAGES = {"allidb1_2592x1944": (1944, 2592, 0.09), "bccd_640x480": (480, 640, 0.067)}


def median(fn, runs: int = RUNS) -> float:  # noqa: ANN001
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(n: int = 2048) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n**3 / median(lambda: a @ b) / 1e9


def stage_times(predictor: Predictor, path: Path, tmp: Path) -> dict:
    """Median seconds per stage over RUNS warm runs, from decoding the JPEG to writing
    every output file; the scale is estimated from the image, as for a user."""
    rows = []
    for i in range(RUNS + 1):
        result, image = predictor.predict_path(path)
        start = time.perf_counter()
        write_image_outputs(result, image, tmp, f"bench{i}")
        result.timings["write"] = time.perf_counter() - start
        rows.append(result.timings)
    rows = rows[1:]
    out = {k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}
    out["end_to_end"] = round(statistics.median(r["total"] + r["write"] for r in rows), 4)
    out["end_to_end_p90"] = round(float(np.percentile([r["total"] + r["write"] for r in rows],
                                                      90)), 4)
    out["cells"] = result.leukocyte_count
    return out


def segmenter_input(predictor: Predictor, image: np.ndarray, um: float) -> torch.Tensor:
    h, w = image.shape[:2]
    f = um / predictor.canonical
    return torch.rand(1, 3, round(h * f), round(w * f)) * 255


def forward_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return median(lambda: model(x), runs=3)


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def peak_rss_mb(image_path: Path) -> float:
    """Peak resident memory (VmHWM) of a fresh ``allseg predict`` process on one image.

    Read inside the child: rusage's maxrss would also count the pages of this (large)
    benchmark process that the child shared between fork and exec.
    """
    code = ("import sys\nfrom allseg.cli import main\n"
            f"sys.argv = ['allseg', 'predict', {str(image_path)!r}, '--out', "
            f"{str(image_path.parent / 'rss')!r}]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print([ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return int(done.stdout.strip().splitlines()[-1].split()[1]) / 1024


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    results: dict = {"machine": {"python": platform.python_version(), "cpu_count":
                                 torch.get_num_threads(), "processor": platform.processor(),
                                 "matmul_gflops": round(matmul_gflops(), 1),
                                 "default_backend": resolve_backend("auto")},
                     "date": time.strftime("%Y-%m-%d"), "images": {}}
    predictors = {backend: Predictor("default", backend=backend) for backend in BACKENDS}
    default = predictors[results["machine"]["default_backend"]]
    onnx, seg_eager = predictors["onnx"], predictors["torch"].segmenter.model
    reference = build_model("unet_small", base_channels=64, depth=4)  # 64..1024 channels
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (h, w, um) in IMAGES.items():
            image = generate_field(np.random.default_rng(7), h, w, um).image
            path = tmp / f"{name}.jpg"
            write_image_atomic(path, image)
            x = segmenter_input(onnx, image, um)
            results["images"][name] = {
                **{f"{b}_stages_s": stage_times(p, path, tmp) for b, p in predictors.items()},
                "segmenter_input": list(x.shape),
                "segmenter_gflops": round(gflops(seg_eager, x), 2),
                "reference_unet_forward_s": round(forward_seconds(reference, x), 3),
                "reference_unet_gflops": round(gflops(reference, x), 2),
            }
            print(name, json.dumps(results["images"][name]))
        folder = tmp / "folder"
        folder.mkdir()
        from PIL import Image

        for i in range(50):
            field = generate_field(np.random.default_rng(100 + i), 1944, 2592, 0.09).image
            Image.fromarray(field).save(folder / f"f{i:02d}.jpg", quality=92)
        start = time.perf_counter()
        predict_files(default, [folder], tmp / "folder_out", progress=False)
        results["folder_50_fields"] = {"images_per_s": round(50 / (time.perf_counter() - start),
                                                             3), "workers": 1}
        results["peak_rss_mb_one_field"] = round(peak_rss_mb(folder / "f00.jpg"), 1)
        # A 10000x10000 mosaic of fields: tiling must keep memory bounded.
        huge = tmp / "huge_10000x10000.jpg"
        field = np.asarray(Image.open(folder / "f00.jpg"))
        Image.fromarray(np.ascontiguousarray(np.tile(field, (6, 4, 1))[:10000, :10000])).save(
            huge, quality=90)
        start = time.perf_counter()
        results["image_10000x10000"] = {"peak_rss_mb": round(peak_rss_mb(huge), 1),
                                        "seconds": round(time.perf_counter() - start, 2)}
    results["bench_process_peak_rss_mb"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    write_json_atomic(OUT, results)
    print_table(results)


def print_table(r: dict) -> None:
    print(f"\nmachine: {r['machine']}")
    print("| image | backend | decode | scale | segmenter | postprocess | classifier | write |"
          " end-to-end s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    default = r["machine"]["default_backend"]
    for name, row in r["images"].items():
        for backend in BACKENDS:
            s = row[f"{backend}_stages_s"]
            label = f"{backend} (default)" if backend == default else backend
            print(f"| {name} | {label} | {s.get('decode', 0):.3f} | {s['scale']:.3f} | "
                  f"{s['segmenter']:.3f} | {s['postprocess']:.3f} | {s['classifier']:.3f} | "
                  f"{s['write']:.3f} | {s['end_to_end']:.3f} |")
        print(f"| {name} | reference U-Net 64-1024, forward only | | | "
              f"{row['reference_unet_forward_s']:.3f} | | | | |")
    print(f"default backend: {r['machine']['default_backend']}; folder of 50 fields: "
          f"{r['folder_50_fields']['images_per_s']} images/s; "
          f"peak RSS one field: {r['peak_rss_mb_one_field']} MB; 10000x10000 image: "
          f"{r['image_10000x10000']['seconds']} s (whole process), "
          f"{r['image_10000x10000']['peak_rss_mb']} MB peak")


if __name__ == "__main__":
    main()
