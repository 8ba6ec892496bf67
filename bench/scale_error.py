"""Scale estimate against the truth on every real set, and on resized copies.

Truth: the median side of whole red-cell boxes = 7.5 µm (BCCD, TXL-PBC; with the uncut
sides of border-cut boxes where fewer than three are whole: ``allseg.data.ruler``), or the known
scale (Zheng Dataset 1, 0.17 µm/px from its neutrophils). Each image is also resized by
every factor of ``--factors`` (its true scale divides by the factor), after its brightness
is multiplied by ``--gain`` (a darker camera below 1; the scale is unchanged). Writes
``bench/scale/results.json`` and prints a Markdown table: per set and factor, the median
and 95th-percentile |error| and the worst ratio, with error = estimate / truth - 1.

    .venv/bin/python bench/scale_error.py                 # red cells + the bundled model
    .venv/bin/python bench/scale_error.py --every 4       # every 4th image (faster)
    .venv/bin/python bench/scale_error.py --every 12 --factors 1 --gain 0.2 --out /tmp/d.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from allseg.data.readers import open_dataset
from allseg.inference.predictor import Predictor
from allseg.io.atomic import write_json_atomic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: name -> (folder, format, split, known µm/px or None to take the red-cell ruler, name prefix)
SETS = {
    "bccd": (DATA / "bccd" / "BCCD", "voc", None, None, ""),
    "zheng": (DATA / "zheng_wbc" / "Dataset 1", "masks", None, 0.17, ""),
    "txl-raabin": (DATA / "txl_pbc" / "train", "yolo", None, None, "raabin_"),
    "txl-pbc": (DATA / "txl_pbc" / "train", "yolo", None, None, "pbc_"),
    "txl-bcd": (DATA / "txl_pbc" / "train", "yolo", None, None, "bcd_"),
}


def summarise(ratios: list[float]) -> dict[str, float]:
    errors = np.abs(np.asarray(ratios) - 1.0)
    worst = max(ratios, key=lambda r: max(r, 1 / r))
    return {"n": len(ratios), "median_abs_error": round(float(np.median(errors)), 4),
            "p95_abs_error": round(float(np.percentile(errors, 95)), 4),
            "worst_ratio": round(float(worst), 3),
            "over_2x": int(sum(r > 2 or r < 0.5 for r in ratios))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--every", type=int, default=1, help="use every k-th image")
    parser.add_argument("--factors", default="0.3,0.5,1,2,3")
    parser.add_argument("--gain", type=float, default=1.0,
                        help="multiply every image's brightness by this (a darker camera)")
    parser.add_argument("--out", default="bench/scale/results.json")
    args = parser.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    predictor = Predictor(args.model)
    results: dict[str, dict] = {}
    for name, (root, fmt, split, known, prefix) in SETS.items():
        if not root.is_dir():
            print(f"{name}: {root} absent, skipped")
            continue
        dataset = open_dataset(root, fmt, split=split, weak_labels=False)
        picked = [i for i, p in enumerate(dataset.items) if p.stem.startswith(prefix)]
        ratios: dict[float, list[float]] = {f: [] for f in factors}
        worst: list[tuple[float, str, float]] = []
        for i in picked[:: args.every]:
            record = dataset[i]
            truth = known or record.um_per_px
            if truth is None:
                continue
            original = (record.image if args.gain == 1 else np.clip(
                record.image * args.gain + 0.5, 0, 255).astype(np.uint8))
            h, w = record.shape
            for f in factors:
                size = (max(1, round(w * f)), max(1, round(h * f)))
                interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
                image = original if f == 1 else cv2.resize(original, size,
                                                             interpolation=interp)
                estimate = predictor.estimate_scale(image)
                ratio = estimate.um_per_px / (truth / f)
                ratios[f].append(ratio)
                worst.append((max(ratio, 1 / ratio), f"{record.name}@{f}", ratio))
        results[name] = {str(f): summarise(r) for f, r in ratios.items() if r}
        results[name]["all"] = summarise([r for rs in ratios.values() for r in rs])
        results[name]["worst"] = [[n, round(r, 3)] for _, n, r in sorted(worst)[-5:]]
        print(name, json.dumps(results[name]["all"]), flush=True)
    pooled = {k: v["all"] for k, v in results.items()}
    write_json_atomic(Path(args.out), {"model": args.model, "factors": factors,
                                       "gain": args.gain,
                                       "every": args.every, "sets": results, "pooled": pooled})
    print("| set | factor | n | median abs error | p95 abs error | worst ratio | over 2x |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, per in results.items():
        for key, s in per.items():
            if key != "worst":
                print(f"| {name} | {key} | {s['n']} | {s['median_abs_error']:.3f} | "
                      f"{s['p95_abs_error']:.3f} | {s['worst_ratio']:.2f} | {s['over_2x']} |")


if __name__ == "__main__":
    main()
