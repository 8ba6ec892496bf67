"""Instance outputs for other tools: COCO (polygons) and ImageJ/Fiji ROI sets.

GeoJSON for QuPath is part of every run (``S.geojson``); these are extra, chosen with
``allseg predict --format coco --format imagej-roi``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from allseg.io.atomic import write_bytes_atomic, write_json_atomic

FORMATS = ("qupath", "coco", "imagej-roi")
COCO_CATEGORIES = [{"id": 1, "name": "leukocyte", "supercategory": "cell"},
                   {"id": 2, "name": "blast", "supercategory": "cell"}]


def coco_dataset(images: list[dict[str, Any]]) -> dict[str, Any]:
    """A COCO instance-segmentation dict from ``S.json`` contents (polygons, xywh boxes).

    >>> cell = {"id": 1, "class": "blast", "bbox": [0, 0, 4, 3], "area_px": 10,
    ...         "blast_probability": 0.9, "contour": [[0, 0], [3, 0], [3, 2]]}
    >>> d = coco_dataset([{"image": "a.jpg", "width": 8, "height": 6, "cells": [cell]}])
    >>> d["annotations"][0]["bbox"], d["annotations"][0]["category_id"]
    ([0, 0, 4, 3], 2)
    """
    out: dict[str, Any] = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
    for image_id, data in enumerate(images, start=1):
        out["images"].append({"id": image_id, "file_name": Path(data["image"]).name,
                              "width": data["width"], "height": data["height"]})
        for cell in data["cells"]:
            x0, y0, x1, y1 = cell["bbox"]
            out["annotations"].append({
                "id": len(out["annotations"]) + 1, "image_id": image_id,
                "category_id": 2 if cell["class"] == "blast" else 1,
                "segmentation": [[float(v) for point in cell["contour"] for v in point]],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": cell["area_px"], "iscrowd": 0,
                "score": cell["blast_probability"], "cell_id": cell["id"]})
    return out


def imagej_roi_zip(data: dict[str, Any]) -> bytes:
    """A Fiji/ImageJ ROI set (``.zip`` of ``.roi`` polygons) named ``<id>-<class>``."""
    from roifile import ImagejRoi

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for cell in data["cells"]:
            name = f"{cell['id']:04d}-{cell['class']}"
            roi = ImagejRoi.frompoints(np.asarray(cell["contour"], np.float32), name=name)
            archive.writestr(f"{name}.roi", roi.tobytes())
    return buffer.getvalue()


def write_extra_formats(out_dir: Path, images: list[tuple[str, dict[str, Any]]],
                        formats: list[str]) -> list[Path]:
    """Write ``coco.json`` (whole run) and/or ``S_rois.zip`` (per image); return paths."""
    written = []
    if "coco" in formats:
        written.append(write_json_atomic(out_dir / "coco.json",
                                         coco_dataset([data for _, data in images])))
    if "imagej-roi" in formats:
        for stem, data in images:
            written.append(write_bytes_atomic(out_dir / f"{stem}_rois.zip", imagej_roi_zip(data)))
    return written
