"""Leukocyte detection under stain and camera shifts: a lab allseg never saw, simulated.

Every image of TXL-PBC fold 0 and of BCCD ``test`` (both held out of the default recipe)
is copied with one shift at a time: haematoxylin up and eosin down or the reverse (HED
space), hue turned by +-20 degrees, a tungsten-yellow white balance, soft focus with heavy
JPEG, an under-exposed (x0.55), a dark (x0.25) and an over-exposed (x1.5, clipped), a
washed-out and a vignetting camera, a photo through an eyepiece (round field, black
corners), a monochrome camera, and a field squashed to 224 x 224 as image-classification
sets store smears (red cells ~25 px across, no longer round).
The boxes move with the pixels (YOLO's are fractions of the image; BCCD's are rescaled).
Each copy is scored like ``make eval`` (detection F1 per source, red-cell boxes holding a
predicted leukocyte).
Writes ``bench/stain/results.json`` and prints a Markdown table; the copies are kept in
``bench/stain/data`` (gitignored) and reused.

    .venv/bin/python bench/stain_shift.py
    .venv/bin/python bench/stain_shift.py --shift "monochrome camera"   # rerun one
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage.color import hed2rgb, rgb2hed
from source_figures import figures

from allseg.evaluation.run import evaluate
from allseg.evaluation.splits import select
from allseg.io.atomic import write_json_atomic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HERE = Path(__file__).resolve().parent / "stain"


@dataclass(frozen=True)
class Source:
    """A labelled set on disk: where its images and label files are, and which to use."""

    root: Path
    fmt: str
    images: str
    labels: str
    label_suffix: str
    extra_files: tuple[str, ...]  # copied as they are (class names, split lists)

    def stems(self) -> list[str]:
        if self.fmt == "voc":
            return (self.root / "ImageSets" / "Main" / "test.txt").read_text().split()
        return select(sorted(p.stem for p in (self.root / self.images).iterdir()), "fold-0/5")


SOURCES = {
    "txl": Source(DATA / "txl_pbc" / "train", "yolo", "images", "labels", ".txt",
                  ("classes.txt",)),
    "bccd": Source(DATA / "bccd" / "BCCD", "voc", "JPEGImages", "Annotations", ".xml",
                   ("ImageSets/Main/test.txt",)),
}


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


def exposure(gain: float, gamma: float = 1.0, floor: float = 0.0
             ) -> Callable[[np.ndarray], np.ndarray]:
    """A darker (gain < 1), over-exposed (gain > 1: the slide and pale parts clip at
    white) or washed-out (floor > 0, gamma < 1) camera."""
    def shift(image: np.ndarray) -> np.ndarray:
        level = (image / 255.0) ** gamma
        return np.clip(255 * gain * (floor + (1 - floor) * level), 0, 255).astype(np.uint8)
    return shift


def vignetting(image: np.ndarray) -> np.ndarray:
    """Corners darkened to 45% of the centre's brightness, falling off with radius²."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    radius = np.hypot((yy - h / 2) / (h / 2), (xx - w / 2) / (w / 2)) / np.sqrt(2)
    return np.clip(image * (1 - 0.55 * radius[..., None] ** 2), 0, 255).astype(np.uint8)


def soft_jpeg(image: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(cv2.GaussianBlur(image, (0, 0), 1.5)).save(buffer, "JPEG", quality=25)
    return np.asarray(Image.open(buffer))


def eyepiece(image: np.ndarray) -> np.ndarray:
    """A phone on an eyepiece adapter: the round field, its corners black, a soft rim."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    ringed = image.copy()
    ringed[np.hypot(yy - h / 2, xx - w / 2) > 0.5 * max(h, w)] = 8
    return cv2.GaussianBlur(ringed, (5, 5), 0)


def greyscale(image: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)


def squashed(side: int) -> Callable[[np.ndarray], np.ndarray]:
    """The whole photo resized to ``side`` x ``side``, aspect ratio lost."""
    def shift(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return shift


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda image: image,
    "haematoxylin x1.3, eosin x0.7": hed(1.3, 0.7),
    "haematoxylin x0.7, eosin x1.3": hed(0.7, 1.3),
    "hue +20 deg": hue(20),
    "hue -20 deg": hue(-20),
    "tungsten white balance": tungsten,
    "blur 1.5 px + JPEG q25": soft_jpeg,
    "under-exposed (x0.55)": exposure(0.55),
    "dark (x0.25)": exposure(0.25),
    "over-exposed (x1.5)": exposure(1.5),
    "washed out (gamma 0.7, black at 35%)": exposure(1.0, gamma=0.7, floor=0.35),
    "vignetting (corners at 45%)": vignetting,
    "eyepiece photo (round field in black)": eyepiece,
    "monochrome camera": greyscale,
    "squashed to 224 x 224": squashed(224),
}


def folder_name(shift: str) -> str:
    """A file-system name for a shift ("hue +20 deg" and "hue -20 deg" stay apart).

    >>> folder_name("hue +20 deg"), folder_name("hue -20 deg")
    ('hue_plus20_deg', 'hue_minus20_deg')
    """
    spelled = shift.replace("+", "plus").replace("-", "minus")
    return "".join(c if c.isalnum() else "_" for c in spelled)


def shifted_copy(source: Source, name: str, shift: Callable[[np.ndarray], np.ndarray]
                 ) -> Path:
    """A copy of ``source``'s scored images with ``shift`` applied (built once, reused)."""
    root = HERE / "data" / source.fmt / folder_name(name)
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    for folder in (source.images, source.labels):
        (root / folder).mkdir(parents=True)
    for extra in source.extra_files:
        (root / extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.root / extra, root / extra)
    for stem in source.stems():
        label = f"{stem}{source.label_suffix}"
        original = next((source.root / source.images).glob(f"{stem}.*"))
        image = np.asarray(Image.open(original).convert("RGB"))
        shifted = shift(image)
        Image.fromarray(shifted).save(root / source.images / f"{stem}.png")
        (sy, sx) = np.divide(shifted.shape[:2], image.shape[:2])
        if source.fmt == "voc" and (sx, sy) != (1, 1):  # YOLO boxes are fractions: they hold
            rescale_voc_boxes(source.root / source.labels / label, root / source.labels / label,
                              sx, sy)
        else:
            shutil.copy(source.root / source.labels / label, root / source.labels / label)
    (root / ".complete").touch()
    return root


def rescale_voc_boxes(src: Path, dst: Path, sx: float, sy: float) -> None:
    """Copy a Pascal VOC annotation with its image size and boxes scaled by ``sx``, ``sy``."""
    tree = ET.parse(src)
    for element in tree.iter():
        if element.tag in ("width", "xmin", "xmax") and element.text:
            element.text = f"{float(element.text) * sx:.1f}"
        elif element.tag in ("height", "ymin", "ymax") and element.text:
            element.text = f"{float(element.text) * sy:.1f}"
    tree.write(dst)


def parse_args(description: str) -> tuple[argparse.Namespace, list[str]]:
    """``--model`` and ``--shift`` of a shift benchmark, and the shift names to run (all
    without ``--shift``); an unknown name stops with the list of known ones."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="default")
    parser.add_argument("--shift", dest="shifts", action="append",
                        help="a shift to (re)run, repeatable (names hold commas); the others "
                        "keep their figures from results.json")
    args = parser.parse_args()
    names = list(SHIFTS) if args.shifts is None else args.shifts
    if unknown := [n for n in names if n not in SHIFTS]:
        parser.error(f"unknown shift(s) {unknown}; choose from {list(SHIFTS)}")
    return args, names


def main() -> None:
    args, names = parse_args(__doc__.splitlines()[0])
    chosen = {n: SHIFTS[n] for n in names}
    for source in SOURCES.values():
        if not source.root.is_dir():
            raise SystemExit(f"{source.root} is absent: this benchmark needs ../shared/data")
    saved = HERE / "results.json"
    results: dict[str, dict] = {}
    if args.shifts is not None and saved.exists():
        results = json.loads(saved.read_text())["shifts"]
    for name, shift in chosen.items():
        results[name] = {}
        for key, source in SOURCES.items():
            root = shifted_copy(source, name, shift)
            out = HERE / "eval" / source.fmt / root.name
            split = "test" if source.fmt == "voc" else None
            evaluate(root, out, model=args.model, fmt=source.fmt, split=split)
            per = figures(out, split_by_prefix=key == "txl")
            results[name].update({key if s == "all" else s: v for s, v in per.items()})
        print(name, json.dumps(results[name]), flush=True)
    write_json_atomic(saved, {"model": args.model, "shifts": results})
    columns = ("raabin", "pbc", "bcd", "bccd")
    print("| shift | " + " | ".join(f"{c} F1 (FP/FN)" for c in columns)
          + " | red-cell boxes hit, worst source | scale error p95, worst source "
          "| photos called ALL suspected (all normal) |")
    print("| --- " * (len(columns) + 4) + "|")
    for name, per in results.items():
        cells = [f"{per[c]['detection_f1']:.3f} ({per[c]['fp']}/{per[c]['fn']})"
                 for c in columns]
        hit = max(per[c]["red_cells_hit_rate"] for c in columns)
        scale = max(per[c]["scale_error_p95"] for c in columns)
        called = sum(per[c].get("photos_with_blast", 0) for c in columns)
        photos = sum(per[c]["images"] for c in columns)
        print(f"| {name} | {' | '.join(cells)} | {hit:.2%} | {scale:.0%} | {called} of {photos} |")


if __name__ == "__main__":
    main()
