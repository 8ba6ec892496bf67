"""The metrics of DESIGN.md ("Metrics"), defined once: small, pure numpy/scipy, doctested.

Conventions (shared by every ratio here, StarDist's ``matching.py`` plus one rule):

- a ratio whose denominator is 0 is **1.0 when there was nothing to find and nothing
  was found** (``tp = fp = fn = 0``: a healthy image with no blast calls is perfect);
- otherwise a 0 denominator gives **0.0** (nothing predicted but something to find:
  precision 0, recall 0; StarDist's ``_safe_divide``);
- class-conditional rates that do not exist (sensitivity without positives, specificity
  without negatives, ROC AUC with one class) are ``None``.

Pixel Dice is ``2TP/(2TP+FP+FN)`` (= F1), IoU is ``TP/(TP+FP+FN)`` (= Jaccard, = the
instance "AP" of StarDist); they are never confused with each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.stats import rankdata


def _ratio(num: float, den: float, empty: bool) -> float:
    return float(num) / den if den else (1.0 if empty else 0.0)


def _empty_pairs() -> np.ndarray:
    return np.zeros((0, 2), np.int64)


@dataclass(frozen=True, eq=False)
class Counts:
    """True positives, false positives and false negatives, with the rates they give.

    >>> c = Counts(3, 1, 2) + Counts(1, 0, 0)
    >>> c.tp, c.precision, round(c.recall, 3), round(c.f1, 3)
    (4, 0.8, 0.667, 0.727)
    >>> Counts(0, 0, 0).f1, Counts(0, 0, 5).precision
    (1.0, 0.0)
    """

    tp: int
    fp: int
    fn: int

    @property
    def empty(self) -> bool:
        return self.tp + self.fp + self.fn == 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, self.empty)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, self.empty)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, self.empty)

    @property
    def jaccard(self) -> float:
        return _ratio(self.tp, self.tp + self.fp + self.fn, self.empty)

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision,
                "recall": self.recall, "f1": self.f1}


@dataclass(frozen=True, eq=False)
class PixelCounts(Counts):
    """Pixel counts of one binary mask pair; add them to pool images.

    >>> a = np.array([1, 1, 0, 0], bool)
    >>> p = pixel_counts(a, np.array([1, 0, 1, 0], bool))
    >>> p.tp, p.fp, p.fn, p.dice, round(p.iou, 3)
    (1, 1, 1, 0.5, 0.333)
    >>> (p + pixel_counts(a, a)).dice
    0.75
    """

    @property
    def dice(self) -> float:
        return self.f1

    @property
    def iou(self) -> float:
        return self.jaccard

    def __add__(self, other: Counts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "dice": self.dice, "iou": self.iou}


def pixel_counts(pred: np.ndarray, true: np.ndarray) -> PixelCounts:
    """TP/FP/FN pixels of a predicted boolean mask against the true one (same shape)."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    if pred.shape != true.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {true.shape}")
    tp = int(np.count_nonzero(pred & true))
    return PixelCounts(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(true)) - tp)


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """``2TP / (2TP + FP + FN)``; 1.0 when both masks are empty.

    >>> dice(np.ones(4, bool), np.array([1, 1, 0, 0], bool))
    0.6666666666666666
    >>> dice(np.zeros(3, bool), np.zeros(3, bool))
    1.0
    """
    return pixel_counts(pred, true).dice


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """``TP / (TP + FP + FN)``; 1.0 when both masks are empty.

    >>> iou(np.ones(4, bool), np.array([1, 1, 0, 0], bool))
    0.5
    """
    return pixel_counts(pred, true).iou


def _assign(cost: np.ndarray, feasible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs that maximise the number of feasible pairs, then minimise cost.

    Infeasible pairs get a cost larger than any sum of feasible ones BEFORE solving (so
    the solver can never trade a match away for a cheaper total) and are dropped after.
    """
    if cost.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    big = 1.0 + float(cost[feasible].sum())
    rows, cols = linear_sum_assignment(np.where(feasible, cost, big))
    keep = feasible[rows, cols]
    return rows[keep], cols[keep]


def _points(a: np.ndarray | list) -> np.ndarray:
    return np.asarray(a, float).reshape(-1, 2)


@dataclass(frozen=True, eq=False)
class PointMatch(Counts):
    """Result of :func:`match_points`; ``pairs`` holds ``(pred_index, true_index)`` rows."""

    radius: float = 0.0
    pairs: np.ndarray = field(default_factory=_empty_pairs)
    distances: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def mean_distance(self) -> float | None:
        """Mean distance of the matched pairs (pixels), None without matches."""
        return float(self.distances.mean()) if self.distances.size else None

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "mean_distance": self.mean_distance,
                "sum_distance": float(self.distances.sum()), "radius": self.radius}


def match_points(pred: np.ndarray, true: np.ndarray, radius: float) -> PointMatch:
    """One-to-one Hungarian matching of points ``(x, y)`` within ``radius``.

    Pairs farther apart than ``radius`` are made infeasible before solving. Here the
    unconstrained optimum (and greedy nearest-neighbour matching) pairs the two points at
    (0, 0) and leaves the others 19 px apart, beyond the radius: one match. Gating first
    finds the assignment in which both pairs are within the radius:

    >>> pred = [[0, 0], [0, 10]]
    >>> true = [[0, 0], [6, -8]]
    >>> m = match_points(pred, true, radius=10)
    >>> m.tp, m.fp, m.fn, m.pairs.tolist(), m.mean_distance
    (2, 0, 0, [[0, 1], [1, 0]], 10.0)
    >>> m = match_points(np.zeros((0, 2)), true, radius=10)
    >>> m.tp, m.fn, m.precision, m.recall, m.f1
    (0, 2, 0.0, 0.0, 0.0)
    >>> match_points([], [], radius=5).f1
    1.0
    """
    pred, true = _points(pred), _points(true)
    dist = cdist(pred, true) if pred.size and true.size else np.zeros((len(pred), len(true)))
    rows, cols = _assign(dist, dist <= radius)
    tp = len(rows)
    return PointMatch(tp, len(pred) - tp, len(true) - tp, radius=float(radius),
                      pairs=np.stack([rows, cols], 1), distances=dist[rows, cols])


@dataclass(frozen=True, eq=False)
class BoxMatch(Counts):
    """Result of :func:`match_points_to_boxes`; ``pairs`` are ``(point, box)`` rows."""

    pairs: np.ndarray = field(default_factory=_empty_pairs)


def match_points_to_boxes(points: np.ndarray, boxes: np.ndarray) -> BoxMatch:
    """One-to-one matching of points ``(x, y)`` to boxes ``(x0, y0, x1, y1)``.

    A point can only count for a box it lies in (edges included); among those the
    Hungarian solver prefers points near the box centre (distance normalised by the
    half-sides). Two points in one box: one true positive, one false positive.

    >>> boxes = [[0, 0, 10, 10], [20, 0, 30, 10]]
    >>> m = match_points_to_boxes([[5, 5], [6, 6], [50, 50]], boxes)
    >>> m.tp, m.fp, m.fn, m.pairs.tolist()
    (1, 2, 1, [[0, 0]])
    """
    points = _points(points)
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, 1e-9)
    offset = np.abs(points[:, None, :] - centre[None]) / half[None]  # (N, M, 2)
    rows, cols = _assign(np.hypot(offset[..., 0], offset[..., 1]), (offset <= 1).all(-1))
    tp = len(rows)
    return BoxMatch(tp, len(points) - tp, len(boxes) - tp, pairs=np.stack([rows, cols], 1))


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``(N, M)``: whether point n lies in box m (edges included)."""
    return ((points[:, None, 0] >= boxes[None, :, 0]) & (points[:, None, 0] <= boxes[None, :, 2])
            & (points[:, None, 1] >= boxes[None, :, 1]) & (points[:, None, 1] <= boxes[None, :, 3]))


def boxes_hit(points: np.ndarray | list, boxes: np.ndarray | list,
              unless_in: np.ndarray | list = ()) -> tuple[int, int]:
    """``(hit, scored)``: how many of ``boxes`` hold at least one point, among the boxes
    whose centre is not inside any of ``unless_in`` (a red cell under a leukocyte box).

    >>> boxes_hit([[5, 5]], [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
    ...           unless_in=[[38, 0, 52, 12]])
    (1, 2)
    """
    points = _points(points)
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    covered = _inside(centres, np.asarray(unless_in, float).reshape(-1, 4)).any(axis=1)
    scored = boxes[~covered]
    return int(_inside(points, scored).any(axis=0).sum()), len(scored)


def points_in_boxes(points: np.ndarray | list, boxes: np.ndarray | list) -> np.ndarray:
    """Whether each point ``(x, y)`` lies in any of ``boxes`` (edges included): which
    predicted cells a box-labelled dataset vouches for as leukocytes.

    >>> points_in_boxes([[5, 5], [15, 5]], [[0, 0, 10, 10]]).tolist()
    [True, False]
    """
    return _inside(_points(points), np.asarray(boxes, float).reshape(-1, 4)).any(axis=1)


@dataclass(frozen=True, eq=False)
class InstanceMatch(Counts):
    """Result of :func:`match_instances`; ``pairs`` are ``(pred_id, true_id)`` label values."""

    thresh: float = 0.5
    pairs: np.ndarray = field(default_factory=_empty_pairs)
    ious: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def sum_iou(self) -> float:
        return float(self.ious.sum())

    @property
    def ap(self) -> float:
        """StarDist's "average precision" at one threshold: ``TP / (TP + FP + FN)``."""
        return self.jaccard

    @property
    def panoptic_quality(self) -> float:
        return panoptic_quality(self.sum_iou, self.tp, self.fp, self.fn)

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "ap": self.ap, "panoptic_quality": self.panoptic_quality,
                "sum_iou": self.sum_iou, "thresh": self.thresh}


def panoptic_quality(sum_iou: float, tp: int, fp: int, fn: int) -> float:
    """``sum(matched IoU) / (TP + FP/2 + FN/2)``; 1.0 when all counts are 0."""
    return _ratio(sum_iou, tp + fp / 2 + fn / 2, tp + fp + fn == 0)


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label ids > 0 and every pixel's index 0..n (0 = background) in them."""
    flat = np.asarray(labels).ravel()
    if flat.size and flat.min() < 0:
        raise ValueError("label images must not hold negative values")
    ids = np.unique(flat)
    ids = ids[ids != 0]
    index = np.searchsorted(ids, flat) + 1
    index[flat == 0] = 0
    return ids, index


def match_instances(pred_labels: np.ndarray, true_labels: np.ndarray,
                    thresh: float = 0.5) -> InstanceMatch:
    """One-to-one matching of label images at IoU >= ``thresh``.

    The IoU matrix comes from one ``bincount`` contingency table; pairs below ``thresh``
    are infeasible before the Hungarian solver runs (at ``thresh >= 0.5`` the matching is
    unique anyway).

    >>> true = np.array([[1, 1, 0, 2, 2, 2]])
    >>> pred = np.array([[3, 3, 3, 5, 5, 0]])
    >>> m = match_instances(pred, true, 0.5)
    >>> m.tp, m.fp, m.fn, m.pairs.tolist(), m.ious.round(3).tolist()
    (2, 0, 0, [[3, 1], [5, 2]], [0.667, 0.667])
    >>> round(m.panoptic_quality, 3), match_instances(pred, true, 0.75).f1
    (0.667, 0.0)
    """
    pred_labels, true_labels = np.asarray(pred_labels), np.asarray(true_labels)
    if pred_labels.shape != true_labels.shape:
        raise ValueError(f"label shapes differ: {pred_labels.shape} vs {true_labels.shape}")
    pred_ids, p = _compact(pred_labels)
    true_ids, t = _compact(true_labels)
    n_pred = len(pred_ids) + 1
    table = np.bincount(t * n_pred + p, minlength=(len(true_ids) + 1) * n_pred)
    table = table.reshape(len(true_ids) + 1, n_pred)
    overlap = table[1:, 1:].astype(float)
    union = table[1:].sum(1)[:, None] + table[:, 1:].sum(0)[None, :] - overlap
    ious = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    rows, cols = _assign(1.0 - ious, (ious >= thresh) & (ious > 0))
    tp = len(rows)
    return InstanceMatch(tp, len(pred_ids) - tp, len(true_ids) - tp, thresh=float(thresh),
                         pairs=np.stack([pred_ids[cols], true_ids[rows]], 1).astype(np.int64),
                         ious=ious[rows, cols])


def _binary(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, float).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    if scores.shape != labels.shape:
        raise ValueError(f"{scores.size} scores but {labels.size} labels")
    return scores, labels


def roc_auc(scores: Any, labels: Any) -> float | None:
    """Area under the ROC curve by the Mann-Whitney rank statistic (ties count half);
    None when only one class is present.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_auc([0.2, 0.3], [1, 1]) is None
    True
    """
    scores, labels = _binary(scores, labels)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


def roc_auc_interval(scores: Any, labels: Any, groups: Any = None, level: float = 0.95,
                     n_boot: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of :func:`roc_auc`.

    With ``groups`` (a patient or slide per case) whole groups are resampled, so cells of
    one patient, which are not independent, do not narrow the interval. None when the AUC
    is undefined; resamples holding one class only are redrawn by skipping them.

    >>> lo, hi = roc_auc_interval([0.1, 0.4, 0.35, 0.8, 0.7, 0.2], [0, 0, 1, 1, 1, 0])
    >>> 0.0 <= lo <= 0.78 <= hi <= 1.0
    True
    """
    scores, labels = _binary(scores, labels)
    if roc_auc(scores, labels) is None:
        return None
    keys = np.arange(scores.size) if groups is None else np.asarray(groups).ravel()
    if keys.shape != scores.shape:
        raise ValueError(f"{scores.size} scores but {keys.size} groups")
    _, members = np.unique(keys, return_inverse=True)
    index = [np.flatnonzero(members == g) for g in range(members.max() + 1)]
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n_boot):
        pick = np.concatenate([index[g] for g in rng.integers(0, len(index), len(index))])
        auc = roc_auc(scores[pick], labels[pick])
        if auc is not None:
            aucs.append(auc)
    if not aucs:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(aucs, [tail, 100 - tail])
    return float(lo), float(hi)


def calibration(scores: Any, labels: Any, bins: int = 10) -> dict[str, Any]:
    """Whether probabilities mean what they say: of the cases scored about 0.9, about 9 in
    10 should be positive.

    Per equal-width bin of ``[0, 1]`` (the last one closed): ``count``, ``mean_predicted``
    and ``observed`` positive fraction (None for an empty bin); ``ece``, the expected
    calibration error (count-weighted mean of ``|mean_predicted - observed|``) and
    ``brier``, the mean squared error of the probabilities (None without cases).

    >>> c = calibration([0.25, 0.25, 0.25, 0.25, 0.9, 0.9], [0, 0, 0, 1, 1, 1], bins=2)
    >>> [(b["count"], b["mean_predicted"], b["observed"]) for b in c["bins"]]
    [(4, 0.25, 0.25), (2, 0.9, 1.0)]
    >>> round(c["ece"], 4), round(c["brier"], 4)
    (0.0333, 0.1283)
    """
    scores, labels = _binary(scores, labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    out_bins, gap = [], 0.0
    for k in range(bins):
        member = index == k
        count = int(member.sum())
        predicted = float(scores[member].mean()) if count else None
        observed = float(labels[member].mean()) if count else None
        if count:
            gap += count * abs(predicted - observed)
        out_bins.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": count,
                         "mean_predicted": predicted, "observed": observed})
    n = scores.size
    return {"bins": out_bins, "ece": gap / n if n else None,
            "brier": float(np.mean((scores - labels) ** 2)) if n else None}


def binary_classification(scores: Any, labels: Any, threshold: float = 0.5,
                          predicted: Any = None) -> dict[str, Any]:
    """Sensitivity, specificity, accuracy, ROC AUC (with its bootstrap 95% interval) and
    :func:`calibration` of scores against 0/1 labels.

    A case is called positive when ``score >= threshold``, unless ``predicted`` gives the
    calls themselves (e.g. image verdicts). Undefined rates are None.

    >>> r = binary_classification([0.9, 0.2, 0.6, 0.1], [1, 1, 0, 0], threshold=0.5)
    >>> r["tp"], r["fn"], r["fp"], r["tn"], r["sensitivity"], r["accuracy"], r["roc_auc"]
    (1, 1, 1, 1, 0.5, 0.5, 0.75)
    >>> round(r["calibration"]["brier"], 4), len(r["roc_auc_ci95"])
    (0.255, 2)
    """
    scores, labels = _binary(scores, labels)
    calls = scores >= threshold if predicted is None else np.asarray(predicted, bool).ravel()
    tp = int((calls & labels).sum())
    fp = int((calls & ~labels).sum())
    fn = int((~calls & labels).sum())
    tn = int((~calls & ~labels).sum())
    n = tp + fp + fn + tn
    return {"n": n, "positives": tp + fn, "negatives": tn + fp, "threshold": float(threshold),
            "tp": tp, "fp": fp, "tn": tn, "fn": fn,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "accuracy": (tp + tn) / n if n else None,
            "roc_auc": roc_auc(scores, labels), "roc_auc_ci95": _listed(
                roc_auc_interval(scores, labels)),
            "calibration": calibration(scores, labels)}


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    """A JSON-ready ``[lo, hi]``."""
    return None if interval is None else list(interval)


def _cumulative(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Cumulative TP and FP counts at each distinct score, highest first."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    return np.cumsum(labels)[last], np.cumsum(~labels)[last], scores[last]


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from ``(0, 0)`` at threshold ``inf`` to ``(1, 1)``.

    A rate whose class is absent is NaN.

    >>> fpr, tpr, th = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, labels = _binary(scores, labels)
    tps, fps, thresholds = _cumulative(scores, labels)
    pos, neg = labels.sum(), (~labels).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = np.r_[0, tps] / pos if pos else np.full(tps.size + 1, np.nan)
        fpr = np.r_[0, fps] / neg if neg else np.full(fps.size + 1, np.nan)
    return fpr.astype(float), tpr.astype(float), np.r_[np.inf, thresholds]


def pr_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` by decreasing threshold, starting at
    ``(1, 0)`` for threshold ``inf``; recall is NaN without positives.

    >>> p, r, th = pr_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    >>> p.round(3).tolist(), r.tolist()
    ([1.0, 1.0, 0.5, 0.667, 0.5], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    scores, labels = _binary(scores, labels)
    tps, fps, thresholds = _cumulative(scores, labels)
    pos = labels.sum()
    precision = np.r_[1.0, tps / np.maximum(tps + fps, 1)]
    recall = np.r_[0.0, tps / pos] if pos else np.full(tps.size + 1, np.nan)
    return precision.astype(float), recall.astype(float), np.r_[np.inf, thresholds]


__all__ = ["BoxMatch", "Counts", "InstanceMatch", "PixelCounts", "PointMatch",
           "binary_classification", "calibration", "dice", "iou", "match_instances",
           "match_points", "match_points_to_boxes", "panoptic_quality", "pixel_counts",
           "points_in_boxes", "pr_curve", "roc_auc", "roc_curve"]
