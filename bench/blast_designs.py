"""Three blast designs compared on real normal leukocytes and synthetic fields.

CNN: the bundled classifier's own P(blast) (its blast head switched off). MORPHOMETRY: an
L2-regularised logistic regression on the per-cell features allseg already measures (log
area in µm², N:C, nucleus circularity, chromatin texture, nucleoli, diameter in µm).
COMBINED: the same features plus the CNN's logit (both are
:class:`allseg.models.blast_head.BlastHead`). Every number comes from the Predictor as a
user runs it (scale estimated).

Cells: real normal leukocytes never trained on (BCCD ``test``, Zheng Dataset 1 fold 0, TXL-PBC
fold 0, as in bench/blast_transfer.py); fresh synthetic training cells the CNN never saw
(ALL-IDB2-like crops, seed 5000, and ALL-IDB1-like fields, seed 5100, written under
``bench/blast/data/``); synthetic test fields (``bench/eval/synth``, seed 777).

Honest fits, leave one real source out: the figures on real source S come from a model fit on
the synthetic training cells plus the real normal cells of the other two sources, with the
threshold set from those two (:func:`allseg.training.threshold.threshold_for`: at most 1% of
them called, never below 0.5). The synthetic test figures come from a fit on all three. The
probe: the AUC with which a design ranks synthetic normal test cells above real normal cells
(for source S scored by the model fit without S; pooled over sources by cell count).

    .venv/bin/python bench/blast_designs.py --out bench/blast/designs.json [--refresh]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
from blast_transfer import REAL, zheng_classes  # the same real sets, read the same way

from allseg.data.readers import open_dataset
from allseg.evaluation.metrics import match_points, roc_auc
from allseg.evaluation.splits import select
from allseg.inference.predictor import Predictor
from allseg.io.atomic import write_json_atomic
from allseg.io.images import read_image
from allseg.models.blast_head import FEATURES, BlastHead
from allseg.synth import write_dataset
from allseg.training.threshold import threshold_for

BENCH = Path(__file__).resolve().parent
SYNTH_TRAIN = {"synth-crops": ("allidb2", 300, 5000), "synth-fields": ("allidb1", 20, 5100)}
SYNTH_TEST = ("allidb1", 20, 777)
MATCH_UM = 6.0
COLUMNS = ("source", "image", "cell", "x", "y", "um_per_px", "label", "lymphocyte", "p_cnn",
           *FEATURES)
LABEL = re.compile(r"_([01])$")


# ---------------------------------------------------------------- the per-cell table

def _row(source: str, image: str, k: int, cell, um: float, label: int, lymph: int = 0) -> dict:
    row = {"source": source, "image": image, "cell": k, "x": cell.centroid[0],
           "y": cell.centroid[1], "um_per_px": um, "label": label, "lymphocyte": lymph,
           "p_cnn": cell.blast_probability}
    row.update({f: cell.features.get(f) for f in FEATURES})
    return row


def _image(source: str, image: str, cells: int, um: float, label: int | None = None,
           points: np.ndarray | None = None) -> dict:
    return {"source": source, "image": image, "cells": cells, "um_per_px": um,
            "image_label": label,
            "points": None if points is None else np.asarray(points).tolist()}


def real_cells(predictor: Predictor) -> tuple[list[dict], list[dict]]:
    rows, images, lymph = [], [], zheng_classes()
    for name, (root, fmt, split, names) in REAL.items():
        dataset = open_dataset(root, fmt, split=split, weak_labels=False)
        stems = [p.stem for p in dataset.items]
        wanted = set(select(stems, names))
        for i, stem in enumerate(stems):
            if stem not in wanted:
                continue
            result = predictor.predict_image(dataset[i].image)
            is_lymph = int(name.startswith("zheng") and lymph.get(stem) == 2)
            rows += [_row(name, stem, k, c, result.um_per_px, 0, is_lymph)
                     for k, c in enumerate(result.cells)]
            images.append(_image(name, stem, len(result.cells), result.um_per_px, 0))
        print(name, sum(im["source"] == name for im in images), "photos", flush=True)
    return rows, images


def crop_cells(predictor: Predictor, source: str, folder: Path) -> tuple[list[dict], list[dict]]:
    """ALL-IDB2-like crops: the predicted cell nearest the crop centre, labelled from the name."""
    rows, images = [], []
    for path in sorted(folder.glob("*.tif")):
        image = read_image(path)
        label = int(LABEL.search(path.stem).group(1))
        result = predictor.predict_image(image)
        images.append(_image(source, path.stem, len(result.cells), result.um_per_px, label))
        if not result.cells:
            continue
        centre = np.array([image.shape[1], image.shape[0]]) / 2
        k = int(np.argmin([np.hypot(*(np.asarray(c.centroid) - centre)) for c in result.cells]))
        rows.append(_row(source, path.stem, k, result.cells[k], result.um_per_px, label))
    print(source, len(rows), "cells of", len(images), "crops", flush=True)
    return rows, images


def field_cells(predictor: Predictor, source: str, folder: Path) -> tuple[list[dict], list[dict]]:
    """ALL-IDB1-like fields: a cell is a blast when matched within 6 µm to a true blast point."""
    rows, images = [], []
    for record in open_dataset(folder, "allidb1").iter_records():
        result = predictor.predict_image(record.image)
        um = result.um_per_px
        truth = np.asarray(record.points, float).reshape(-1, 2)
        centroids = np.array([c.centroid for c in result.cells]).reshape(-1, 2)
        near = match_points(centroids, truth, MATCH_UM / um)
        blasts = set(near.pairs[:, 0].tolist()) if len(near.pairs) else set()
        stem = Path(record.source).stem
        rows += [_row(source, stem, k, c, um, int(k in blasts))
                 for k, c in enumerate(result.cells)]
        images.append(_image(source, stem, len(result.cells), um, int(record.image_label), truth))
    print(source, len(rows), "cells of", len(images), "fields", flush=True)
    return rows, images


def build_table(cache: Path, test_folder: Path, refresh: bool) -> tuple[list[dict], list[dict]]:
    cells_csv, images_json = cache / "cells.csv", cache / "images.json"
    if cells_csv.is_file() and images_json.is_file() and not refresh:
        with cells_csv.open() as f:
            rows = list(csv.DictReader(f))
        return rows, json.loads(images_json.read_text())
    predictor = Predictor(model="default", backend="onnx")
    predictor.blast_head = None  # the designs are compared from the CNN's own P(blast)
    rows, images = real_cells(predictor)
    for source, (layout, n, seed) in SYNTH_TRAIN.items():
        folder = cache / f"{layout}-seed{seed}"
        if refresh or not folder.is_dir():
            write_dataset(layout, folder, n=n, seed=seed)
        more = (crop_cells if layout == "allidb2" else field_cells)(predictor, source, folder)
        rows, images = rows + more[0], images + more[1]
    if not (test_folder / "im").is_dir():
        layout, n, seed = SYNTH_TEST
        write_dataset(layout, test_folder, n=n, seed=seed)
    more = field_cells(predictor, "synth-test", test_folder)
    rows, images = rows + more[0], images + more[1]
    cache.mkdir(parents=True, exist_ok=True)
    with cells_csv.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_json_atomic(images_json, images)
    return rows, images


# ---------------------------------------------------------------- the designs

def _cell(row: dict) -> dict:
    """A cached row's features as the predictor gives them (None where not measured)."""
    return {f: None if row[f] in (None, "", "None") else float(row[f]) for f in FEATURES}


class Design:
    """One design, fit on ``train`` rows; ``score`` gives P(blast). MORPHOMETRY and
    COMBINED are :class:`allseg.models.blast_head.BlastHead` without and with the CNN."""

    def __init__(self, name: str, train: list[dict], l2: float = 1.0):
        self.name = name
        self.head = None
        if name != "cnn":
            self.head = BlastHead.fit([_cell(r) for r in train],
                                      [int(r["label"]) for r in train], self._cnn(train),
                                      l2=l2)

    def _cnn(self, rows: list[dict]) -> np.ndarray | None:
        return np.array([float(r["p_cnn"]) for r in rows]) if self.name != "morphometry" else None

    def score(self, rows: list[dict]) -> np.ndarray:
        if self.head is None:
            return np.array([float(r["p_cnn"]) for r in rows])
        return self.head.probabilities([_cell(r) for r in rows], self._cnn(rows))

    def coefficients(self) -> dict | None:
        return None if self.head is None else self.head.weights()


# ---------------------------------------------------------------- figures

def real_figures(rows: list[dict], images: list[dict], source: str, scores: np.ndarray,
                 threshold: float) -> dict:
    called = scores >= threshold
    photos = [im["image"] for im in images if im["source"] == source]
    called_photos = {r["image"] for r, c in zip(rows, called, strict=True) if c}
    out = {"photos": len(photos), "cells": len(rows), "cell_blast_calls": int(called.sum()),
           "cell_blast_call_rate": float(called.mean()) if len(rows) else 0.0,
           "photos_all_suspected": len(called_photos),
           "photo_call_rate": len(called_photos) / max(1, len(photos)),
           "median_p_blast": float(np.median(scores)) if len(rows) else None}
    lymph = np.array([r["lymphocyte"] in (1, "1") for r in rows])
    if lymph.any():
        out["lymphocytes"] = {"cells": int(lymph.sum()), "blast_calls": int(called[lymph].sum()),
                              "median_p_blast": float(np.median(scores[lymph]))}
    return out


def synthetic_figures(rows: list[dict], images: list[dict], scores: np.ndarray,
                      threshold: float) -> dict:
    tp = fp = fn = correct = 0
    for im in images:
        mine = [k for k, r in enumerate(rows) if r["image"] == im["image"]]
        called = np.array([[float(rows[k]["x"]), float(rows[k]["y"])] for k in mine
                           if scores[k] >= threshold]).reshape(-1, 2)
        truth = np.asarray(im["points"], float).reshape(-1, 2)
        match = match_points(called, truth, MATCH_UM / float(im["um_per_px"]))
        tp, fp, fn = tp + match.tp, fp + match.fp, fn + match.fn
        correct += (len(called) > 0) == bool(im["image_label"])
    labels = [int(r["label"]) for r in rows]
    return {"images": len(images), "cells": len(rows), "blast_cells": int(sum(labels)),
            "blast_f1": 2 * tp / max(1, 2 * tp + fp + fn), "tp": tp, "fp": fp, "fn": fn,
            "verdict_accuracy": correct / max(1, len(images)),
            "auc_blast_vs_normal": roc_auc(scores, labels)}


def evaluate(name: str, rows: list[dict], images: list[dict], l2: float) -> dict:
    by = {s: [r for r in rows if r["source"] == s] for s in
          (*REAL, *SYNTH_TRAIN, "synth-test")}
    synth_train = by["synth-crops"] + by["synth-fields"]
    test = by["synth-test"]
    test_normal = [r for r in test if int(r["label"]) == 0]
    out: dict = {"real_normals": {}, "thresholds": {}}
    probe_num = probe_den = 0.0
    for held in REAL:
        others = [r for s in REAL if s != held for r in by[s]]
        design = Design(name, synth_train + others, l2)
        threshold = threshold_for(design.score(others))
        scores = design.score(by[held])
        out["thresholds"][f"without {held}"] = threshold
        out["real_normals"][held] = real_figures(by[held], images, held, scores, threshold)
        auc = roc_auc(np.r_[design.score(test_normal), scores],
                      [1] * len(test_normal) + [0] * len(scores))
        out["real_normals"][held]["probe_auc"] = auc
        probe_num, probe_den = probe_num + auc * len(scores), probe_den + len(scores)
    real = [r for s in REAL for r in by[s]]
    calls = sum(f["cell_blast_calls"] for f in out["real_normals"].values())
    photos = sum(f["photos_all_suspected"] for f in out["real_normals"].values())
    n_photos = sum(f["photos"] for f in out["real_normals"].values())
    out["real_total"] = {"cells": len(real), "cell_blast_calls": calls,
                         "cell_blast_call_rate": calls / max(1, len(real)),
                         "photos": n_photos, "photos_all_suspected": photos,
                         "photo_call_rate": photos / max(1, n_photos)}
    design = Design(name, synth_train + real, l2)
    threshold = threshold_for(design.score(real))
    out["thresholds"]["all real sources"] = threshold
    test_images = [im for im in images if im["source"] == "synth-test"]
    out["synthetic_test"] = synthetic_figures(test, test_images, design.score(test), threshold)
    out["probe_auc"] = probe_num / max(1, probe_den)
    out["probe_auc_in_sample"] = roc_auc(
        np.r_[design.score(test_normal), design.score(real)],
        [1] * len(test_normal) + [0] * len(real))
    out["synthetic_train_auc"] = roc_auc(design.score(synth_train),
                                         [int(r["label"]) for r in synth_train])
    out["coefficients_standardised"] = design.coefficients()
    return out


def table(report: dict) -> str:
    head = (f"{'design':12} {'BCCD':>9} {'Zheng':>9} {'(lymph)':>7} {'TXL':>9} {'photos':>9} "
            f"{'synth F1':>8} {'verdict':>7} {'AUC':>6} {'probe':>6}")
    lines = [head]
    for name, d in report["designs"].items():
        r = d["real_normals"]

        def cells(s: str, r: dict = r) -> str:
            return f"{r[s]['cell_blast_calls']}/{r[s]['cells']}"

        lymph = r["zheng-fold0"].get("lymphocytes", {})
        t, s = d["real_total"], d["synthetic_test"]
        lines.append(
            f"{name:12} {cells('bccd-test'):>9} {cells('zheng-fold0'):>9} "
            f"{lymph.get('blast_calls', 0)}/{lymph.get('cells', 0):<5} {cells('txl-fold0'):>9} "
            f"{t['photos_all_suspected']}/{t['photos']:<5} {s['blast_f1']:8.3f} "
            f"{s['verdict_accuracy']:7.2f} {s['auc_blast_vs_normal']:6.3f} {d['probe_auc']:6.3f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=BENCH / "blast" / "designs.json", type=Path)
    parser.add_argument("--cache", default=BENCH / "blast" / "data", type=Path,
                        help="synthetic data and the per-cell table (gitignored)")
    parser.add_argument("--synth", default=BENCH / "eval" / "synth", type=Path,
                        help="synthetic test fields (seed 777; written when absent)")
    parser.add_argument("--l2", default=1.0, type=float)
    parser.add_argument("--refresh", action="store_true", help="predict again")
    args = parser.parse_args()
    start = time.perf_counter()
    rows, images = build_table(args.cache, args.synth, args.refresh)
    report = {"features": list(FEATURES), "l2": args.l2, "cells": {}, "designs": {}}
    for source in (*REAL, *SYNTH_TRAIN, "synth-test"):
        mine = [int(r["label"]) for r in rows if r["source"] == source]
        report["cells"][source] = {"cells": len(mine), "blasts": int(sum(mine)),
                                   "photos": sum(im["source"] == source for im in images)}
    for name in ("cnn", "morphometry", "combined"):
        report["designs"][name] = evaluate(name, rows, images, args.l2)
    report["seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(args.out, report)
    print(table(report))
    for name in ("morphometry", "combined"):
        print(name, json.dumps({k: round(v, 3) for k, v in
                                report["designs"][name]["coefficients_standardised"].items()}))


if __name__ == "__main__":
    main()
