"""Leukocyte detection under stain and camera shifts: a lab allseg never saw, simulated.

Every image of TXL-PBC fold 0 (held out of the default recipe) is copied with one shift
at a time: haematoxylin up and eosin down or the reverse (HED space), hue turned by
+-20 degrees, a tungsten-yellow white balance, and soft focus with heavy JPEG. Its YOLO
boxes are relative, so they hold unchanged. Each copy is scored like ``make eval``
(detection F1 per source, red-cell boxes holding a predicted leukocyte). Writes
``bench/stain/results.json`` and prints a Markdown table; the copies are kept in
``bench/stain/data`` (gitignored) and reused.

    .venv/bin/python bench/stain_shift.py
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.color import hed2rgb, rgb2hed
from source_figures import figures

from allseg.evaluation.run import evaluate
from allseg.evaluation.splits import select
from allseg.io.atomic import write_json_atomic

TXL = Path(__file__).resolve().parents[2] / "shared" / "data" / "txl_pbc" / "train"
HERE = Path(__file__).resolve().parent / "stain"


def hed(haematoxylin: float, eosin: float) -> Callable[[np.ndarray], np.ndarray]:
    def shift(image: np.ndarray) -> np.ndarray:
        stains = rgb2hed(image)
        stains[..., 0] *= haematoxylin
        stains[..., 1] *= eosin
        return (np.clip(hed2rgb(stains), 0, 1) * 255).astype(np.uint8)
    return shift


def hue(degrees: int) -> Callable[[np.ndarray], np.ndarray]:
    def shift(image: np.ndarray) -> np.ndarray:
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + degrees // 2) % 180  # OpenCV hue: 0-179
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return shift


def tungsten(image: np.ndarray) -> np.ndarray:
    return np.clip(image * np.array([1.05, 0.95, 0.7]) * 0.85, 0, 255).astype(np.uint8)


def soft_jpeg(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(cv2.GaussianBlur(image, (0, 0), 1.5)).save(buffer, "JPEG", quality=25)
    return np.asarray(Image.open(buffer))


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda image: image,
    "haematoxylin x1.3, eosin x0.7": hed(1.3, 0.7),
    "haematoxylin x0.7, eosin x1.3": hed(0.7, 1.3),
    "hue +20 deg": hue(20),
    "hue -20 deg": hue(-20),
    "tungsten white balance": tungsten,
    "blur 1.5 px + JPEG q25": soft_jpeg,
}


def shifted_copy(name: str, shift: Callable[[np.ndarray], np.ndarray], stems: list[str]
                 ) -> Path:
    """A YOLO folder of fold 0 with ``shift`` applied (built once, then reused)."""
    root = HERE / "data" / "".join(c if c.isalnum() else "_" for c in name)
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    shutil.copy(TXL / "classes.txt", root)
    for stem in stems:
        shutil.copy(TXL / "labels" / f"{stem}.txt", root / "labels")
        source = next((TXL / "images").glob(f"{stem}.*"))
        image = np.asarray(Image.open(source).convert("RGB"))
        Image.fromarray(shift(image)).save(root / "images" / f"{stem}.png")
    (root / ".complete").touch()
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    if not TXL.is_dir():
        raise SystemExit(f"{TXL} is absent: this benchmark needs ../shared/data/txl_pbc")
    stems = select(sorted(p.stem for p in (TXL / "images").iterdir()), "fold-0/5")
    results = {}
    for name, shift in SHIFTS.items():
        root = shifted_copy(name, shift, stems)
        out = HERE / "eval" / root.name
        evaluate(root, out, model=args.model, fmt="yolo")
        results[name] = figures(out, split_by_prefix=True)
        print(name, json.dumps(results[name]), flush=True)
    write_json_atomic(HERE / "results.json", {"model": args.model, "images": len(stems),
                                              "shifts": results})
    print("| shift | Raabin F1 (FP/FN) | PBC F1 (FP/FN) | BCD F1 (FP/FN) | red-cell boxes hit, "
          "worst source |")
    print("| --- | --- | --- | --- | --- |")
    for name, per in results.items():
        cells = [f"{per[s]['detection_f1']:.3f} ({per[s]['fp']}/{per[s]['fn']})"
                 for s in ("raabin", "pbc", "bcd")]
        hit = max(per[s]["red_cells_hit_rate"] for s in per)
        print(f"| {name} | {' | '.join(cells)} | {hit:.2%} |")


if __name__ == "__main__":
    main()
