"""ALL-IDB1: full smear fields with blast centroids (``im/`` + ``xyc/``)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from allseg.data.readers.base import (
    Dataset,
    Item,
    image_files,
    read_cells_json,
    read_sized_mask,
)
from allseg.data.record import Record
from allseg.data.weak_labels import label_cells_by_points, leukocyte_masks_from_stain
from allseg.io.images import read_image

#: ``ImNNN_Y``: Y = 1 for an ALL patient, 0 for a healthy one.
LABEL_SUFFIX = re.compile(r"_([01])$")
#: A point this share of the cell diameter outside a weak cell still names it.
POINT_RADIUS_SHARE = 0.25


def image_label(dataset: Dataset, path: Path) -> int | None:
    match = LABEL_SUFFIX.search(path.stem)
    if match is None:
        dataset.warn(f"{path}: name does not end in _0 or _1; image label unknown")
        return None
    return int(match.group(1))


class AllIdb1(Dataset):
    """Reads ``im/ImNNN_Y.jpg`` + ``xyc/ImNNN_Y.xyc``, using exact ``gt/`` masks if present."""

    format = "allidb1"
    expects = "im/ImNNN_Y.jpg + xyc/ImNNN_Y.xyc (optional gt/parts, gt/instances, gt/cells)"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return (root / "im").is_dir() and (root / "xyc").is_dir()

    def _list(self) -> list[Item]:
        xyc = sorted(p for p in self.folder("xyc").iterdir() if p.suffix.lower() == ".xyc")
        items = self.pair(image_files(self.folder("im")), xyc, "xyc")
        for item in items:
            item.info["points"] = self._read_xyc(item.labels["xyc"])
        return items

    def _read_xyc(self, path: Path) -> np.ndarray:
        """``x y`` integer lines; a bad line is reported with its number and skipped."""
        points = []
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                if len(fields) != 2:
                    raise ValueError
                points.append((float(int(fields[0])), float(int(fields[1]))))
            except (ValueError, OverflowError):  # OverflowError: too large for a float
                self.problem(path, f"expected two integers 'x y', got {line.strip()!r}; "
                             "line skipped", line=number)
        return np.array(points, dtype=float).reshape(-1, 2)

    def _load(self, item: Item) -> Record:
        image = read_image(item.image)
        h, w = image.shape[:2]
        points = item.info["points"]
        outside = ((points < 0) | (points >= [w, h])).any(axis=1)
        for x, y in points[outside]:
            self.warn(f"{item.labels['xyc']}: point ({x:g}, {y:g}) outside the {w}x{h} image; "
                      "dropped")
        record = Record(source=item.image, image=image, points=points[~outside],
                        image_label=image_label(self, item.image), dataset=self.format)
        gt = self.root / "gt"
        if (gt / "parts" / f"{item.image.stem}.png").is_file():
            self._add_ground_truth(record, gt, item.image.stem)
        elif self.weak_labels:
            self._add_weak_labels(record)
        return record

    def _add_ground_truth(self, record: Record, gt: Path, stem: str) -> None:
        record.parts = read_sized_mask(gt / "parts" / f"{stem}.png", record.shape).astype(np.uint8)
        record.instances = read_sized_mask(gt / "instances" / f"{stem}.png",
                                           record.shape).astype(np.int32)
        cells = gt / "cells" / f"{stem}.json"
        if cells.is_file():
            record.cell_labels, record.um_per_px = read_cells_json(cells)

    def _add_weak_labels(self, record: Record) -> None:
        record.parts, record.instances = leukocyte_masks_from_stain(record.image, record.points)
        record.weak = True
        areas = np.bincount(record.instances.ravel())[1:]
        areas = areas[areas > 0]
        diameter = 2 * np.sqrt(np.median(areas) / np.pi) if areas.size else 0.0
        record.cell_labels, unmatched = label_cells_by_points(
            record.instances, record.points, POINT_RADIUS_SHARE * diameter)
        if unmatched:
            record.notes.append(f"{unmatched} of {len(record.points)} blast points "
                                "matched no weak cell")
