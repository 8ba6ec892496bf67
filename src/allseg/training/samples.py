"""Turn reader records into in-memory training samples for each stage.

Records are resampled to the canonical pixel size once, before any split or
augmentation, so an epoch never decodes a 2592x1944 JPEG again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from allseg.data.record import BLAST, CYTOPLASM, NUCLEUS, Record
from allseg.inference.scale import ResolvedScale
from allseg.postprocess.crops import balance_background, cell_crops

#: Class index of each training target pixel; IGNORE marks pixels without a label.
CLASS_BACKGROUND, CLASS_CYTOPLASM, CLASS_NUCLEUS, IGNORE = 0, 1, 2, 255


@dataclass
class SegSample:
    """A canonical-scale image with per-pixel class and centre targets."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    classes: np.ndarray  # (H, W) uint8 in {0, 1, 2, IGNORE}
    centre: np.ndarray  # (H, W) float32 in [0, 1]


@dataclass
class CellSample:
    """A fixed-size crop around one cell with its blast label."""

    name: str
    crop: np.ndarray  # (S, S, 3) uint8
    label: int  # 1 blast, 0 other leukocyte
    real: bool = False  # from a photo on disk, not from the synthetic generator
    cell_type: str | None = None  # the normal type when the dataset names it
    group: str = ""  # the split key: patient or slide, else the image

    def loss_weight(self, type_weights: dict[str, float]) -> float:
        """This cell's weight in the classifier's loss: its type's, else 1."""
        return type_weights.get(self.cell_type, 1.0) if self.cell_type else 1.0


def parts_to_classes(parts: np.ndarray) -> np.ndarray:
    """Map a 0/128/255 parts mask to class indices 0/1/2.

    >>> parts_to_classes(np.array([[0, 128, 255]], np.uint8)).tolist()
    [[0, 1, 2]]
    """
    classes = np.zeros(parts.shape, np.uint8)
    classes[parts == CYTOPLASM] = CLASS_CYTOPLASM
    classes[parts == NUCLEUS] = CLASS_NUCLEUS
    return classes


def centre_map(instances: np.ndarray) -> np.ndarray:
    """Distance to each cell's border, divided by its maximum: 1 at every cell centre.

    >>> m = centre_map(np.pad(np.ones((5, 5), np.int32), 1))
    >>> float(m.max()), float(m[0, 0])
    (1.0, 0.0)
    """
    dist = ndi.distance_transform_edt(instances > 0).astype(np.float32)
    if not instances.any():
        return dist
    ids = instances.ravel()
    peak = np.zeros(int(ids.max()) + 1, np.float32)
    np.maximum.at(peak, ids, dist.ravel())
    peak[0] = 1.0
    return dist / np.maximum(peak[instances], 1e-6)


def _resize(arr: np.ndarray, factor: float, nearest: bool) -> np.ndarray:
    if abs(factor - 1.0) < 1e-3:
        return arr
    h, w = arr.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    if nearest:
        dtype = arr.dtype
        src = arr.astype(np.float32) if dtype == np.int32 else arr
        return cv2.resize(src, size, interpolation=cv2.INTER_NEAREST).astype(dtype)
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(arr, size, interpolation=interp)


def seg_sample(record: Record, um_per_px: float, canonical_um_per_px: float) -> SegSample | None:
    """Resample a record with a parts mask to the canonical scale, or None without one."""
    if record.parts is None:
        return None
    factor = um_per_px / canonical_um_per_px
    image = _resize(record.image, factor, nearest=False)
    parts = _resize(record.parts, factor, nearest=True)
    if record.instances is not None:
        instances = _resize(record.instances.astype(np.int32), factor, nearest=True)
    else:
        instances = ndi.label(parts > 0)[0].astype(np.int32)
    classes = parts_to_classes(parts)
    return SegSample(record.name, image, classes, centre_map(instances))


def _cell_centres(record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (N, 2) and labels (N,) of the record's labelled cells."""
    if record.crop_label is not None:
        h, w = record.shape
        if record.instances is not None and record.instances.any():
            ys, xs = np.nonzero(record.instances)
            centre = [xs.mean(), ys.mean()]
        else:
            centre = [(w - 1) / 2, (h - 1) / 2]
        return np.array([centre], np.float32), np.array([record.crop_label])
    if record.instances is None or not record.cell_labels:
        return np.zeros((0, 2), np.float32), np.zeros(0, int)
    ids = np.array(sorted(record.cell_labels), int)
    centres = np.array(ndi.center_of_mass(np.ones(record.shape), record.instances, ids),
                       np.float32).reshape(-1, 2)[:, ::-1]
    labels = np.array([int(record.cell_labels[i] == BLAST) for i in ids])
    return centres, labels


def cell_samples(record: Record, um_per_px: float, crop_size: int, crop_um: float,
                 real: bool = False, group: str = "", balance: bool = False
                 ) -> list[CellSample]:
    """Crops of a fixed physical field of view around every labelled cell of a record
    (a record's ``cell_type`` names its normal cells: single-cell images)."""
    centres, labels = _cell_centres(record)
    if len(centres) == 0:
        return []
    side_px = crop_um / um_per_px
    # cell_crops shows ``context * diameter`` pixels; context 1 makes the side exact.
    crops = cell_crops(record.image, centres, np.full(len(centres), side_px), out_size=crop_size,
                       context=1.0)
    if balance:
        crops = balance_background(crops)
    return [CellSample(f"{record.name}#{i}", crop, int(lab), real,
                       None if lab else record.cell_type, group or record.name)
            for i, (crop, lab) in enumerate(zip(crops, labels, strict=True))]


def record_scale(record: Record, source_um_per_px: float | None,
                 estimate: ResolvedScale) -> tuple[float, bool]:
    """The record's pixel size and whether it is trusted: from the dataset (or its red-cell
    boxes), the recipe, or the ``estimate`` from the image (trusted when its red cells
    decided)."""
    if record.um_per_px:
        return float(record.um_per_px), True
    if source_um_per_px:
        return float(source_um_per_px), True
    return estimate.um_per_px, estimate.source == "red-cells"


def split_names(names: list[str], val_fraction: float, seed: int, folds: int = 0,
                fold: int = 0) -> tuple[set[str], set[str]]:
    """Split image names into train and validation sets, by image, never by patch.

    With ``folds`` > 1 the validation set is fold ``fold`` of a seeded k-fold partition.

    >>> tr, va = split_names([f"im{i}" for i in range(10)], 0.2, seed=0)
    >>> len(tr), len(va), tr.isdisjoint(va)
    (8, 2, True)
    """
    order = sorted(set(names))
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    if folds > 1:
        val = set(order[fold::folds])
    else:
        n_val = round(len(order) * val_fraction)
        if val_fraction > 0 and len(order) > 1:
            n_val = max(1, n_val)
        val = set(order[:n_val])
    return set(order) - val, val


def source_key(path: str | Path, name: str) -> str:
    """A name unique across datasets (two datasets may both have ``001.png``)."""
    return f"{Path(path).name}/{name}"
