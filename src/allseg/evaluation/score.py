"""Score a predictor against whatever labels a dataset reader gives (DESIGN.md, "Metrics").

Per image, each kind of label present is scored:

- ``parts`` (drawn, not ``weak``): pixel Dice/IoU of the nucleus (255) and the whole
  cell (> 0), per image and pooled over images (the nucleus only where the mask draws
  one: a two-value cell mask read as all cytoplasm does not);
- ``instances`` (not ``weak``): instance matching at IoU 0.5 and 0.75;
- ``points`` or ``cell_labels`` (whole fields, not single-cell crops): predicted blast
  centroids against true blast centroids (``points``, else the centroids of instances
  labelled blast) within half a leukocyte diameter;
- ``boxes``: every predicted leukocyte centroid against the boxes;
- ``um_per_px`` (stated, or from the red-cell boxes): the estimated scale's relative
  error (``scale_error``, predicted / true - 1);
- ``image_label``: the verdict, scored by the image's highest blast probability;
- ``crop_label`` (ALL-IDB2 crops): the crop is predicted as an image and the cell nearest
  the crop centre stands for it (probability 0, "not blast", when no cell is found);
- cell level: the blast probability of each predicted cell matched to a true labelled
  instance (``instances`` with ``cell_labels``, not ``weak``, whole fields), or, with
  ``all_normal`` (photos of healthy blood), of every predicted cell, labelled normal (only
  those inside a leukocyte box where the record has boxes); lists ``cell_scores`` and
  ``cell_labels`` per image, pooled for calibration and the blast-call rate.

The scale is estimated by the predictor, as for a user, unless ``um_per_px`` is given.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from rich.progress import track
from scipy import ndimage

from allseg.data.readers.base import Dataset
from allseg.data.record import BLAST, NUCLEUS, Record
from allseg.errors import InputError
from allseg.evaluation.metrics import (
    Counts,
    PixelCounts,
    binary_classification,
    boxes_hit,
    match_instances,
    match_points,
    match_points_to_boxes,
    panoptic_quality,
    pixel_counts,
    points_in_boxes,
)
from allseg.outputs.schema import ALL_SUSPECTED, ImageResult

#: Half a typical leukocyte diameter (12 µm): the blast-point matching radius.
POINT_RADIUS_UM = 6.0
IOU_THRESHOLDS = {"iou50": 0.5, "iou75": 0.75}


class ImagePredictor(Protocol):
    def predict_image(self, image: np.ndarray, name: str = ..., um_per_px: float | None = ...,
                      cell_diameter_px: float | None = ...) -> ImageResult: ...


def _counts(prefix: str, counts: Counts) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in counts.as_dict().items()}


def _centroids(instances: np.ndarray, ids: list[int]) -> np.ndarray:
    """``(x, y)`` centroids of the given instance ids."""
    if not ids:
        return np.zeros((0, 2))
    yx = ndimage.center_of_mass(instances > 0, instances, ids)
    return np.asarray(yx, float).reshape(-1, 2)[:, ::-1]


def _true_blasts(record: Record) -> np.ndarray | None:
    """Blast centroids: ALL-IDB1 points, else cells labelled by a person or the generator
    (a box dataset's weak masks say "leukocyte", not "not a blast")."""
    if record.points is not None:
        return np.asarray(record.points, float).reshape(-1, 2)
    if record.cell_labels is not None and record.instances is not None and not record.weak:
        ids = sorted(k for k, v in record.cell_labels.items() if v == BLAST)
        return _centroids(record.instances, ids)
    return None


def _matched_cells(result: ImageResult, record: Record, centroids: np.ndarray,
                   radius: float) -> tuple[list[float], list[int]]:
    """P(blast) and the true 0/1 label of each predicted cell matched to a labelled instance."""
    present = set(np.unique(record.instances).tolist())
    ids = sorted(k for k in record.cell_labels if k in present)
    match = match_points(centroids, _centroids(record.instances, ids), radius)
    return ([float(result.cells[p].blast_probability) for p, _ in match.pairs],
            [int(record.cell_labels[ids[t]] == BLAST) for _, t in match.pairs])


def _normal_cells(result: ImageResult, record: Record,
                  centroids: np.ndarray) -> tuple[list[float], list[int]]:
    """P(blast) of every predicted cell of a healthy-blood photo, all labelled normal; with
    leukocyte boxes only the cells inside one (a red cell taken for a leukocyte is no
    normal leukocyte)."""
    keep = (np.ones(len(centroids), bool) if record.boxes is None
            else points_in_boxes(centroids, record.boxes))
    scores = [float(c.blast_probability) for c, k in zip(result.cells, keep, strict=True) if k]
    return scores, [0] * len(scores)


def score_image(result: ImageResult, record: Record, point_radius_um: float | None = None,
                all_normal: bool = False) -> dict[str, Any]:
    """Every per-image figure the record's labels allow (flat keys, see the module doc);
    ``all_normal``: every leukocyte of the image is normal, whatever the record says."""
    row: dict[str, Any] = {"image": record.name, "leukocyte_count": result.leukocyte_count,
                           "blast_count": result.blast_count, "um_per_px": result.um_per_px,
                           "seconds": result.seconds}
    centroids = np.array([c.centroid for c in result.cells], float).reshape(-1, 2)
    if record.parts is not None and not record.weak:
        true_cell = record.parts > 0
        true_nucleus = record.parts == NUCLEUS
        if true_nucleus.any() or not true_cell.any():  # cells without nucleus: not drawn
            row |= _counts("nucleus", pixel_counts(result.parts == NUCLEUS, true_nucleus))
        row |= _counts("cell", pixel_counts(result.parts > 0, true_cell))
    if record.instances is not None and not record.weak:
        for key, thresh in IOU_THRESHOLDS.items():
            row |= _counts(key, match_instances(result.instances, record.instances, thresh))
    true_blasts = None if record.crop_label is not None else _true_blasts(record)
    um = result.um_per_px or record.um_per_px
    radius = (point_radius_um or POINT_RADIUS_UM) / um if um else None
    if true_blasts is not None and radius:
        blasts = centroids[np.array([c.is_blast for c in result.cells], bool)]
        row |= _counts("blast", match_points(blasts, true_blasts, radius))
    if all_normal:
        row["cell_scores"], row["cell_labels"] = _normal_cells(result, record, centroids)
    elif (radius and record.instances is not None and record.cell_labels is not None
          and not record.weak and record.crop_label is None):
        row["cell_scores"], row["cell_labels"] = _matched_cells(result, record, centroids,
                                                                radius)
    if record.boxes is not None:
        row |= _counts("box", match_points_to_boxes(centroids, record.boxes))
    if record.red_cell_boxes is not None:
        hit, scored = boxes_hit(centroids, record.red_cell_boxes, unless_in=record.boxes
                                if record.boxes is not None else ())
        row |= {"red_cells": scored, "red_cells_hit": hit}
    if record.um_per_px:
        row |= {"true_um_per_px": record.um_per_px,
                "scale_error": result.um_per_px / record.um_per_px - 1.0}
    if record.image_label is not None:
        probs = [c.blast_probability for c in result.cells]
        row |= {"image_label": int(record.image_label), "verdict": result.verdict,
                "image_called": result.verdict == ALL_SUSPECTED,
                "image_score": float(max(probs, default=0.0))}
    if record.crop_label is not None:
        h, w = record.shape
        near = (np.hypot(*(centroids - [(w - 1) / 2, (h - 1) / 2]).T).argmin()
                if result.cells else None)
        cell = None if near is None else result.cells[int(near)]
        row |= {"crop_label": int(record.crop_label),
                "crop_called": bool(cell is not None and cell.is_blast),
                "crop_score": 0.0 if cell is None else float(cell.blast_probability)}
    return row


def _rows_with(rows: list[dict], key: str) -> list[dict]:
    return [r for r in rows if key in r]


def _pooled(rows: list[dict], prefix: str, kind: type[Counts] = Counts) -> Counts:
    return kind(*(sum(int(r[f"{prefix}_{k}"]) for r in rows) for k in ("tp", "fp", "fn")))


@dataclass
class EvalResult:
    """Per-image rows (flat dicts) and the pooled summary computed from them."""

    per_image: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)
    threshold: float = 0.5

    def summary(self) -> dict[str, Any]:
        """Pooled figures with their counts; a section only for label kinds present."""
        rows = self.per_image
        out: dict[str, Any] = {"images": len(rows), "failures": list(self.failures)}
        for part in ("nucleus", "cell"):
            if scored := _rows_with(rows, f"{part}_tp"):
                out.setdefault("pixel", {})[part] = {
                    "images": len(scored), **_pooled(scored, part, PixelCounts).as_dict(),
                    "mean_dice_per_image": float(np.mean([r[f"{part}_dice"] for r in scored]))}
        if scored := _rows_with(rows, "iou50_tp"):
            out["instances"] = {"images": len(scored)}
            for key in IOU_THRESHOLDS:
                c = _pooled(scored, key)
                sum_iou = sum(r[f"{key}_sum_iou"] for r in scored)
                out["instances"][key] = {**c.as_dict(), "ap": c.jaccard, "panoptic_quality":
                                         panoptic_quality(sum_iou, c.tp, c.fp, c.fn)}
        if scored := _rows_with(rows, "blast_tp"):
            c = _pooled(scored, "blast")
            distance = sum(r["blast_sum_distance"] for r in scored)
            out["blast_points"] = {"images": len(scored), **c.as_dict(),
                                   "mean_distance_px": distance / c.tp if c.tp else None}
        if scored := _rows_with(rows, "box_tp"):
            out["leukocyte_boxes"] = {"images": len(scored), **_pooled(scored, "box").as_dict()}
        if scored := _rows_with(rows, "red_cells"):
            boxes, hit = (sum(r[k] for r in scored) for k in ("red_cells", "red_cells_hit"))
            out["red_cell_boxes"] = {"images": len(scored), "boxes": boxes, "hit": hit,
                                     "hit_rate": hit / boxes if boxes else 0.0}
        if scored := _rows_with(rows, "scale_error"):
            error = np.abs([r["scale_error"] for r in scored])
            out["scale"] = {"images": len(scored), "median_abs_error": float(np.median(error)),
                            "p95_abs_error": float(np.percentile(error, 95)),
                            "max_abs_error": float(error.max())}
        for level in ("image", "crop"):
            if scored := _rows_with(rows, f"{level}_label"):
                out[f"{level}_level"] = binary_classification(
                    [r[f"{level}_score"] for r in scored], [r[f"{level}_label"] for r in scored],
                    self.threshold, predicted=[r[f"{level}_called"] for r in scored])
        if scored := _rows_with(rows, "cell_scores"):
            out["cell_level"] = self._cell_level(scored)
        return out

    def _cell_level(self, rows: list[dict]) -> dict[str, Any]:
        """Pooled per-cell classification and calibration, and the share of cells called
        blasts: on healthy blood (every label 0) that share is the false-call rate."""
        scores = [s for r in rows for s in r["cell_scores"]]
        figures = binary_classification(scores, [v for r in rows for v in r["cell_labels"]],
                                        self.threshold)
        calls = figures["tp"] + figures["fp"]
        return {"images": len(rows), "cells": len(scores), "blast_calls": calls,
                "blast_call_rate": calls / len(scores) if scores else None, **figures}


def evaluate_dataset(predictor: ImagePredictor, dataset: Dataset,
                     names_filter: Collection[str] | None = None,
                     point_radius_um: float | None = None, um_per_px: float | None = None,
                     progress: bool = True, all_normal: bool = False) -> EvalResult:
    """Predict every image of ``dataset`` (or those whose stem is in ``names_filter``)
    and score it against the labels the reader gives; unreadable files become failures.
    ``all_normal``: every leukocyte of the dataset is normal (healthy donors)."""
    thresholds = getattr(predictor, "thresholds", None) or {}
    result = EvalResult(threshold=float(thresholds.get("blast_probability", 0.5)))
    wanted = [i for i, path in enumerate(dataset.items)
              if names_filter is None or path.stem in names_filter]
    for i in track(wanted, description="evaluate", disable=not progress):
        try:
            record = dataset[i]
        except InputError as exc:
            dataset.warn(f"skipped: {exc}")
            result.failures.append({"image": str(dataset.items[i]), "error": str(exc)})
            continue
        predicted = predictor.predict_image(record.image, str(record.source), um_per_px=um_per_px)
        result.per_image.append(score_image(predicted, record, point_radius_um, all_normal))
    return result
