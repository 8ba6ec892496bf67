"""What a trained classifier is worth on its validation cells: the AUC with a confidence
interval (patients resampled whole when the split is by patient), and the AUC of blasts
against each normal type the data names (lymphocytes being the hard one)."""

from __future__ import annotations

import numpy as np
import torch

from allseg.evaluation.metrics import roc_auc, roc_auc_interval
from allseg.training.samples import CellSample
from allseg.training.threshold import blast_probabilities

#: Fewer validation patients (or images) than this make the bootstrap interval meaningless.
FEW_GROUPS = 10


def _auc_with_interval(probs: np.ndarray, labels: np.ndarray, groups: list[str]) -> dict:
    interval = roc_auc_interval(probs, labels, groups)
    return {"cells": int(labels.size), "blasts": int(labels.sum()),
            "auc": roc_auc(probs, labels),
            "auc_ci95": None if interval is None else [round(v, 4) for v in interval]}


def classifier_report(model: torch.nn.Module, val: list[CellSample]) -> dict | None:
    """AUC (with a 95% bootstrap interval) overall and per normal type; None without
    validation cells."""
    if not val:
        return None
    model.eval()
    probs = blast_probabilities(model, [s.crop for s in val])
    labels = np.array([s.label for s in val])
    groups = [s.group for s in val]
    report = {**_auc_with_interval(probs, labels, groups), "groups": len(set(groups))}
    blasts = labels == 1
    types = sorted({s.cell_type for s in val if s.cell_type and not s.label})
    per_type = {}
    for cell_type in types:
        keep = blasts | np.array([s.cell_type == cell_type for s in val])
        per_type[cell_type] = _auc_with_interval(probs[keep], labels[keep],
                                                 [g for g, k in zip(groups, keep, strict=True)
                                                  if k])
    if per_type:
        report["blast_vs_type"] = per_type
    return report


def describe(report: dict, label: str = "validation AUC") -> str:
    """One line for the console.

    >>> describe({"auc": 0.931, "auc_ci95": [0.88, 0.97], "cells": 120, "groups": 14,
    ...           "blasts": 40})
    'validation AUC 0.931 (95% CI 0.880-0.970) on 120 cells (40 blasts) from 14 images/patients'
    >>> describe({"auc": 1.0, "auc_ci95": [1.0, 1.0], "cells": 120, "groups": 2, "blasts": 60})
    ... # doctest: +ELLIPSIS
    'validation AUC 1.000 ... from 2 images/patients (too few to trust the interval: ...)'
    >>> describe({"auc": None, "auc_ci95": None, "cells": 5, "blasts": 0}, "AUC")
    'AUC undefined (one class only) on 5 cells (0 blasts)'
    """
    if report["auc"] is None:
        auc = "undefined (one class only)"
    else:
        auc = f"{report['auc']:.3f}"
        if report["auc_ci95"]:
            auc += " (95% CI {:.3f}-{:.3f})".format(*report["auc_ci95"])
    line = f"{label} {auc} on {report['cells']} cells ({report['blasts']} blasts)"
    if "groups" in report:
        line += f" from {report['groups']} images/patients"
        if report["groups"] < FEW_GROUPS:
            line += " (too few to trust the interval: validate on more patients)"
    return line
