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
#: Leukocytes measuring more than this (µm) at the red-cell scale show the red-cell scale to
#: be wrong (say, a leukocyte's texture taken for red cells).
MAX_PLAUSIBLE_SIZE_UM = 18.0
#: A leukocyte blob is at least this share nucleus.
MIN_NUCLEUS_SHARE = 0.1
#: Field widths (µm) tried, in this order, when the red cells cannot be trusted: from a
#: crop filled by one cell to a wide field.
PROBE_FIELD_WIDTHS_UM = (16.0, 32.0, 64.0, 128.0, 256.0, 512.0)
#: A few red cells and the leukocytes are weighed together when within this factor.
AGREEMENT = 1.6
#: Leukocytes rescaled coarser may measure down to this share of their size before (and
#: finer, up to its inverse) and still count as the same cells (see grew_with_scale).
SHRINK_TOLERANCE = 0.85
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


def overrules(size_um: float | None) -> bool:
    """Whether leukocytes of this median size (µm, measured at the red-cell scale) show
    the red-cell scale to be wrong: only when they are too large.

    Too large: the texture of one big cell taken for red cells makes the scale far too
    coarse (crops at high magnification). Too small proves nothing: platelet clumps,
    debris and pale leukocytes that the segmenter sees only in part all measure small at
    a right scale (a BCCD field whose one leukocyte is cut by the border read 2.3x coarse
    when a platelet clump overruled 16 red cells; a washed-out Raabin crop whose 5 red
    cells read the right scale, 2.5x coarse when its leukocyte measured 5.5 µm). No
    leukocytes: nothing to say.

    >>> overrules(40.0), overrules(3.0), overrules(10.0), overrules(None)
    (True, False, False, False)
    """
    return size_um is not None and size_um > MAX_PLAUSIBLE_SIZE_UM


def grew_with_scale(before: tuple[float, float], after: tuple[float, float]) -> bool:
    """Whether leukocytes measured ``(scale, size)`` before and after a rescale still look
    like the same cells: seen at a coarser assumed scale, cells measure larger (a little
    smaller is noise, ``SHRINK_TOLERANCE``), and at a finer one smaller.

    When they clearly do not, the segmenter saw different cells (or parts of them) at the
    two scales and the rescaling has nothing to go on: on a washed-out Raabin crop the
    leukocyte measured 6.8 µm at one scale and 5.3 µm at 1.5x coarser, and the rescaling
    walked on to 2.7x too coarse. On ordinary crops the first step from a probe at a
    fine scale measures up to 5% smaller at 1.3-1.4x coarser.

    >>> grew_with_scale((0.05, 8.0), (0.06, 9.5)), grew_with_scale((0.028, 8.0), (0.036, 7.6))
    (True, True)
    >>> grew_with_scale((0.056, 6.8), (0.085, 5.3)), grew_with_scale((0.08, 14.0), (0.06, 17.0))
    (False, False)
    """
    change = after[1] / before[1]
    return change >= SHRINK_TOLERANCE if after[0] > before[0] else change <= 1 / SHRINK_TOLERANCE


def rescaled(um_per_px: float, size_um: float) -> float:
    """The scale at which leukocytes measured ``size_um`` at ``um_per_px`` would be
    typical.

    >>> round(rescaled(0.1, 20.8), 4)
    0.05
    """
    return um_per_px * LEUKOCYTE_SIZE_UM / size_um
