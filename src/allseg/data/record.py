"""The one record type every reader yields and every trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Pixel values of the parts mask (the Zheng convention).
BACKGROUND, CYTOPLASM, NUCLEUS = 0, 128, 255
#: Cell class names used in ``cell_labels`` and outputs.
BLAST, LEUKOCYTE = "blast", "leukocyte"


@dataclass
class Record:
    """One image and whatever labels its dataset gives.

    Coordinates are in this image's pixels, ``x`` to the right and ``y`` down.

    Attributes:
        source: the image file it came from.
        image: ``(H, W, 3)`` RGB ``uint8``.
        parts: ``(H, W)`` ``uint8`` with 0 background, 128 cytoplasm, 255 nucleus.
        instances: ``(H, W)`` ``int32``, 0 background, k = leukocyte k.
        points: ``(N, 2)`` float ``x, y`` blast centroids (ALL-IDB1 ``.xyc``).
        boxes: ``(N, 4)`` float ``x0, y0, x1, y1`` leukocyte boxes.
        red_cell_boxes: ``(M, 4)`` red-cell boxes (a ruler, and cells that must not be
            taken for leukocytes).
        cell_labels: instance id -> ``"blast"`` or ``"leukocyte"``.
        image_label: 1 = from an ALL patient / contains blasts, 0 = healthy.
        crop_label: for single-cell crops (ALL-IDB2): 1 blast, 0 not.
        weak: True when masks were derived from colour, not drawn by a person.
        um_per_px: physical pixel size when the dataset states it (or its red-cell
            boxes imply it).
        dataset: short name of the reader that produced it.
        cell_type: the leukocyte type of a single-cell image when the dataset names it
            (``lymphocyte``, ``neutrophil``...); the classifier's loss can weigh it.
        group: the patient or slide the image comes from; training splits by it.
    """

    source: Path
    image: np.ndarray
    parts: np.ndarray | None = None
    instances: np.ndarray | None = None
    points: np.ndarray | None = None
    boxes: np.ndarray | None = None
    red_cell_boxes: np.ndarray | None = None
    cell_labels: dict[int, str] | None = None
    image_label: int | None = None
    crop_label: int | None = None
    weak: bool = False
    um_per_px: float | None = None
    dataset: str = ""
    cell_type: str | None = None
    group: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.source).stem

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])
