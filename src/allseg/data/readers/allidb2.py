"""ALL-IDB2: 257x257 single-cell crops ``ImNNN_Y.tif``, label Y = 1 blast, 0 not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from allseg.data.readers.allidb1 import LABEL_SUFFIX
from allseg.data.readers.base import Dataset, Item, image_files, read_cells_json, read_sized_mask
from allseg.data.record import BLAST, CYTOPLASM, LEUKOCYTE, NUCLEUS, Record
from allseg.data.weak_labels import leukocyte_masks_from_stain, nucleus_mask
from allseg.io.images import read_image

SUFFIXES = (".tif", ".tiff")


class AllIdb2(Dataset):
    """Reads crops with optional expert whole-cell masks ``gt/`` and synthetic ``parts/``."""

    format = "allidb2"
    expects = "ImNNN_Y.tif crops (optional gt/ImNNN_Y.tif, parts/ImNNN_Y.png, cells/*.json)"

    @classmethod
    def matches(cls, root: Path) -> bool:
        return any(LABEL_SUFFIX.search(p.stem) for p in image_files(root, SUFFIXES))

    def _list(self) -> list[Item]:
        items = []
        for path in image_files(self.root, SUFFIXES):
            if LABEL_SUFFIX.search(path.stem) is None:
                self.problem(path, "name does not end in _0 or _1 (the crop label); skipped")
                continue
            labels = {"gt": self.root / "gt" / path.name,
                      "parts": self.root / "parts" / f"{path.stem}.png",
                      "cells": self.root / "cells" / f"{path.stem}.json"}
            items.append(Item(path, {k: v for k, v in labels.items() if v.is_file()}))
        stems = {item.image.stem for item in items}
        for folder in ("gt", "parts"):
            if (self.root / folder).is_dir():
                for mask in sorted((self.root / folder).iterdir()):
                    if mask.is_file() and mask.stem not in stems:
                        self.problem(mask, "mask without an image; skipped")
        return items

    def _load(self, item: Item) -> Record:
        image = read_image(item.image)
        label = int(LABEL_SUFFIX.search(item.image.stem).group(1))
        record = Record(source=item.image, image=image, crop_label=label, dataset=self.format)
        cell = None
        if "gt" in item.labels:
            cell = read_sized_mask(item.labels["gt"], record.shape) > 0
            record.instances = cell.astype(np.int32)
        if "parts" in item.labels:
            record.parts = read_sized_mask(item.labels["parts"], record.shape).astype(np.uint8)
            if record.instances is None:
                record.instances = (record.parts > 0).astype(np.int32)
        elif self.weak_labels:
            add_weak_crop_parts(record, cell)
        if record.instances is not None:
            record.cell_labels = {1: BLAST if label else LEUKOCYTE}
        if "cells" in item.labels:
            _, record.um_per_px = read_cells_json(item.labels["cells"])
        return record


def add_weak_crop_parts(record: Record, cell: np.ndarray | None) -> None:
    """Nucleus by colour inside the expert mask, or the stain-found cell nearest the centre."""
    if cell is None:
        _, instances = leukocyte_masks_from_stain(record.image)
        h, w = record.shape
        centre = instances[h // 2, w // 2]
        if centre == 0 and instances.any():
            yy, xx = np.nonzero(instances)
            nearest = np.argmin((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
            centre = instances[yy[nearest], xx[nearest]]
        cell = (instances == centre) & (centre > 0)
        record.instances = cell.astype(np.int32)
    parts = np.where(cell, CYTOPLASM, 0).astype(np.uint8)
    parts[nucleus_mask(record.image, within=cell)] = NUCLEUS
    record.parts, record.weak = parts, True
