"""The classifier's learning curve: how many labelled cells (and patients) it needs.

The classifier is trained again on nested shares of the training patients (or images,
without patients) and each model is scored on the same validation cells, AUC with a 95%
bootstrap interval. Written as ``RUN/learning_curve.csv`` and ``.png``. A user reads off
whether more labelling would still pay.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from allseg.evaluation.report import figure_png
from allseg.io.atomic import write_bytes_atomic, write_text_atomic
from allseg.training.samples import CellSample
from allseg.training.validation import classifier_report

COLUMNS = ("fraction", "train_cells", "train_groups", "val_cells", "auc", "auc_ci95_low",
           "auc_ci95_high", "note")


def parse_fractions(text: str) -> list[float]:
    """``"0.1,0.25,0.5"`` -> sorted shares in (0, 1].

    >>> parse_fractions("0.5, 0.1,1")
    [0.1, 0.5, 1.0]
    """
    try:
        values = sorted({float(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"learning curve {text!r}: expected shares like 0.1,0.25,0.5") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise ValueError(f"learning curve {text!r}: every share must be in (0, 1]")
    return values


def nested_groups(groups: Sequence[str], fractions: Sequence[float], seed: int
                  ) -> Iterator[tuple[float, set[str]]]:
    """Each share's groups; a larger share keeps every group of a smaller one.

    >>> [(f, len(g)) for f, g in nested_groups([f"p{i}" for i in range(10)], [0.25, 1], 0)]
    [(0.25, 3), (1, 10)]
    """
    order = sorted(set(groups))
    np.random.default_rng(seed).shuffle(order)
    for fraction in sorted(fractions):
        yield fraction, set(order[:max(1, math.ceil(fraction * len(order)))])


def curve_row(fraction: float, subset: list[CellSample], groups: int, val: list[CellSample],
              report: dict | None) -> dict:
    """One line of the curve: what was trained on and how it scored."""
    low, high = (report or {}).get("auc_ci95") or (None, None)
    return {"fraction": fraction, "train_cells": len({s.name for s in subset}),
            "train_groups": groups, "val_cells": len(val), "auc": (report or {}).get("auc"),
            "auc_ci95_low": low, "auc_ci95_high": high}


def learning_curve(fit: Callable[[list[CellSample], Path], torch.nn.Module],
                   train: list[CellSample], val: list[CellSample], fractions: Sequence[float],
                   run_dir: Path, seed: int = 0) -> list[dict]:
    """Train with ``fit(samples, folder)`` on each share of the training groups and score
    each model on ``val`` (the run's full model adds the last row)."""
    rows = []
    for fraction, keep in nested_groups([s.group for s in train], fractions, seed):
        subset = [s for s in train if s.group in keep]
        if len({s.label for s in subset}) < 2:
            rows.append({**curve_row(fraction, subset, len(keep), val, None),
                         "note": "one class only in this share: not trained"})
            continue
        model = fit(subset, run_dir / "learning_curve" / f"{fraction:g}")
        rows.append(curve_row(fraction, subset, len(keep), val, classifier_report(model, val)))
    return rows


def write_curve(run_dir: Path, rows: list[dict]) -> None:
    """``learning_curve.csv`` and ``learning_curve.png`` (AUC against training cells)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(run_dir / "learning_curve.csv", buffer.getvalue())
    import matplotlib.pyplot as plt

    scored = [r for r in rows if r.get("auc") is not None]
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    if scored:
        x = [r["train_cells"] for r in scored]
        y = [r["auc"] for r in scored]
        low = [r["auc"] - (r["auc_ci95_low"] if r["auc_ci95_low"] is not None else r["auc"])
               for r in scored]
        high = [(r["auc_ci95_high"] if r["auc_ci95_high"] is not None else r["auc"]) - r["auc"]
                for r in scored]
        ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3)
        ax.set_xscale("log")
    ax.set(xlabel="labelled training cells", ylabel="validation AUC (95% CI)", ylim=(0.4, 1.02),
           title="Learning curve of the blast classifier")
    ax.grid(alpha=0.3)
    write_bytes_atomic(run_dir / "learning_curve.png", figure_png(fig))
