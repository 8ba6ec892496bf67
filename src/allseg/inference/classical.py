"""The classical baseline: stain colour threshold + morphology + watershed, no network.

It is the pipeline of the literature the original ALL projects used, kept so every
evaluation can show how far the networks are ahead. Blasts are called by a
haematological rule on the cell's own measurements (large cell, high nucleus-to-
cytoplasm ratio) rather than by a classifier.
"""

from __future__ import annotations

import time

import numpy as np

from allseg.data.weak_labels import leukocyte_masks_from_stain
from allseg.inference.scale import resolve_scale
from allseg.outputs.schema import CellResult, ImageResult
from allseg.postprocess.features import cell_features

#: A lymphoblast is 10-18 µm with a nucleus-to-cytoplasm ratio above about 0.8.
BLAST_MIN_DIAMETER_UM = 10.0
BLAST_MIN_NC_RATIO = 0.8


def rule_blast_score(nc_ratio: float, diameter_um: float | None) -> float:
    """A 0..1 score that crosses 0.5 at the rule's thresholds (for ROC curves).

    >>> rule_blast_score(0.9, 14.0) > 0.5 > rule_blast_score(0.6, 8.0)
    True
    """
    nc = 1 / (1 + np.exp(-(nc_ratio - BLAST_MIN_NC_RATIO) * 20))
    size = 1.0 if diameter_um is None else 1 / (1 + np.exp(-(diameter_um - BLAST_MIN_DIAMETER_UM)))
    return float(np.sqrt(nc * size))


class ClassicalPredictor:
    """Same ``predict_image`` contract as :class:`~allseg.inference.predictor.Predictor`."""

    model_info = {"name": "classical-baseline", "method": "stain threshold + watershed + "
                  f"rule (diameter >= {BLAST_MIN_DIAMETER_UM} µm, N:C >= {BLAST_MIN_NC_RATIO})"}

    def predict_image(self, image: np.ndarray, name: str = "image",
                      um_per_px: float | None = None,
                      cell_diameter_px: float | None = None) -> ImageResult:
        started = time.perf_counter()
        resolved = resolve_scale(image, um_per_px, cell_diameter_px)
        scale = resolved.um_per_px
        parts, instances = leukocyte_masks_from_stain(image, expected_diameter_px=12.0 / scale)
        cells = cell_features(image, parts, instances, scale)
        results = [CellResult.from_features(c, rule_blast_score(c["nc_ratio"], c["diameter_um"]))
                   for c in cells]
        h, w = image.shape[:2]
        return ImageResult(image=name, width=w, height=h, um_per_px=round(scale, 5),
                           scale_source=resolved.source, scale_confidence=resolved.confidence,
                           cells=results, model=dict(self.model_info),
                           timings={"total": round(time.perf_counter() - started, 4)},
                           parts=parts, instances=instances)
