"""Cells as a GeoJSON FeatureCollection that QuPath imports as detections."""

from __future__ import annotations

import uuid
from typing import Any

from allseg.data.record import BLAST, LEUKOCYTE
from allseg.outputs.overlay import CLASS_RGB
from allseg.outputs.schema import CellResult, ImageResult

CLASS_NAMES = {BLAST: "Blast", LEUKOCYTE: "Leukocyte"}
#: Stable namespace so the same image and cell id always get the same feature UUID.
_NAMESPACE = uuid.UUID("5d6c3a52-1a55-4f53-9a0e-6f1d2b7c9e10")


def _measurements(cell: CellResult) -> dict[str, float]:
    """Numeric measurements only: QuPath rejects nulls, so unknown values are left out."""
    values = {"blast_probability": cell.blast_probability, "area_px": cell.area_px,
              **cell.features}
    return {k: float(v) for k, v in values.items() if v is not None}


def _feature(image: str, cell: CellResult) -> dict[str, Any]:
    ring = [list(map(int, point)) for point in cell.contour]
    ring.append(ring[0])
    return {
        "type": "Feature",
        "id": str(uuid.uuid5(_NAMESPACE, f"{image}#{cell.id}")),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {
            "objectType": "detection",
            "name": f"cell {cell.id}",
            "cell_id": cell.id,
            "classification": {"name": CLASS_NAMES[cell.cls], "color": list(CLASS_RGB[cell.cls])},
            "measurements": _measurements(cell),
        },
    }


def to_geojson(result: ImageResult) -> dict[str, Any]:
    """One polygon Feature per cell, in original image pixel coordinates.

    Rings are closed (first point repeated last), as GeoJSON requires.
    """
    return {"type": "FeatureCollection",
            "features": [_feature(result.image, cell) for cell in result.cells]}
