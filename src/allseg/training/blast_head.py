"""Fit the blast head (:mod:`allseg.models.blast_head`) on the classifier's validation cells.

The head must see cells as the predictor will: each validation crop (never trained on by
the CNN) is run through the freshly written model folder, and the cell found nearest its
centre gives the morphometry and the CNN's P(blast). The threshold comes from cross-fitted
probabilities (each cell scored by a head fitted without its fold, folds by patient/image)
of the real normal cells, by the rule of :mod:`allseg.training.threshold`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.progress import track

from allseg.evaluation.metrics import roc_auc, roc_auc_interval
from allseg.models.blast_head import BlastHead
from allseg.training.samples import CellSample
from allseg.training.threshold import MAX_FALSE_CALL_RATE, MIN_REAL_NORMALS, threshold_for

#: Fewer measured blasts or normal cells than this fit no head (the CNN decides alone).
MIN_CELLS_PER_CLASS = 20
FOLDS = 5


def measure_cells(model_dir: Path, val: list[CellSample], crop_um: float
                  ) -> tuple[list[CellSample], list[dict], np.ndarray]:
    """The validation samples whose centre cell the predictor finds, its features and the
    CNN's P(blast)."""
    from allseg.inference.predictor import Predictor

    predictor = Predictor(model_dir, backend="torch")
    kept, features, probs = [], [], []
    for sample in track(val, description="measuring validation cells"):
        size = sample.crop.shape[0]
        result = predictor.predict_image(sample.crop, um_per_px=crop_um / size)
        if not result.cells:
            continue
        centroids = np.array([c.centroid for c in result.cells])
        distance = np.hypot(*(centroids - (size - 1) / 2).T)
        if distance.min() > size / 4:  # the labelled cell was not found
            continue
        cell = result.cells[int(distance.argmin())]
        kept.append(sample)
        features.append(cell.features)
        probs.append(cell.blast_probability)
    return kept, features, np.asarray(probs)


def _weights(samples: list[CellSample], type_weights: dict[str, float]) -> np.ndarray:
    return np.array([s.loss_weight(type_weights) for s in samples])


def cross_fitted(samples: list[CellSample], features: list[dict], cnn: np.ndarray,
                 type_weights: dict[str, float], seed: int = 0) -> np.ndarray:
    """Each cell's P(blast) from a head fitted on the other folds (folds by group)."""
    groups = sorted({s.group for s in samples})
    np.random.default_rng(seed).shuffle(groups)
    fold_of = {g: i % FOLDS for i, g in enumerate(groups)}
    folds = np.array([fold_of[s.group] for s in samples])
    labels = np.array([s.label for s in samples])
    weights = _weights(samples, type_weights)
    out = np.full(len(samples), np.nan)
    for k in range(FOLDS):
        test, train = folds == k, folds != k
        if not test.any() or len(set(labels[train].tolist())) < 2:
            continue
        head = BlastHead.fit([features[i] for i in np.flatnonzero(train)], labels[train],
                             cnn[train], weights[train])
        out[test] = head.probabilities([features[i] for i in np.flatnonzero(test)], cnn[test])
    return out


def fit_blast_head(model_dir: Path, val: list[CellSample], crop_um: float,
                   type_weights: dict[str, float], seed: int = 0
                   ) -> tuple[BlastHead | None, dict]:
    """The head and what it rests on (or None and why not), with the threshold to use."""
    samples, features, cnn = measure_cells(model_dir, val, crop_um)
    labels = np.array([s.label for s in samples])
    counts = {"cells_measured": len(samples), "cells_not_found": len(val) - len(samples),
              "blasts": int(labels.sum()), "normal": int((labels == 0).sum())}
    if min(counts["blasts"], counts["normal"]) < MIN_CELLS_PER_CLASS:
        return None, {**counts, "skipped": f"fewer than {MIN_CELLS_PER_CLASS} measured blasts "
                      "or normal cells among the validation crops: the CNN decides alone"}
    oof = cross_fitted(samples, features, cnn, type_weights, seed)
    scored = ~np.isnan(oof)
    groups = [s.group for s in samples]
    interval = roc_auc_interval(oof[scored], labels[scored], np.asarray(groups)[scored])
    summary = {**counts, "cross_fitted_auc": roc_auc(oof[scored], labels[scored]),
               "cross_fitted_auc_ci95": None if interval is None else [round(v, 4)
                                                                        for v in interval],
               "cnn_auc": roc_auc(cnn, labels)}
    real_normal = scored & np.array([s.real and s.label == 0 for s in samples])
    if real_normal.sum() >= MIN_REAL_NORMALS:
        threshold = threshold_for(oof[real_normal])
        summary["threshold"] = {"threshold": threshold,
                                "real_normal_cells": int(real_normal.sum()),
                                "max_false_call_rate": MAX_FALSE_CALL_RATE,
                                "calls_at_threshold": int((oof[real_normal] >= threshold).sum())}
    head = BlastHead.fit(features, labels, cnn, _weights(samples, type_weights))
    summary["weights"] = {k: round(v, 4) for k, v in head.weights().items()}
    return head, summary
