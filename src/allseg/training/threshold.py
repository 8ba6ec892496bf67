"""The blast threshold, set from real normal leukocytes rather than from synthetic cells.

A classifier that learned blasts from synthetic cells is sure of itself on synthetic cells;
what matters to a user is how often it calls a real normal cell a blast. When a recipe has
real photos of normal blood among its classifier data (BCCD, Zheng, TXL-PBC: every cell
a non-blast; any dataset read from a folder counts, a synthetic one written there by
``allseg synth`` too), the non-blast validation crops of those datasets, never trained on,
set the threshold:
the P(blast) that at most ``MAX_FALSE_CALL_RATE`` of them reach, and never below 0.5.
"""

from __future__ import annotations

import numpy as np
import torch

from allseg.training.samples import CellSample

#: Share of real normal cells that may be called blasts.
MAX_FALSE_CALL_RATE = 0.01
#: Fewer real normal validation cells than this set no threshold (the quantile is noise).
MIN_REAL_NORMALS = 100
#: The threshold is never below this (the probability's own midpoint).
FLOOR = 0.5


def blast_probabilities(model: torch.nn.Module, crops: list[np.ndarray],
                        batch_size: int = 128) -> np.ndarray:
    """P(blast) of ``(S, S, 3)`` uint8 crops, as the classifier sees them in training."""
    probs = []
    with torch.no_grad():
        for i in range(0, len(crops), batch_size):
            batch = torch.from_numpy(np.stack(crops[i:i + batch_size]).transpose(0, 3, 1, 2))
            probs.append(torch.sigmoid(model(batch.float())[:, 0]).numpy())
    return np.concatenate(probs) if probs else np.zeros(0)


def threshold_for(probs: np.ndarray, max_rate: float = MAX_FALSE_CALL_RATE,
                  floor: float = FLOOR) -> float:
    """The smallest threshold (>= ``floor``) that at most ``max_rate`` of ``probs`` reach.

    >>> threshold_for(np.linspace(0, 1, 101), 0.05)
    0.955
    >>> threshold_for(np.zeros(200), 0.01)
    0.5
    """
    probs = np.sort(np.asarray(probs, float))
    allowed = int(np.floor(max_rate * len(probs)))
    if allowed == 0 or allowed >= len(probs):
        return floor
    # Midway between the largest probability kept below and the smallest allowed above it.
    below, above = probs[len(probs) - allowed - 1], probs[len(probs) - allowed]
    return round(max(floor, float(below + above) / 2), 6)


def real_normal_threshold(model: torch.nn.Module, val: list[CellSample]) -> dict | None:
    """The threshold from the real normal validation crops, with what it rests on; None
    when there are too few of them."""
    crops = [s.crop for s in val if s.real and s.label == 0]
    if len(crops) < MIN_REAL_NORMALS:
        return None
    model.eval()
    probs = blast_probabilities(model, crops)
    threshold = threshold_for(probs)
    return {"threshold": threshold, "real_normal_cells": len(crops),
            "max_false_call_rate": MAX_FALSE_CALL_RATE,
            "calls_at_0.5": int((probs >= FLOOR).sum()),
            "calls_at_threshold": int((probs >= threshold).sum())}
