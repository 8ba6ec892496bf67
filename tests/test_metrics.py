"""The metrics module against hand-computed cases and against torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score

from allseg.evaluation.metrics import (
    Counts,
    PixelCounts,
    binary_classification,
    calibration,
    dice,
    iou,
    match_instances,
    match_points,
    match_points_to_boxes,
    pixel_counts,
    pr_curve,
    roc_auc,
    roc_curve,
)

# --- pixels -----------------------------------------------------------------------------


def test_dice_and_iou_by_hand() -> None:
    true = np.zeros((4, 4), bool)
    true[:2] = True  # 8 pixels
    pred = np.zeros((4, 4), bool)
    pred[1:3] = True  # 8 pixels, 4 shared
    counts = pixel_counts(pred, true)
    assert (counts.tp, counts.fp, counts.fn) == (4, 4, 4)
    assert dice(pred, true) == pytest.approx(8 / 16)
    assert iou(pred, true) == pytest.approx(4 / 12)


def test_dice_is_not_iou_and_empty_cases() -> None:
    a, empty = np.ones(10, bool), np.zeros(10, bool)
    assert dice(empty, empty) == iou(empty, empty) == 1.0
    assert dice(a, empty) == dice(empty, a) == 0.0
    half = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    assert dice(half, a) == pytest.approx(2 / 3) and iou(half, a) == pytest.approx(0.5)


def test_pixel_counts_pool_by_addition() -> None:
    pooled = PixelCounts(1, 1, 1) + PixelCounts(3, 0, 0)
    assert isinstance(pooled, PixelCounts)
    assert (pooled.tp, pooled.fp, pooled.fn) == (4, 1, 1)
    assert pooled.dice == pytest.approx(8 / 10)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        pixel_counts(np.zeros((2, 3), bool), np.zeros((3, 2), bool))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_equals_torchmetrics_binary_f1(seed: int) -> None:
    rng = np.random.default_rng(seed)
    true = rng.random((37, 53)) < 0.3
    pred = true ^ (rng.random(true.shape) < 0.2)
    expected = binary_f1_score(torch.from_numpy(pred.astype(np.float32)),
                               torch.from_numpy(true.astype(np.int64))).item()
    assert dice(pred, true) == pytest.approx(expected, abs=1e-6)


# --- points -----------------------------------------------------------------------------


def test_radius_is_applied_before_solving() -> None:
    """The unconstrained optimum (sum 19.0) pairs (0,0)-(0,0) and leaves a 19 px pair;
    gating first finds two pairs at 10 px each."""
    pred = np.array([[0, 0], [0, 10]], float)
    true = np.array([[0, 0], [6, -8]], float)
    m = match_points(pred, true, radius=10)
    assert (m.tp, m.fp, m.fn) == (2, 0, 0)
    assert m.f1 == 1.0 and m.mean_distance == pytest.approx(10.0)
    tighter = match_points(pred, true, radius=9.9)
    assert (tighter.tp, tighter.fp, tighter.fn) == (1, 1, 1)
    assert tighter.mean_distance == 0.0


def test_points_are_matched_one_to_one() -> None:
    m = match_points([[0, 0], [1, 0], [2, 0]], [[1, 0]], radius=5)
    assert (m.tp, m.fp, m.fn) == (1, 2, 0)
    assert m.precision == pytest.approx(1 / 3) and m.recall == 1.0
    assert m.f1 == pytest.approx(0.5)
    assert m.pairs.tolist() == [[1, 0]]


@pytest.mark.parametrize(("pred", "true", "expected"), [
    (np.zeros((0, 2)), np.zeros((0, 2)), (0, 0, 0, 1.0, 1.0, 1.0)),  # nothing to find
    (np.zeros((0, 2)), [[5, 5], [9, 9]], (0, 0, 2, 0.0, 0.0, 0.0)),  # nothing predicted
    ([[5, 5]], np.zeros((0, 2)), (0, 1, 0, 0.0, 0.0, 0.0)),  # nothing true
])
def test_point_empty_cases(pred, true, expected) -> None:
    m = match_points(pred, true, radius=3)
    assert (m.tp, m.fp, m.fn, m.precision, m.recall, m.f1) == expected
    assert m.mean_distance is None and m.pairs.shape == (0, 2)


def test_points_to_boxes() -> None:
    boxes = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 40, 50, 60]]
    # one point per first two boxes, a second point in box 0, one point on no box
    m = match_points_to_boxes([[9, 9], [4, 6], [25, 5], [100, 100]], boxes)
    assert (m.tp, m.fp, m.fn) == (2, 2, 1)
    assert sorted(m.pairs.tolist()) == [[1, 0], [2, 1]]  # the more central point wins box 0
    assert m.precision == 0.5 and m.recall == pytest.approx(2 / 3)
    both = match_points_to_boxes(np.zeros((0, 2)), np.zeros((0, 4)))
    assert both.f1 == 1.0
    none = match_points_to_boxes(np.zeros((0, 2)), boxes)
    assert (none.tp, none.fn, none.recall) == (0, 3, 0.0)


def test_a_point_in_two_overlapping_boxes_counts_once() -> None:
    m = match_points_to_boxes([[5, 5]], [[0, 0, 10, 10], [2, 2, 12, 12]])
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)


# --- instances --------------------------------------------------------------------------


def _squares() -> np.ndarray:
    labels = np.zeros((20, 20), np.int32)
    labels[0:10, 0:10] = 1
    labels[0:10, 10:20] = 2
    labels[12:20, 0:8] = 3
    return labels


def test_instances_identical_with_other_ids() -> None:
    true = _squares()
    pred = np.where(true > 0, true * 7 + 100, 0)
    for thresh in (0.5, 0.75):
        m = match_instances(pred, true, thresh)
        assert (m.tp, m.fp, m.fn) == (3, 0, 0)
        assert m.ap == m.f1 == m.panoptic_quality == 1.0
    assert sorted(m.pairs.tolist()) == [[107, 1], [114, 2], [121, 3]]


def test_instances_by_hand() -> None:
    true = _squares()
    pred = np.zeros_like(true)
    pred[0:10, 0:8] = 1  # IoU 80/100 = 0.8 with true 1
    pred[0:10, 13:20] = 2  # IoU 70/100 = 0.7 with true 2
    pred[15:18, 15:18] = 3  # nothing there: false positive; true 3 missed
    m50 = match_instances(pred, true, 0.5)
    assert (m50.tp, m50.fp, m50.fn) == (2, 1, 1)
    assert m50.ap == pytest.approx(2 / 4) and m50.f1 == pytest.approx(4 / 6)
    assert m50.panoptic_quality == pytest.approx((0.8 + 0.7) / (2 + 0.5 + 0.5))
    m75 = match_instances(pred, true, 0.75)
    assert (m75.tp, m75.fp, m75.fn) == (1, 2, 2)
    assert m75.panoptic_quality == pytest.approx(0.8 / (1 + 1 + 1))


def test_instances_empty_cases() -> None:
    empty = np.zeros((5, 5), np.int32)
    one = empty.copy()
    one[1:3, 1:3] = 4
    both = match_instances(empty, empty)
    assert (both.tp, both.fp, both.fn, both.f1, both.ap, both.panoptic_quality) == (
        0, 0, 0, 1.0, 1.0, 1.0)
    missed = match_instances(empty, one)
    assert (missed.fn, missed.f1, missed.panoptic_quality) == (1, 0.0, 0.0)
    extra = match_instances(one, empty)
    assert (extra.fp, extra.precision, extra.panoptic_quality) == (1, 0.0, 0.0)


def test_instance_split_and_merge() -> None:
    true = np.zeros((4, 8), np.int32)
    true[:, :4], true[:, 4:] = 1, 2
    merged = (true > 0).astype(np.int32)  # IoU 0.5 with each: matches one of them
    m = match_instances(merged, true, 0.5)
    assert (m.tp, m.fp, m.fn) == (1, 0, 1)
    assert match_instances(merged, true, 0.51).tp == 0


# --- classification ---------------------------------------------------------------------


def test_binary_classification_by_hand() -> None:
    scores = [0.9, 0.8, 0.3, 0.6, 0.2, 0.1]
    labels = [1, 1, 1, 0, 0, 0]
    r = binary_classification(scores, labels, threshold=0.5)
    assert (r["tp"], r["fn"], r["fp"], r["tn"]) == (2, 1, 1, 2)
    assert r["sensitivity"] == pytest.approx(2 / 3)
    assert r["specificity"] == pytest.approx(2 / 3)
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["roc_auc"] == pytest.approx(8 / 9)
    assert r["threshold"] == 0.5
    called = binary_classification(scores, labels, 0.5, predicted=[1, 1, 1, 1, 1, 1])
    assert (called["sensitivity"], called["specificity"]) == (1.0, 0.0)


def test_binary_classification_one_class() -> None:
    r = binary_classification([0.9, 0.1], [1, 1])
    assert r["roc_auc"] is None and r["specificity"] is None and r["sensitivity"] == 0.5
    assert binary_classification([], [])["accuracy"] is None


def test_binary_classification_has_calibration_and_an_auc_interval() -> None:
    r = binary_classification([0.9, 0.8, 0.3, 0.6, 0.2, 0.1], [1, 1, 1, 0, 0, 0])
    lo, hi = r["roc_auc_ci95"]
    assert 0.0 <= lo <= r["roc_auc"] <= hi <= 1.0
    assert r["calibration"] == calibration([0.9, 0.8, 0.3, 0.6, 0.2, 0.1], [1, 1, 1, 0, 0, 0])
    normal = binary_classification([0.2, 0.7], [0, 0])
    assert normal["roc_auc_ci95"] is None and normal["calibration"]["ece"] == pytest.approx(0.45)


def test_calibration_perfect_case_has_no_error() -> None:
    c = calibration([0.25] * 4 + [0.75] * 4, [1, 0, 0, 0, 1, 1, 1, 0])
    assert c["ece"] == 0.0 and c["brier"] == pytest.approx(0.1875)
    assert [b["count"] for b in c["bins"]] == [0, 0, 4, 0, 0, 0, 0, 4, 0, 0]
    assert (c["bins"][2]["mean_predicted"], c["bins"][2]["observed"]) == (0.25, 0.25)
    assert c["bins"][0]["mean_predicted"] is None and c["bins"][0]["observed"] is None


def test_calibration_of_a_confident_model_on_normal_cells() -> None:
    c = calibration([0.9] * 5, [0] * 5)
    assert c["ece"] == pytest.approx(0.9) and c["brier"] == pytest.approx(0.81)
    assert c["bins"][9] == {"lo": 0.9, "hi": 1.0, "count": 5, "mean_predicted": 0.9,
                            "observed": 0.0}


def test_calibration_bin_edges_and_empty_input() -> None:
    c = calibration([0.0, 0.1, 0.5, 1.0], [0, 0, 1, 1], bins=4)
    assert [b["count"] for b in c["bins"]] == [2, 0, 1, 1]  # [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert c["bins"][0]["lo"] == 0.0 and c["bins"][-1]["hi"] == 1.0
    assert c["ece"] == pytest.approx((0.05 * 2 + 0.5 + 0.0) / 4)
    empty = calibration([], [])
    assert empty["ece"] is None and empty["brier"] is None
    assert sum(b["count"] for b in empty["bins"]) == 0


def test_auc_ties_count_half() -> None:
    assert roc_auc([0.5, 0.5], [0, 1]) == 0.5
    assert roc_auc([0.1, 0.9], [1, 0]) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_torchmetrics(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(200) < 0.4
    scores = np.round(rng.random(200) * 0.6 + 0.4 * labels, 2)  # with ties
    expected = binary_auroc(torch.from_numpy(scores), torch.from_numpy(labels.astype(np.int64)))
    assert roc_auc(scores, labels) == pytest.approx(expected.item(), abs=1e-6)
    fpr, tpr, _ = roc_curve(scores, labels)
    assert np.trapezoid(tpr, fpr) == pytest.approx(expected.item(), abs=1e-6)


def test_curves_by_hand() -> None:
    fpr, tpr, thresholds = roc_curve([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])
    assert fpr.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.9, 0.8, 0.6, 0.3]
    precision, recall, _ = pr_curve([0.9, 0.8, 0.3, 0.6], [1, 1, 0, 0])
    assert precision.tolist() == pytest.approx([1.0, 1.0, 1.0, 2 / 3, 0.5])
    assert recall.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    _, tpr_one, _ = roc_curve([0.2, 0.3], [0, 0])
    assert np.isnan(tpr_one).all()


def test_counts_conventions() -> None:
    assert Counts(0, 0, 0).precision == Counts(0, 0, 0).recall == 1.0
    assert Counts(0, 3, 0).recall == 0.0 and Counts(0, 0, 3).precision == 0.0
    assert Counts(2, 1, 1).as_dict()["f1"] == pytest.approx(4 / 6)
