"""Compose a whole smear field: red cells, platelets, leukocytes, then the camera.

Order of work: scatter red cells and platelets as dye concentrations, turn them
into optical density, paste leukocytes on top (they replace what lies under them,
and their masks go into ``parts``/``instances`` at the same time), maybe draw an
annotation arrow, and finally "photograph" the slide: Beer-Lambert colours,
uneven illumination, defocus blur and sensor noise, each once on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allseg.data.record import BLAST, CYTOPLASM, NUCLEUS
from allseg.synth.cells import (
    NORMAL_WEIGHTS,
    PLATELET_UM,
    RED_CELL_UM,
    SPECS,
    LeukocytePatch,
    Range,
    draw_leukocyte,
    platelet,
    red_cell,
    smooth_noise,
)
from allseg.synth.stain import sample_stain

#: Smear area (µm²) that holds 2..8 leukocytes on average; bigger fields get more.
REFERENCE_AREA_UM2 = 25_000.0
ARROW_PROBABILITY = 0.2
#: Chance that the first two leukocytes of a field touch, and that any later one does.
TOUCH_FIRST, TOUCH_ANY = 0.4, 0.1


@dataclass
class SynthField:
    """A generated image with its exact ground truth.

    ``cells`` holds one dict per instance id: ``id``, ``type``, ``centroid`` [x, y],
    ``diameter_px`` (of the whole drawn cell) and ``is_blast``.
    """

    image: np.ndarray       # (H, W, 3) uint8 RGB
    parts: np.ndarray       # (H, W) uint8: 0 background, 128 cytoplasm, 255 nucleus
    instances: np.ndarray   # (H, W) int32: 0 background, k = cells[k - 1]
    cells: list[dict]
    um_per_px: float


@dataclass(frozen=True)
class _Leukocyte:
    cell_type: str
    centre: tuple[float, float]
    diameter_px: float
    labelled: bool = True   # False: drawn, but background in the masks (crop neighbours)


Window = tuple[tuple[slice, slice], tuple[slice, slice]]


def _window(origin: tuple[int, int], patch_shape: tuple[int, ...],
            canvas_shape: tuple[int, ...]) -> Window | None:
    """Canvas and patch slices where a patch at ``origin`` (x0, y0) overlaps the canvas."""
    x0, y0 = origin
    cx0, cy0 = max(x0, 0), max(y0, 0)
    cx1, cy1 = min(x0 + patch_shape[1], canvas_shape[1]), min(y0 + patch_shape[0], canvas_shape[0])
    if cx1 <= cx0 or cy1 <= cy0:
        return None
    return ((slice(cy0, cy1), slice(cx0, cx1)),
            (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0)))


def _add_patch(canvas: np.ndarray, patch: np.ndarray, centre: tuple[float, float]) -> None:
    """Add a square concentration patch centred at ``centre`` (clipped at the borders)."""
    half = patch.shape[0] // 2
    win = _window((int(centre[0]) - half, int(centre[1]) - half), patch.shape, canvas.shape)
    if win is not None:
        canvas[win[0]] += patch[win[1]]


def _scatter_points(rng: np.random.Generator, n: int, height: int, width: int,
                    margin: float) -> np.ndarray:
    """``n`` points (x, y) clustered by a smooth random density: crowded and sparse areas."""
    grid = smooth_noise(rng, (24, 24), 6.0)
    density = 1.0 / (1.0 + np.exp(-rng.uniform(0.5, 3.0) * (grid + rng.uniform(-0.5, 1.0))))
    cand = rng.uniform(-margin, 1.0 + margin, (4 * n + 8, 2)) * (width, height)
    gx = np.clip(cand[:, 0] / width * 23, 0, 23).astype(int)
    gy = np.clip(cand[:, 1] / height * 23, 0, 23).astype(int)
    keep = rng.random(len(cand)) < density[gy, gx]
    return cand[keep][:n]


def _red_cells(rng: np.random.Generator, height: int, width: int, um_per_px: float,
               red_cell_um: Range) -> np.ndarray:
    """Haemoglobin concentration of the red cells, crowded in places and sparse in others.

    Red cells are stamped from a small bank of drawn cells (rotated, reweighted): drawing
    each of a thousand red cells of a big field separately would cost most of our time.
    """
    area_um2 = height * width * um_per_px**2
    n_red = int(rng.uniform(0.25, 0.75) * area_um2 / (np.pi * 3.75**2))
    bank = [red_cell(rng, rng.uniform(*red_cell_um) / um_per_px) for _ in range(min(n_red, 24))]
    hb = np.zeros((height, width), np.float32)
    centres = _scatter_points(rng, n_red, height, width, 0.02)
    picks = rng.integers(len(bank), size=len(centres)) if bank else []
    turns = rng.integers(4, size=len(centres))
    weights = rng.uniform(0.8, 1.1, len(centres)).astype(np.float32)
    for centre, pick, turn, weight in zip(centres, picks, turns, weights, strict=True):
        _add_patch(hb, np.rot90(bank[pick], turn) * weight, centre)
    return hb


def _platelets(rng: np.random.Generator, od: np.ndarray, um_per_px: float,
               nucleus_od: np.ndarray) -> None:
    """Add a few platelets (small granular purple dots) to the optical density."""
    height, width = od.shape[:2]
    count = int(height * width * um_per_px**2 / 600 * rng.uniform(0.3, 1.5))
    for centre in _scatter_points(rng, count, height, width, 0.0):
        dot = platelet(rng, rng.uniform(*PLATELET_UM) / um_per_px, um_per_px)
        _add_patch(od, dot[..., None] * nucleus_od, centre)


def _paste(od: np.ndarray, parts: np.ndarray, instances: np.ndarray, patch: LeukocytePatch,
           label: int) -> None:
    """Put a leukocyte on top of everything drawn so far; ``label`` 0 keeps it out of the masks."""
    win = _window(patch.origin, patch.cell.shape, parts.shape)
    if win is None:
        return
    canvas, local = win
    cell = patch.cell[local]
    od[canvas][cell] = patch.od[local][cell]
    instances[canvas][cell] = label
    values = np.where(patch.nucleus[local], NUCLEUS, CYTOPLASM) if label else 0
    parts[canvas][cell] = np.broadcast_to(values, cell.shape)[cell]


def _describe(instances: np.ndarray, label: int, leukocyte: _Leukocyte, patch: LeukocytePatch
              ) -> dict:
    """The ``cells`` entry of one labelled leukocyte (centroid of its visible pixels)."""
    canvas, _ = _window(patch.origin, patch.cell.shape, instances.shape)
    ys, xs = np.nonzero(instances[canvas] == label)
    return {"id": label, "type": leukocyte.cell_type,
            "centroid": [float(xs.mean() + canvas[1].start), float(ys.mean() + canvas[0].start)],
            "diameter_px": float(2 * np.sqrt(patch.cell.sum() / np.pi)),
            "is_blast": leukocyte.cell_type == BLAST}


def _draw_arrow(rng: np.random.Generator, od: np.ndarray, instances: np.ndarray,
                cells: list[dict], um_per_px: float) -> None:
    """A black annotation arrow pointing at a cell, never over a leukocyte (masks stay exact)."""
    target = cells[rng.integers(len(cells))]
    occupied = instances > 0
    thickness = max(2, round(rng.uniform(0.5, 1.0) / um_per_px))
    length = rng.uniform(10.0, 20.0) / um_per_px
    reach = target["diameter_px"] / 2 + 2 * thickness
    for angle in rng.uniform(0, 2 * np.pi, 8):
        direction = np.array([np.cos(angle), np.sin(angle)])
        tip = np.asarray(target["centroid"]) + direction * reach
        tail = tip + direction * length
        mask = np.zeros(occupied.shape, np.uint8)
        cv2.arrowedLine(mask, tuple(np.round(tail).astype(int)), tuple(np.round(tip).astype(int)),
                        1, thickness, cv2.LINE_AA, tipLength=0.3)
        drawn = mask > 0
        if not occupied[drawn].any():
            od[drawn] = 4.0
            return


def _illumination(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth light field: off-centre vignetting plus a linear gradient."""
    yy, xx = np.mgrid[-1:1:16j, -1:1:16j].astype(np.float32)
    cx, cy = rng.uniform(-0.3, 0.3, 2)
    light = (rng.uniform(0.95, 1.04) - rng.uniform(0.0, 0.3) * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2
             + rng.uniform(-0.06, 0.06) * xx + rng.uniform(-0.06, 0.06) * yy)
    return cv2.resize(light, (width, height), interpolation=cv2.INTER_LINEAR)


def _photograph(rng: np.random.Generator, od: np.ndarray, background: np.ndarray,
                um_per_px: float) -> np.ndarray:
    """Optical density -> RGB uint8 with illumination, defocus and sensor noise.

    Works in place on ``od`` with OpenCV: fresh full-size arrays are what a big field
    spends its time on.
    """
    h, w = od.shape[:2]
    np.negative(od, out=od)
    cv2.exp(od, dst=od)
    od *= _illumination(rng, h, w)[..., None]
    od *= background * 255.0
    image = cv2.convertScaleAbs(od)
    cv2.GaussianBlur(image, (0, 0), rng.uniform(0.07, 0.2) / um_per_px, dst=image)
    # Uniform 0..255 noise has std 73.6: scale it to the sensor's std and centre it on 0.
    noise = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape)
    gain = rng.uniform(1.0, 4.0) / 73.6
    return cv2.addWeighted(image, 1.0, noise, gain, -127.5 * gain, dst=image)


def _render(rng: np.random.Generator, height: int, width: int, um_per_px: float,
            leukocytes: list[_Leukocyte], arrow_probability: float,
            red_cell_um: Range) -> SynthField:
    stain = sample_stain(rng)
    od = _red_cells(rng, height, width, um_per_px, red_cell_um)[..., None] * stain.od["hb"]
    _platelets(rng, od, um_per_px, stain.od["nucleus"])
    parts = np.zeros((height, width), np.uint8)
    instances = np.zeros((height, width), np.int32)
    drawn = []
    for leukocyte in leukocytes:
        patch = draw_leukocyte(rng, leukocyte.cell_type, leukocyte.centre, leukocyte.diameter_px,
                               um_per_px, stain.od)
        label = len(drawn) + 1 if leukocyte.labelled else 0
        _paste(od, parts, instances, patch, label)
        if label:
            drawn.append((leukocyte, patch))
    cells = [_describe(instances, i + 1, leuk, patch) for i, (leuk, patch) in enumerate(drawn)]
    if cells and rng.random() < arrow_probability:
        _draw_arrow(rng, od, instances, cells, um_per_px)
    image = _photograph(rng, od, stain.background, um_per_px)
    return SynthField(image, parts, instances, cells, float(um_per_px))


def _cell_types(rng: np.random.Generator, n: int, blast_fraction: float) -> list[str]:
    """Cell types of a field; with ``blast_fraction`` > 0 the first one is always a blast."""
    names, weights = list(NORMAL_WEIGHTS), np.array(list(NORMAL_WEIGHTS.values()))
    types = [BLAST if rng.random() < blast_fraction else str(rng.choice(names, p=weights))
             for _ in range(n)]
    if blast_fraction > 0 and n:
        types[0] = BLAST
    return types


def _touching_spot(rng: np.random.Generator, placed: list[tuple[float, float, float]],
                   radius: float, bounds: tuple[float, float, float, float]
                   ) -> tuple[float, float] | None:
    """A centre that makes this cell touch (slightly overlap) one already placed."""
    j = int(rng.integers(len(placed)))
    x, y, r = placed[j]
    angles = rng.uniform(0, 2 * np.pi, 16)
    gap = (r + radius) * rng.uniform(0.85, 0.95)
    cand = np.stack([x + gap * np.cos(angles), y + gap * np.sin(angles)], axis=1)
    others = [p for k, p in enumerate(placed) if k != j]
    return _first_valid(cand, others, radius, bounds)


def _first_valid(cand: np.ndarray, placed: list[tuple[float, float, float]], radius: float,
                 bounds: tuple[float, float, float, float]) -> tuple[float, float] | None:
    """First candidate inside ``bounds`` and clear of every placed cell."""
    x0, y0, x1, y1 = bounds
    ok = (cand[:, 0] >= x0) & (cand[:, 0] <= x1) & (cand[:, 1] >= y0) & (cand[:, 1] <= y1)
    for x, y, r in placed:
        ok &= np.hypot(cand[:, 0] - x, cand[:, 1] - y) > 1.08 * (r + radius)
    hits = np.flatnonzero(ok)
    return (float(cand[hits[0], 0]), float(cand[hits[0], 1])) if len(hits) else None


def _place(rng: np.random.Generator, height: int, width: int, diameters: list[float]
           ) -> list[tuple[float, float] | None]:
    """Centres for leukocytes: apart from each other except a few touching pairs."""
    placed: list[tuple[float, float, float]] = []
    centres: list[tuple[float, float] | None] = []
    touch_first = rng.random() < TOUCH_FIRST
    for i, diameter in enumerate(diameters):
        radius = diameter / 2
        margin = min(0.5 * radius, width / 2, height / 2)
        bounds = (margin, margin, width - margin, height - margin)
        centre = None
        if placed and (rng.random() < TOUCH_ANY or (i == 1 and touch_first)):
            centre = _touching_spot(rng, placed, radius, bounds)
        if centre is None:
            cand = rng.uniform((bounds[0], bounds[1]), (bounds[2], bounds[3]), (64, 2))
            centre = _first_valid(cand, placed, radius, bounds)
        if centre is not None:
            placed.append((*centre, radius))
        centres.append(centre)
    return centres


def generate_field(rng: np.random.Generator, height: int, width: int, um_per_px: float,
                   blast_fraction: float = 0.5, n_leukocytes: int | None = None,
                   red_cell_um: Range = RED_CELL_UM) -> SynthField:
    """A smear field; ``blast_fraction`` 0 gives a healthy image, > 0 at least one blast.

    Without ``n_leukocytes`` the count is 2..8 per ``REFERENCE_AREA_UM2`` of smear (at
    least 1). Leukocytes that find no free spot are left out. ``red_cell_um`` is the range
    of the red cells' stained diameters; their number does not depend on it.
    """
    if n_leukocytes is None:
        area = height * width * um_per_px**2 / REFERENCE_AREA_UM2
        n_leukocytes = max(1, round(int(rng.integers(2, 9)) * area))
    types = _cell_types(rng, n_leukocytes, blast_fraction)
    diameters = [rng.uniform(*SPECS[t].diameter_um) / um_per_px for t in types]
    centres = _place(rng, height, width, diameters)
    leukocytes = [_Leukocyte(t, c, d) for t, c, d in zip(types, centres, diameters, strict=True)
                  if c is not None]
    return _render(rng, height, width, um_per_px, leukocytes, ARROW_PROBABILITY, red_cell_um)


def generate_crop(rng: np.random.Generator, size: int = 257, cell_type: str = BLAST,
                  um_per_px: float = 0.08, red_cell_um: Range = RED_CELL_UM) -> SynthField:
    """A square crop with one leukocyte of ``cell_type`` centred (id 1), as in ALL-IDB2.

    Red cells lie around it; sometimes a second leukocyte pokes in at the border. That
    neighbour is drawn but left out of the masks, which describe the centred cell only.
    """
    if cell_type not in SPECS:
        raise ValueError(f"unknown cell type {cell_type!r}; choose one of {', '.join(SPECS)}")
    centre = ((size - 1) / 2, (size - 1) / 2)
    diameter = rng.uniform(*SPECS[cell_type].diameter_um) / um_per_px
    leukocytes = [_Leukocyte(cell_type, centre, diameter)]
    if rng.random() < 0.15:
        other = str(rng.choice(list(SPECS)))
        other_d = rng.uniform(*SPECS[other].diameter_um) / um_per_px
        angle = rng.uniform(0, 2 * np.pi)
        dist = (diameter + other_d) / 2 * rng.uniform(1.05, 1.3)
        leukocytes.append(_Leukocyte(other, (centre[0] + dist * np.cos(angle),
                                             centre[1] + dist * np.sin(angle)), other_d, False))
    return _render(rng, size, size, um_per_px, leukocytes, 0.0, red_cell_um)
