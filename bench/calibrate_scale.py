"""Fit the two constants of the scale estimate on tuning images only.

- ``BOX_PER_INSCRIBED`` (allseg.inference.scale): red-cell box side over the granulometry
  diameter, on BCCD ``trainval`` and TXL-PBC folds 1-4 (fold 0 and BCCD ``test`` are
  never looked at);
- ``LEUKOCYTE_SIZE_UM`` (allseg.inference.leukocyte_ruler): median size (geometric mean
  of cell and nucleus equivalent diameters) of the leukocytes the segmenter draws at the
  known scale, on the same images and Zheng Dataset 1 folds 1-4.

    .venv/bin/python bench/calibrate_scale.py --every 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from allseg.data.readers import open_dataset
from allseg.inference import scale
from allseg.inference.predictor import Predictor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TUNING = {  # name -> (folder, format, split, known µm/px, name prefix)
    "bccd-trainval": (DATA / "bccd" / "BCCD", "voc", "trainval", None, ""),
    "zheng-folds1-4": (DATA / "zheng_wbc" / "Dataset 1", "masks", None, 0.17, ""),
    "txl-raabin-folds1-4": (DATA / "txl_pbc" / "train", "yolo", None, None, "raabin_"),
    "txl-pbc-folds1-4": (DATA / "txl_pbc" / "train", "yolo", None, None, "pbc_"),
    "txl-bcd-folds1-4": (DATA / "txl_pbc" / "train", "yolo", None, None, "bcd_"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--every", type=int, default=1)
    args = parser.parse_args()
    predictor = Predictor(args.model)
    box_ratios, sizes_all, report = [], [], {}
    for name, (root, fmt, split, known, prefix) in TUNING.items():
        dataset = open_dataset(root, fmt, split=split, weak_labels=False)
        folds = split is None  # the 5-fold hold-out of the recipe: position % 5 == 0
        picked = [i for i, p in enumerate(dataset.items)
                  if p.stem.startswith(prefix) and not (folds and i % 5 == 0)]
        ratios, sizes = [], []
        for i in picked[:: args.every]:
            record = dataset[i]
            truth = known or record.um_per_px
            if truth is None:
                continue
            estimate = scale.estimate_scale(record.image)
            if known is None and estimate.reliable:
                # estimate.rbc_diameter_px includes the current constant: take it out
                inscribed = estimate.rbc_diameter_px / scale.BOX_PER_INSCRIBED
                ratios.append(scale.RBC_DIAMETER_UM / truth / inscribed)
            seg = predictor._segment(record.image, truth)
            size = predictor._leukocyte_size(seg)
            if size is not None:
                sizes.append(size)
        box_ratios += ratios
        sizes_all += sizes
        report[name] = {"images": len(picked[:: args.every]),
                        "box_per_inscribed": float(np.median(ratios)) if ratios else None,
                        "leukocyte_size_um": float(np.median(sizes)) if sizes else None,
                        "leukocyte_size_q10_q90": np.percentile(sizes, [10, 90]).tolist()
                        if sizes else None}
        print(name, json.dumps(report[name]), flush=True)
    print("BOX_PER_INSCRIBED", round(float(np.median(box_ratios)), 3),
          "LEUKOCYTE_SIZE_UM", round(float(np.median(sizes_all)), 2))


if __name__ == "__main__":
    main()
