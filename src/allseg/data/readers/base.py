"""What every dataset reader shares: listing, lazy loading, warnings and strict mode."""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from skimage import measure

from allseg.data.record import BLAST, LEUKOCYTE, Record
from allseg.data.ruler import red_cell_scale
from allseg.data.weak_labels import mask_in_box, red_cell_area
from allseg.errors import InputError
from allseg.io.images import is_image_file, read_mask


def read_cells_json(path: Path) -> tuple[dict[int, str], float | None]:
    """Cell labels and pixel size from the synthetic generator's ``cells`` JSON."""
    try:
        data = json.loads(path.read_text())
        labels = {int(c["id"]): BLAST if c.get("is_blast") else LEUKOCYTE for c in data["cells"]}
        um = data.get("um_per_px")
        return labels, None if um is None else float(um)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"not a valid cells file ({exc})") from exc


@dataclass(frozen=True)
class Item:
    """One listed image and the label files that belong to it, by role."""

    image: Path
    labels: dict[str, Path] = field(default_factory=dict)
    info: dict = field(default_factory=dict, compare=False)


class Dataset(ABC):
    """A lazily loaded list of records from one folder in one layout.

    Subclasses set ``format`` and ``expects`` and implement ``matches``, ``_list`` and
    ``_load``. Listing problems become warnings (or errors with ``strict``) so that one
    bad file never stops a batch.
    """

    format: ClassVar[str] = ""
    #: One line telling a user what layout this reader looks for.
    expects: ClassVar[str] = ""
    #: Whether ``split`` names a sub-folder of the root (VOC and YOLO have their own).
    split_is_subfolder: ClassVar[bool] = True

    def __init__(self, root: str | Path, split: str | None = None, strict: bool = False,
                 weak_labels: bool = True) -> None:
        root = Path(root)
        if not root.is_dir():
            raise InputError(root, "no such folder")
        if split is not None and self.split_is_subfolder:
            root = root / split
            if not root.is_dir():
                raise InputError(root, f"no folder for split {split!r}")
        self.root = root
        self.split = split
        self.strict = strict
        self.weak_labels = weak_labels
        self.warnings: list[str] = []
        self._items = self._list()

    @classmethod
    @abstractmethod
    def matches(cls, root: Path) -> bool:
        """Whether ``root`` looks like this layout."""

    @abstractmethod
    def _list(self) -> list[Item]:
        """Pair every image with its label files."""

    @abstractmethod
    def _load(self, item: Item) -> Record:
        """Read one item into a record."""

    @property
    def items(self) -> list[Path]:
        return [item.image for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Record:
        return self._load(self._items[index])

    def iter_records(self) -> Iterator[Record]:
        """Yield every readable record; a bad file is skipped with a warning unless strict."""
        for item in self._items:
            try:
                yield self._load(item)
            except InputError as exc:
                if self.strict:
                    raise
                self.warn(f"skipped: {exc}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        warnings.warn(message, stacklevel=3)

    def problem(self, path: Path, problem: str, line: int | None = None) -> None:
        """Report a recoverable problem: an error in strict mode, else a warning."""
        error = InputError(path, problem, line)
        if self.strict:
            raise error
        self.warn(str(error))

    def folder(self, name: str) -> Path:
        """A required sub-folder of the root, or an InputError naming it."""
        path = self.root / name
        if not path.is_dir():
            raise InputError(path, f"missing folder (the {self.format} layout needs "
                             f"{self.expects})")
        return path

    def pair(self, images: Iterable[Path], labels: Iterable[Path], role: str) -> list[Item]:
        """Match images and label files by file stem; report the ones left alone."""
        by_stem = {p.stem: p for p in labels}
        items = []
        for image in sorted(images):
            label = by_stem.pop(image.stem, None)
            if label is None:
                self.problem(image, f"no {role} file for this image; skipped")
            else:
                items.append(Item(image, {role: label}))
        for label in sorted(by_stem.values()):
            self.problem(label, f"{role} file without an image; skipped")
        return items

    def split_names(self, split_file: Path) -> set[str] | None:
        """Stems listed in a split file, or None when no split was asked for."""
        if self.split is None:
            return None
        if not split_file.is_file():
            raise InputError(split_file, f"no split file for split {self.split!r}")
        return {s.strip() for s in split_file.read_text(errors="replace").splitlines() if s.strip()}


def image_files(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Image files directly in ``folder`` (optionally only these suffixes), sorted."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)
                  and (suffixes is None or p.suffix.lower() in suffixes))


def read_sized_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Read a label mask and insist it matches the image size."""
    mask = read_mask(path)
    if mask.ndim != 2 or mask.shape != shape:
        raise InputError(path, f"mask is {mask.shape[1::-1]} (w, h) but the image is "
                         f"{shape[::-1]}")
    return mask


def components(cell: np.ndarray) -> np.ndarray:
    """Instances as the connected components of a cell mask."""
    return measure.label(cell, connectivity=1).astype(np.int32)


def all_leukocytes(instances: np.ndarray) -> dict[int, str]:
    return {int(k): LEUKOCYTE for k in np.unique(instances) if k != 0}


def clip_boxes(dataset: Dataset, source: Path, boxes: np.ndarray,
               shape: tuple[int, int], warn: bool = True) -> np.ndarray:
    """Clip ``x0, y0, x1, y1`` boxes to the image and drop empty ones (with a warning)."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    h, w = shape
    clipped = np.clip(boxes, 0, [w, h, w, h])
    empty = ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
             | ~np.isfinite(clipped).all(axis=1))  # a NaN coordinate makes no box
    for box in boxes[empty] if warn else ():
        dataset.warn(f"{source}: empty box {box.tolist()} after clipping to {w}x{h}; dropped")
    return clipped[~empty]


def box_record(dataset: Dataset, source: Path, image: np.ndarray, boxes: np.ndarray,
               red_cell_boxes: np.ndarray | None = None) -> Record:
    """A record of leukocyte boxes, with weak masks inside them when asked for.

    Red-cell boxes, when the dataset has them, are kept and set the record's pixel size
    (:func:`allseg.data.ruler.red_cell_scale`).
    """
    boxes = clip_boxes(dataset, source, boxes, image.shape[:2])
    record = Record(source=source, image=image, boxes=boxes, dataset=dataset.format)
    if red_cell_boxes is not None:
        record.red_cell_boxes = clip_boxes(dataset, source, red_cell_boxes, image.shape[:2],
                                           warn=False)  # many tiny red-cell boxes: no noise
        record.um_per_px = red_cell_scale(record.red_cell_boxes, image.shape[:2])
    if not dataset.weak_labels:
        return record
    parts = np.zeros(image.shape[:2], np.uint8)
    instances = np.zeros(image.shape[:2], np.int32)
    red_cells = None
    if record.red_cell_boxes is not None and len(record.red_cell_boxes):
        red_cells = red_cell_area(record.red_cell_boxes, image.shape[:2])
    for k, box in enumerate(boxes, start=1):
        box_parts, cell = mask_in_box(image, box, red_cells)
        free = cell & (instances == 0)
        instances[free] = k
        parts[free] = box_parts[free]
    record.parts, record.instances, record.weak = parts, instances, True
    record.cell_labels = all_leukocytes(instances)
    return record
