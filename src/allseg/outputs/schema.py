"""The result of one image, and its JSON form (DESIGN.md, "Output contract")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from allseg import DISCLAIMER
from allseg.data.record import BLAST, LEUKOCYTE

ALL_SUSPECTED, NO_BLASTS = "ALL suspected", "no blasts found"
#: Per-cell features that go into ``cells[].features`` (and the CSV, GeoJSON).
FEATURE_KEYS = ("area_um2", "nc_ratio", "circularity", "diameter_um",
                "chromatin_texture", "nucleolus_count")


def verdict_for(blast_count: int) -> str:
    """Image verdict: a single blast is enough to raise suspicion for review."""
    return ALL_SUSPECTED if blast_count > 0 else NO_BLASTS


@dataclass
class CellResult:
    """One leukocyte; coordinates in original image pixels, ``id`` = its value
    in ``S_instances.png``."""

    id: int
    centroid: list[float]
    bbox: list[int]
    area_px: int
    cls: Literal["blast", "leukocyte"]
    blast_probability: float
    features: dict[str, Any]
    contour: list[list[int]]

    @classmethod
    def from_features(cls, cell: dict[str, Any], blast_probability: float,
                      threshold: float = 0.5) -> CellResult:
        """Build from a :func:`allseg.postprocess.features.cell_features` dict."""
        return cls(id=int(cell["id"]), centroid=list(cell["centroid"]), bbox=list(cell["bbox"]),
                   area_px=int(cell["area_px"]),
                   cls=BLAST if blast_probability >= threshold else LEUKOCYTE,
                   blast_probability=float(blast_probability),
                   features={k: cell[k] for k in FEATURE_KEYS}, contour=cell["contour"])

    @property
    def is_blast(self) -> bool:
        return self.cls == BLAST

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "centroid": self.centroid, "bbox": self.bbox,
                "area_px": self.area_px, "class": self.cls,
                "blast_probability": self.blast_probability,
                "features": dict(self.features), "contour": self.contour}


@dataclass
class ImageResult:
    """Everything allseg found in one image.

    ``leukocyte_count`` counts every leukocyte found, blasts included, so the
    blast fraction is ``blast_count / leukocyte_count``. Counts and verdict are
    derived from ``cells`` so they can never disagree with them. ``parts`` and
    ``instances`` are original-size masks, written as PNGs but not into JSON.
    """

    image: str
    width: int
    height: int
    um_per_px: float | None
    scale_source: Literal["user", "dataset", "red-cells", "leukocytes", "default"]
    cells: list[CellResult]
    model: dict[str, Any]
    timings: dict[str, float]
    parts: np.ndarray = field(repr=False, compare=False)
    instances: np.ndarray = field(repr=False, compare=False)
    #: How sure the estimated scale is, 0..1 (below 0.5: unsure); None when given.
    scale_confidence: float | None = None
    #: The photo had no colour (a monochrome camera) and was recoloured before prediction.
    monochrome: bool = False
    disclaimer: str = DISCLAIMER

    @property
    def blast_count(self) -> int:
        return sum(cell.is_blast for cell in self.cells)

    @property
    def leukocyte_count(self) -> int:
        return len(self.cells)

    @property
    def verdict(self) -> str:
        return verdict_for(self.blast_count)

    @property
    def seconds(self) -> float:
        """Wall time for the image: ``timings["total"]`` if timed, else the stage sum."""
        return float(self.timings.get("total", sum(self.timings.values())))

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "width": self.width, "height": self.height,
                "um_per_px": self.um_per_px, "scale_source": self.scale_source,
                "scale_confidence": self.scale_confidence, "monochrome": self.monochrome,
                "verdict": self.verdict, "blast_count": self.blast_count,
                "leukocyte_count": self.leukocyte_count,
                "cells": [cell.to_json() for cell in self.cells],
                "model": self.model, "timings": self.timings, "disclaimer": self.disclaimer}


@dataclass
class Failure:
    """An input that could not be processed, reported in ``summary.json``."""

    image: str
    error: str
