"""Blast calls on real normal leukocytes and synthetic fields, with the scale estimated.

Real normal cells never trained on: BCCD ``test``, Zheng Dataset 1 fold 0 (its lymphocytes,
class 2 of its class file, reported apart) and TXL-PBC fold 0. For each: per-cell blast calls
and the share of photos called "ALL suspected". Synthetic: 20 fresh ALL-IDB1-like fields
(``--synth``, seed 777 as in make eval). The real-vs-synthetic probe: the AUC with which
P(blast) tells synthetic normal cells from real ones (0.5: the classifier does not care where
a normal cell comes from; far from 0.5: it learned the domain, a shortcut).

    .venv/bin/python bench/blast_transfer.py --model default --out bench/blast/default.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from allseg.data.readers import open_dataset
from allseg.evaluation.metrics import match_points, roc_auc
from allseg.evaluation.splits import select
from allseg.inference.predictor import Predictor
from allseg.io.atomic import write_json_atomic

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ZHENG = DATA / "zheng_wbc" / "Dataset 1"
REAL = {  # name -> (folder, format, reader split, name split)
    "bccd-test": (DATA / "bccd" / "BCCD", "voc", "test", None),
    "zheng-fold0": (ZHENG, "masks", None, "fold-0/5"),
    "txl-fold0": (DATA / "txl_pbc" / "train", "yolo", None, "fold-0/5"),
}


def zheng_classes() -> dict[str, int]:
    path = ZHENG.parent / "Class Labels of Dataset 1.csv"
    rows = csv.reader(path.open(encoding="utf-8-sig"))
    next(rows)
    return {f"{int(r[0]):03d}": int(r[1]) for r in rows if r}


def real_normals(predictor: Predictor) -> tuple[dict, list[float]]:
    out, all_probs = {}, []
    lymph = zheng_classes()
    for name, (root, fmt, split, names) in REAL.items():
        if not root.is_dir():
            continue
        dataset = open_dataset(root, fmt, split=split, weak_labels=False)
        stems = [p.stem for p in dataset.items]
        wanted = set(select(stems, names))
        probs, lymph_probs, called_images, images = [], [], 0, 0
        for i, stem in enumerate(stems):
            if stem not in wanted:
                continue
            result = predictor.predict_image(dataset[i].image)
            cell_probs = [c.blast_probability for c in result.cells]
            probs += cell_probs
            if name.startswith("zheng") and lymph.get(stem) == 2:
                lymph_probs += cell_probs
            images += 1
            called_images += result.blast_count > 0
        threshold = predictor.thresholds["blast_probability"]
        probs_a = np.asarray(probs)
        out[name] = {"images": images, "cells": len(probs),
                     "cell_blast_calls": int((probs_a >= threshold).sum()),
                     "cell_blast_call_rate": float((probs_a >= threshold).mean()) if probs else 0,
                     "images_all_suspected": called_images,
                     "image_call_rate": called_images / max(1, images),
                     "median_p_blast": float(np.median(probs_a)) if probs else None}
        if lymph_probs:
            lp = np.asarray(lymph_probs)
            out[name]["lymphocytes"] = {"cells": len(lp),
                                        "blast_calls": int((lp >= threshold).sum()),
                                        "median_p_blast": float(np.median(lp))}
        all_probs += probs
        print(name, json.dumps(out[name]), flush=True)
    return out, all_probs


def synthetic(predictor: Predictor, folder: Path) -> tuple[dict, list[float]]:
    dataset = open_dataset(folder, "allidb1")
    tp = fp = fn = correct = 0
    normal_probs = []
    for record in dataset.iter_records():
        result = predictor.predict_image(record.image)
        um = result.um_per_px
        blasts = np.array([c.centroid for c in result.cells if c.is_blast]).reshape(-1, 2)
        truth = np.asarray(record.points, float).reshape(-1, 2)
        match = match_points(blasts, truth, 6.0 / um)
        tp, fp, fn = tp + match.tp, fp + match.fp, fn + match.fn
        correct += (result.blast_count > 0) == bool(record.image_label)
        centroids = np.array([c.centroid for c in result.cells]).reshape(-1, 2)
        near_truth = match_points(centroids, truth, 6.0 / um)
        blast_cells = set(near_truth.pairs[:, 0].tolist()) if len(near_truth.pairs) else set()
        normal_probs += [c.blast_probability for k, c in enumerate(result.cells)
                         if k not in blast_cells]
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    out = {"images": len(dataset), "blast_f1": f1, "tp": tp, "fp": fp, "fn": fn,
           "verdict_accuracy": correct / max(1, len(dataset))}
    print("synthetic", json.dumps(out), flush=True)
    return out, normal_probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--synth", default="bench/eval/synth", type=Path)
    parser.add_argument("--out", default="bench/blast/default.json", type=Path)
    args = parser.parse_args()
    predictor = Predictor(args.model, backend="onnx")
    real, real_probs = real_normals(predictor)
    synth, synth_normal_probs = synthetic(predictor, args.synth)
    probe = roc_auc(synth_normal_probs + real_probs,
                    [1] * len(synth_normal_probs) + [0] * len(real_probs))
    report = {"model": args.model, "threshold": predictor.thresholds["blast_probability"],
              "real_normals": real, "synthetic": synth,
              "probe_auc_synthetic_vs_real_normals": probe}
    print("probe AUC (P(blast): synthetic normal vs real normal)", probe)
    write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
