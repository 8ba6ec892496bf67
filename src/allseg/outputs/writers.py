"""Write per-image outputs and per-run tables; every file appears atomically.

A crash or Ctrl-C mid-run never leaves a truncated file that a later
``--skip-existing`` would mistake for a finished one.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from allseg import DISCLAIMER, __version__
from allseg.io.atomic import write_image_atomic, write_json_atomic, write_text_atomic
from allseg.outputs.geojson import to_geojson
from allseg.outputs.overlay import draw_overlay
from allseg.outputs.schema import ALL_SUSPECTED, FEATURE_KEYS, Failure, ImageResult

MAX_PNG16_ID = 65535
CSV_COLUMNS = ("image", "id", "class", "blast_probability", "centroid_x", "centroid_y",
               "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px", *FEATURE_KEYS)


def output_paths(out_dir: str | Path, stem: str) -> dict[str, Path]:
    """The five per-image files, keyed ``json, parts, instances, overlay, geojson``."""
    out = Path(out_dir)
    return {"json": out / f"{stem}.json", "parts": out / f"{stem}_parts.png",
            "instances": out / f"{stem}_instances.png", "overlay": out / f"{stem}_overlay.png",
            "geojson": out / f"{stem}.geojson"}


def outputs_complete(out_dir: str | Path, stem: str) -> bool:
    """True when all five per-image files exist (atomic writes make existence enough)."""
    return all(path.is_file() for path in output_paths(out_dir, stem).values())


def write_image_outputs(result: ImageResult, image: np.ndarray, out_dir: str | Path,
                        stem: str) -> dict[str, Path]:
    """Write ``S.json``, ``S_parts.png``, ``S_instances.png``, ``S_overlay.png`` and
    ``S.geojson``; the JSON goes last, after everything it describes."""
    expected = (result.height, result.width)
    for name, array in (("image", image), ("parts", result.parts),
                        ("instances", result.instances)):
        if array.shape[:2] != expected:
            raise ValueError(f"{name} is {array.shape[:2]}, expected original size {expected}")
    if result.instances.max(initial=0) > MAX_PNG16_ID:
        raise ValueError(f"{result.image}: {int(result.instances.max())} cell ids do not fit "
                         f"a 16-bit instances PNG (max {MAX_PNG16_ID})")
    paths = output_paths(out_dir, stem)
    # Each PNG is encoded on every core (allseg.io.png); encoding them one after another
    # measured faster than side by side. Any failure is raised before S.json is written.
    write_image_atomic(paths["parts"], result.parts.astype(np.uint8))
    write_image_atomic(paths["instances"], result.instances.astype(np.uint16))
    write_image_atomic(paths["overlay"], draw_overlay(image, result))
    write_json_atomic(paths["geojson"], to_geojson(result))
    write_json_atomic(paths["json"], result.to_json())
    return paths


def csv_rows(data: dict[str, Any]) -> list[list[Any]]:
    """CSV rows of one image, from its ``S.json`` contract (so skipped images count too)."""
    return [[data["image"], cell["id"], cell["class"], cell["blast_probability"],
             *cell["centroid"], *cell["bbox"], cell["area_px"],
             *(cell["features"].get(k) for k in FEATURE_KEYS)]
            for cell in data["cells"]]


def cells_csv(rows: list[list[Any]]) -> str:
    """The ``cells.csv`` text: a header row, then the rows, unknown values left empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


class RunWriter:
    """Collects every image of a run into ``cells.csv`` and ``summary.json``.

    Only the small table rows are kept, never the masks. Files are written by
    :meth:`close` (also on leaving a ``with`` block, even after an error, so a
    crashed run still reports what it did).
    """

    def __init__(self, out_dir: str | Path, model: dict[str, Any] | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.model = model
        self.rows: list[list[Any]] = []
        self.images: list[dict[str, Any]] = []
        self.failures: list[Failure] = []

    def add(self, item: ImageResult | Failure) -> None:
        if isinstance(item, Failure):
            self.failures.append(item)
            return
        self.add_json(item.to_json())

    def add_json(self, data: dict[str, Any]) -> None:
        """Add an image from its ``S.json`` contents (e.g. one finished by an earlier run)."""
        if self.model is None:
            self.model = data.get("model")
        self.rows.extend(csv_rows(data))
        timings = data.get("timings") or {}
        self.images.append({"image": data["image"], "verdict": data["verdict"],
                            "blast_count": data["blast_count"],
                            "leukocyte_count": data["leukocyte_count"],
                            "seconds": float(timings.get("total", sum(timings.values())))})

    def add_failure(self, path: str | Path, error_message: str) -> None:
        self.add(Failure(str(path), error_message))

    def summary(self) -> dict[str, Any]:
        totals = {
            "images": len(self.images),
            "failures": len(self.failures),
            "all_suspected": sum(im["verdict"] == ALL_SUSPECTED for im in self.images),
            "blasts": sum(im["blast_count"] for im in self.images),
            "leukocytes": sum(im["leukocyte_count"] for im in self.images),
            "seconds": sum(im["seconds"] for im in self.images),
        }
        return {"allseg_version": __version__, "model": self.model or {},
                "images": self.images,
                "failures": [{"image": f.image, "error": f.error} for f in self.failures],
                "totals": totals, "disclaimer": DISCLAIMER}

    def close(self) -> dict[str, Path]:
        """Write ``cells.csv`` (UTF-8, header row) and ``summary.json``; return their paths."""
        paths = {"csv": self.out_dir / "cells.csv", "summary": self.out_dir / "summary.json"}
        write_text_atomic(paths["csv"], cells_csv(self.rows))
        write_json_atomic(paths["summary"], self.summary())
        return paths

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
