"""Leukocytes as a second ruler, for images whose red cells cannot be measured.

Single-cell crops (ALL-IDB2, CellaVision, Zheng) show a leukocyte and, at best, pieces
of red cells; rapid stains leave red cells as faint ghosts. Following Cellpose's size
model (estimate, segment, measure, re-estimate), the predictor segments at a first
guess, measures the leukocytes it finds, and rescales until they have a typical size.
Leukocytes vary more than red cells (a small lymphocyte is ~8 µm, a monocyte ~15 µm),
so this ruler is less sure than many red cells, and says so.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Median leukocyte size (:func:`blob_sizes`) the segmenter draws, in µm. Fitted on
#: tuning images at their known scale (bench/calibrate_scale.py).
LEUKOCYTE_SIZE_UM = 10.4
#: An image whose leukocytes measure outside this range (µm) at the red-cell scale has a
#: wrong red-cell scale (say, a leukocyte's texture taken for red cells).
PLAUSIBLE_SIZE_UM = (5.5, 18.0)
#: A leukocyte blob is at least this share nucleus.
MIN_NUCLEUS_SHARE = 0.1
#: Field widths (µm) tried, in this order, when the red cells cannot be trusted: from a
#: crop filled by one cell to a wide field.
PROBE_FIELD_WIDTHS_UM = (16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
#: A few red cells and the leukocytes are weighed together when within this factor.
AGREEMENT = 1.6
#: Confidence of a scale from leukocytes alone.
LEUKOCYTE_CONFIDENCE = 0.4


def sizes(labels: np.ndarray, nucleus: np.ndarray, um_per_px: float, min_area_px: int
          ) -> np.ndarray:
    """Size (µm) of each labelled leukocyte: the geometric mean of its equivalent diameter
    and its nucleus's, at the given scale.

    The nucleus takes part because cell sizes vary more between leukocyte types than
    nucleus sizes (a lymphocyte is small with a big nucleus, a neutrophil big with a
    small one). Labels with little nucleus (red-cell ghosts, stain artefacts) are not
    leukocytes; labels cut by the border are left out unless every one is.

    >>> labels = np.zeros((40, 40), np.int32); labels[10:30, 10:30] = 1
    >>> sizes(labels, labels > 0, 0.5, 10).round(2).tolist()
    [11.28]
    """
    if not labels.any():
        return np.zeros(0)
    areas = np.bincount(labels.ravel())
    nuclear = np.bincount(labels.ravel(), weights=nucleus.ravel().astype(float),
                          minlength=len(areas))
    keep = (areas >= min_area_px) & (nuclear >= MIN_NUCLEUS_SHARE * areas)
    keep[0] = False
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    whole = keep.copy()
    whole[border] = False
    ids = np.flatnonzero(whole if whole.any() else keep)
    return 2.0 * np.sqrt(np.sqrt(areas[ids] * nuclear[ids]) / np.pi) * um_per_px


def median_size(class_prob: np.ndarray, instances: np.ndarray | None, um_per_px: float,
                min_area_px: int) -> float | None:
    """Median leukocyte size (µm, see :func:`sizes`), or None without leukocytes.

    With ``instances`` None, cells are the blobs of the class map rather than the split
    instances: a cell seen far too large is cut by the centre map into pieces of ordinary
    size, but its pieces still form one blob of its true size. With instances, touching
    cells count apart (the check of a red-cell scale in a crowded field).
    """
    labels = ndi.label(class_prob[0] < 0.5)[0] if instances is None else instances
    found = sizes(labels, class_prob[2] > 0.5, um_per_px, min_area_px)
    return float(np.median(found)) if len(found) else None


def overrules(size_um: float | None, red_cell_confidence: float) -> bool:
    """Whether leukocytes of this median size (µm, measured at the red-cell scale) show
    the red-cell scale to be wrong.

    Too large, always: the texture of one big cell taken for red cells makes the scale
    far too coarse (crops at high magnification). Too small, only when the red cells were
    few: with many red cells measured, leukocytes that come out tiny are platelet clumps
    or debris, not proof against the red cells (a BCCD field with its one leukocyte cut
    by the border read 2.3x coarse when a platelet clump overruled 16 red cells). No
    leukocytes: nothing to say.

    >>> overrules(40.0, 1.0), overrules(3.0, 0.6), overrules(3.0, 1.0), overrules(10.0, 0.6)
    (True, True, False, False)
    >>> overrules(None, 0.5)
    False
    """
    low, high = PLAUSIBLE_SIZE_UM
    if size_um is None:
        return False
    return size_um > high or (size_um < low and red_cell_confidence < 1.0)


def rescaled(um_per_px: float, size_um: float) -> float:
    """The scale at which leukocytes measured ``size_um`` at ``um_per_px`` would be
    typical.

    >>> round(rescaled(0.1, 20.8), 4)
    0.05
    """
    return um_per_px * LEUKOCYTE_SIZE_UM / size_um
