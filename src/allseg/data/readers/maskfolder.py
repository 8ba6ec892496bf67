"""Folders of images with part masks (the Zheng convention: 0 / 128 cytoplasm / 255 nucleus)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from allseg.data.readers.base import (
    Dataset,
    Item,
    all_leukocytes,
    components,
    image_files,
    read_cells_json,
    read_sized_mask,
)
from allseg.data.record import CYTOPLASM, NUCLEUS, Record
from allseg.errors import InputError
from allseg.io.images import read_image

#: Image suffixes of the "paired files in one folder" layout, whose masks are ``.png``.
PAIRED_SUFFIXES = (".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
ZHENG_VALUES = {0, CYTOPLASM, NUCLEUS}


def parts_from_mask(mask: np.ndarray, path: Path) -> tuple[np.ndarray, bool]:
    """Zheng parts as they are; any two-value mask becomes whole cells (nucleus unknown).

    Returns the parts and whether the nucleus is known.
    """
    values = {int(v) for v in np.unique(mask)}
    if values <= ZHENG_VALUES and values != {0, NUCLEUS}:
        return mask.astype(np.uint8), True
    if len(values) <= 2:
        background = 0 if 0 in values else min(values)
        if len(values) == 1 and background != 0:
            background = -1  # a uniform non-zero mask: the whole crop is the cell
        return np.where(mask != background, CYTOPLASM, 0).astype(np.uint8), False
    raise InputError(path, f"mask values {sorted(values)[:8]} are neither 0/128/255 parts "
                     "nor a two-value cell mask")


class MaskFolder(Dataset):
    """Reads ``images/`` + ``masks/`` (+ ``instances/``) or same-stem pairs in one folder."""

    format = "masks"
    expects = ("images/NAME.ext + masks/NAME.png (optional instances/NAME.png), "
               "or NAME.bmp|jpg|tif + NAME.png mask side by side")

    @classmethod
    def matches(cls, root: Path) -> bool:
        if (root / "images").is_dir() and (root / "masks").is_dir():
            return True
        pngs = {p.stem for p in image_files(root, (".png",))}
        return any(p.stem in pngs for p in image_files(root, PAIRED_SUFFIXES))

    def _list(self) -> list[Item]:
        if (self.root / "images").is_dir() or (self.root / "masks").is_dir():
            images = image_files(self.folder("images"))
            items = self.pair(images, image_files(self.folder("masks")), "mask")
            return [Item(it.image, {**it.labels, **self._optional_labels(it.image.stem)})
                    for it in items]
        return self.pair(image_files(self.root, PAIRED_SUFFIXES),
                         image_files(self.root, (".png",)), "mask")

    def _optional_labels(self, stem: str) -> dict[str, Path]:
        """Synthetic data's exact ``instances/NAME.png`` and ``cells/NAME.json``, if present."""
        candidates = {"instances": self.root / "instances" / f"{stem}.png",
                      "cells": self.root / "cells" / f"{stem}.json"}
        return {role: path for role, path in candidates.items() if path.is_file()}

    def _load(self, item: Item) -> Record:
        image = read_image(item.image)
        record = Record(source=item.image, image=image, dataset=self.format)
        record.parts, nucleus_known = parts_from_mask(
            read_sized_mask(item.labels["mask"], record.shape), item.labels["mask"])
        if not nucleus_known:
            record.notes.append("two-value mask: whole cells marked as cytoplasm, nucleus unknown")
        if "instances" in item.labels:
            record.instances = read_sized_mask(item.labels["instances"],
                                               record.shape).astype(np.int32)
        else:
            record.instances = components(record.parts > 0)
        if "cells" in item.labels:
            record.cell_labels, record.um_per_px = read_cells_json(item.labels["cells"])
        else:
            record.cell_labels = all_leukocytes(record.instances)
        return record
