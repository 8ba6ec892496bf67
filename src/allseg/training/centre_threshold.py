"""The centre threshold, chosen after training on synthetic fields never trained on.

Touching cells are told apart where the segmenter's centre map rises above this threshold
(:func:`allseg.postprocess.instances.instances_from_maps`). Where that level lies depends
on how sharp a trained network's peaks come out, so one fixed value does not suit every
retrain: on the same 40 fields a control retrain of the default recipe scored instance F1
0.974 / 0.971 (float32 / int8) at the former fixed 0.5 and 0.981 / 0.986 at 0.45, the
bundled model 0.983 / 0.981 and 0.988 / 0.988. After training, the recipe
predicts synthetic fields with exact instance masks at every candidate (the whole
pipeline, scale estimate included, as a user runs it, with the float32 and the int8
graph) and keeps the threshold with the best pooled instance F1 at IoU 0.5, averaged over
the two graphs; among equals, the one nearest 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.progress import track

from allseg.data.readers import open_dataset
from allseg.errors import InputError

#: Thresholds tried, from splitting eagerly (low) to merging eagerly (high).
CANDIDATES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
#: The threshold models were given before it was tuned; preferred among equal scores.
DEFAULT = 0.5
#: Both graphs a user may run (``--backend auto`` picks int8 on CPUs with int8 dot
#: products): their centre maps differ a little, so the threshold suits them on average.
BACKENDS = ("onnx", "onnx-int8")


def best_threshold(f1_by_threshold: dict[float, float]) -> float:
    """The threshold with the highest F1; the one nearest ``DEFAULT`` among equals.

    >>> best_threshold({0.4: 0.99, 0.5: 0.98, 0.6: 0.97})
    0.4
    >>> best_threshold({0.45: 0.98, 0.5: 0.98, 0.55: 0.98})
    0.5
    """
    return max(f1_by_threshold,
               key=lambda t: (round(f1_by_threshold[t], 9), -abs(t - DEFAULT)))


def tune_centre_threshold(model_dir: str | Path, fields: str | Path,
                          backends: Sequence[str] = BACKENDS, progress: bool = True) -> dict:
    """Instance F1 (IoU 0.5) of ``model_dir`` on the labelled ``fields`` at every
    candidate threshold with each backend, and the threshold to keep (best mean F1)."""
    from allseg.evaluation.score import evaluate_dataset
    from allseg.inference.predictor import Predictor

    dataset = open_dataset(fields)
    f1: dict[str, dict[float, float]] = {}
    for backend in backends:
        predictor = Predictor(model_dir, backend=backend)
        scores = f1.setdefault(predictor.segmenter.backend, {})
        for threshold in track(CANDIDATES, description=f"centre threshold ({backend})",
                               disable=not progress):
            predictor.thresholds["centre"] = threshold
            summary = evaluate_dataset(predictor, dataset, progress=False).summary()
            if "instances" not in summary:
                raise InputError(fields, "has no instance masks to choose the centre "
                                 "threshold on")
            scores[threshold] = float(summary["instances"]["iou50"]["f1"])
    mean = {t: float(np.mean([by_graph[t] for by_graph in f1.values()])) for t in CANDIDATES}
    return {"threshold": best_threshold(mean), "fields": summary["instances"]["images"],
            "instance_f1_iou50": {backend: {str(t): round(v, 4) for t, v in scores.items()}
                                  for backend, scores in f1.items()}}
