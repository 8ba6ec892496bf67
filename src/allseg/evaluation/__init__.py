"""Evaluation: the metrics (DESIGN.md, "Metrics"), named splits, and dataset scoring."""

from allseg.evaluation.metrics import (
    BoxMatch,
    Counts,
    InstanceMatch,
    PixelCounts,
    PointMatch,
    binary_classification,
    dice,
    iou,
    match_instances,
    match_points,
    match_points_to_boxes,
    panoptic_quality,
    pixel_counts,
    pr_curve,
    roc_auc,
    roc_curve,
)
from allseg.evaluation.score import EvalResult, evaluate_dataset, score_image
from allseg.evaluation.splits import ALLIDB_TEST20, select

__all__ = ["ALLIDB_TEST20", "BoxMatch", "Counts", "EvalResult", "InstanceMatch", "PixelCounts",
           "PointMatch", "binary_classification", "dice", "evaluate_dataset", "iou",
           "match_instances", "match_points", "match_points_to_boxes", "panoptic_quality",
           "pixel_counts", "pr_curve", "roc_auc", "roc_curve", "score_image", "select"]
