"""Shapes and textures of each cell type, drawn into small local patches.

Every cell is drawn in a patch just around it (so a 2592x1944 field costs only its
cells' areas) and pasted into the canvas by ``smear.py``. Leukocyte masks are
rasterised polygons, and the paint is derived from those very masks, so the
ground truth is exact by construction.

Sizes are in µm and converted with ``um_per_px``. Dyes are concentration maps of
the components in :mod:`allseg.synth.stain`; no colour is chosen here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from allseg.data.record import BLAST

Range = tuple[float, float]

LEUKOCYTE_TYPES = (BLAST, "lymphocyte", "neutrophil", "monocyte", "eosinophil",
                   "reactive_lymphocyte")
#: Normal leukocytes and how common they are among the non-blast cells we draw.
NORMAL_WEIGHTS = {"lymphocyte": 0.28, "neutrophil": 0.28, "monocyte": 0.14, "eosinophil": 0.1,
                  "reactive_lymphocyte": 0.2}
#: The stained disc of a red cell as a photo shows it. The 7.5 µm ruler of boxes drawn
#: around real red cells (BCCD, TXL-PBC) includes their pale rim: measured on those photos,
#: the stained disc is 1/1.22 of the box (allseg.inference.scale.BOX_PER_INSCRIBED).
RED_CELL_UM = (5.5, 7.0)
PLATELET_UM = (2.0, 3.0)


@dataclass(frozen=True)
class LeukocyteSpec:
    """How one leukocyte type looks; every range is sampled per cell."""

    diameter_um: Range
    nc_ratio: Range                         # nucleus area / cell area (lobed: approximate)
    nucleus: str                            # "round", "kidney" or "lobed"
    chromatin: str                          # "clumped", "lacy" or "fine"
    chromatin_density: Range
    cytoplasm: tuple[tuple[str, Range], ...]  # (dye component, concentration)
    roughness: float = 0.04                 # outline irregularity
    lobes: tuple[int, int] = (1, 1)
    cleft_prob: float = 0.0                 # chance of a notch in a round nucleus
    eccentricity: Range = (0.0, 0.5)        # nucleus offset, share of the free space
    granules: str | None = None             # dye component of cytoplasmic granules
    granule_um: float = 0.3
    granule_threshold: float = 0.9                # higher: fewer granules
    max_vacuoles: int = 0
    max_nucleoli: int = 0
    edge_basophilia: bool = False           # darker blue rim where the cell meets red cells


SPECS: dict[str, LeukocyteSpec] = {
    BLAST: LeukocyteSpec(
        diameter_um=(10.0, 18.0), nc_ratio=(0.84, 0.92), nucleus="round", chromatin="fine",
        chromatin_density=(0.75, 1.15), cytoplasm=(("baso", (0.7, 1.1)),), roughness=0.08,
        cleft_prob=0.4, eccentricity=(0.0, 0.4), max_nucleoli=2),
    "lymphocyte": LeukocyteSpec(
        diameter_um=(7.0, 10.0), nc_ratio=(0.6, 0.78), nucleus="round", chromatin="clumped",
        chromatin_density=(1.05, 1.5), cytoplasm=(("baso", (0.25, 0.5)),), cleft_prob=0.15),
    "reactive_lymphocyte": LeukocyteSpec(
        diameter_um=(10.0, 15.0), nc_ratio=(0.4, 0.58), nucleus="round", chromatin="clumped",
        chromatin_density=(0.9, 1.3), cytoplasm=(("baso", (0.45, 0.8)),), roughness=0.07,
        cleft_prob=0.15, eccentricity=(0.3, 0.9), edge_basophilia=True),
    "neutrophil": LeukocyteSpec(
        diameter_um=(10.0, 13.0), nc_ratio=(0.3, 0.45), nucleus="lobed", chromatin="clumped",
        chromatin_density=(1.1, 1.5), cytoplasm=(("lilac", (0.6, 1.0)),), lobes=(2, 5),
        granules="lilac", granule_um=0.25),
    "monocyte": LeukocyteSpec(
        diameter_um=(14.0, 18.0), nc_ratio=(0.4, 0.55), nucleus="kidney", chromatin="lacy",
        chromatin_density=(0.8, 1.15), cytoplasm=(("baso", (0.3, 0.5)), ("nucleus", (0.05, 0.12))),
        roughness=0.08, eccentricity=(0.2, 0.6), max_vacuoles=6),
    "eosinophil": LeukocyteSpec(
        diameter_um=(11.0, 14.0), nc_ratio=(0.3, 0.45), nucleus="lobed", chromatin="clumped",
        chromatin_density=(1.0, 1.4), cytoplasm=(("eos", (0.15, 0.3)),), lobes=(2, 2),
        granules="eos", granule_um=0.5, granule_threshold=0.0),
}

_PHI = np.linspace(0.0, 2 * np.pi, 72, endpoint=False)


@dataclass(frozen=True)
class LeukocytePatch:
    """One drawn leukocyte: masks and optical density of a patch at ``origin`` (x0, y0)."""

    cell: np.ndarray      # bool (h, w)
    nucleus: np.ndarray   # bool (h, w), inside ``cell``
    od: np.ndarray        # float32 (h, w, 3)
    origin: tuple[int, int]


@dataclass(frozen=True)
class _Frame:
    """Maps a unit-circle cell outline to patch pixels: centre, semi-axes, rotation."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float

    def to_patch(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.angle), np.sin(self.angle)
        x, y = x * self.a, y * self.b
        return np.stack([self.cx + c * x - s * y, self.cy + s * x + c * y], axis=-1)

    def polygon(self, radius: np.ndarray, centre: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """Patch points of the closed curve ``radius(phi)`` around a unit-frame ``centre``."""
        return self.to_patch(centre[0] + radius * np.cos(_PHI), centre[1] + radius * np.sin(_PHI))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-variance noise with blobs about ``scale_px`` wide (cheap: upsampled grid)."""
    h, w = shape
    if scale_px <= 1.5:
        return rng.standard_normal(shape, dtype=np.float32)
    grid = rng.standard_normal((int(h / scale_px) + 3, int(w / scale_px) + 3), dtype=np.float32)
    size = (int(grid.shape[1] * scale_px), int(grid.shape[0] * scale_px))
    noise = cv2.resize(grid, size, interpolation=cv2.INTER_CUBIC)[:h, :w]
    return (noise - noise.mean()) / (noise.std() + 1e-6)


def _wobble(rng: np.random.Generator, roughness: float) -> np.ndarray:
    """A smooth random radius multiplier around the circle, mean 1 (irregular outlines)."""
    k = np.arange(2, 6)[:, None]
    amp = rng.normal(0.0, roughness, (4, 1)) / (k - 1)
    phase = rng.uniform(0, 2 * np.pi, (4, 1))
    return 1.0 + (amp * np.cos(k * _PHI + phase)).sum(axis=0)


def _notch(rng: np.random.Generator, depth: Range, width: Range) -> np.ndarray:
    """Radius multiplier with one indentation: a cleft (narrow) or a kidney (wide)."""
    d = np.angle(np.exp(1j * (_PHI - rng.uniform(0, 2 * np.pi))))
    return 1.0 - rng.uniform(*depth) * np.exp(-((d / rng.uniform(*width)) ** 2))


def _fill(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """Union of filled polygons (sub-pixel accurate) as a bool mask."""
    mask = np.zeros(shape, np.uint8)
    for pts in polygons:
        cv2.fillPoly(mask, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return mask.astype(bool)


def _round_nucleus(rng: np.random.Generator, spec: LeukocyteSpec, frame: _Frame,
                   outline: np.ndarray) -> list[np.ndarray]:
    """A round, clefted or kidney nucleus scaled to the sampled N:C area ratio."""
    radius = outline * _wobble(rng, 0.02)
    if spec.nucleus == "kidney":
        radius = radius * _notch(rng, (0.3, 0.5), (0.4, 0.7))
    elif rng.random() < spec.cleft_prob:
        radius = radius * _notch(rng, (0.15, 0.4), (0.06, 0.15))
    cell_area = cv2.contourArea(frame.polygon(outline).astype(np.float32))
    unit_area = cv2.contourArea(frame.polygon(radius).astype(np.float32))
    scale = min(0.97, np.sqrt(rng.uniform(*spec.nc_ratio) * cell_area / unit_area))
    shift = rng.uniform(*spec.eccentricity) * (1.0 - scale)
    direction = rng.uniform(0, 2 * np.pi)
    return [frame.polygon(radius * scale, (shift * np.cos(direction), shift * np.sin(direction)))]


def _lobed_nucleus(rng: np.random.Generator, spec: LeukocyteSpec,
                   frame: _Frame) -> tuple[list[np.ndarray], np.ndarray]:
    """Lobes along an arc (polygons) and the patch points of the thin strands joining them."""
    n = int(rng.integers(spec.lobes[0], spec.lobes[1] + 1))
    lobe = min(0.32, np.sqrt(rng.uniform(*spec.nc_ratio) / n))
    gap = rng.uniform(0.04, 0.2)
    arc = rng.uniform(lobe + gap, 0.88 - lobe)
    step = 2 * np.arcsin(min(1.0, (lobe + gap / 2) / arc))
    angles = rng.uniform(0, 2 * np.pi) + step * np.arange(n) + rng.normal(0, 0.1, n)
    centres = np.stack([arc * np.cos(angles), arc * np.sin(angles)], axis=1)
    lobes = [frame.polygon(lobe * rng.uniform(0.8, 1.1) * _wobble(rng, 0.15), tuple(c))
             for c in centres]
    return lobes, frame.to_patch(centres[:, 0], centres[:, 1])


def _nucleus_mask(rng: np.random.Generator, spec: LeukocyteSpec, frame: _Frame,
                  outline: np.ndarray, cell: np.ndarray, um_per_px: float) -> np.ndarray:
    if spec.nucleus != "lobed":
        return _fill(cell.shape, _round_nucleus(rng, spec, frame, outline)) & cell
    lobes, strand = _lobed_nucleus(rng, spec, frame)
    mask = _fill(cell.shape, lobes).astype(np.uint8)
    thickness = max(2, round(rng.uniform(0.3, 0.6) / um_per_px))
    cv2.polylines(mask, [np.round(strand * 16).astype(np.int32)], False, 1, thickness,
                  cv2.LINE_8, shift=4)
    return mask.astype(bool) & cell


def _chromatin(rng: np.random.Generator, spec: LeukocyteSpec, shape: tuple[int, int],
               um_per_px: float) -> np.ndarray:
    """Nuclear dye concentration: dark clumps, a lacy net, or fine open stippling (blasts)."""
    density = rng.uniform(*spec.chromatin_density)
    if spec.chromatin == "clumped":
        return density * np.clip(0.8 + 0.28 * smooth_noise(rng, shape, 0.8 / um_per_px), 0.3, None)
    if spec.chromatin == "lacy":
        ridges = 1.0 - np.minimum(np.abs(smooth_noise(rng, shape, 0.7 / um_per_px)), 1.0)
        ridges = cv2.GaussianBlur(ridges, (0, 0), 0.12 / um_per_px)
        return density * (0.72 + 0.3 * ridges)
    stipple = 0.07 * smooth_noise(rng, shape, 0.25 / um_per_px)
    return density * (0.95 + stipple + 0.06 * smooth_noise(rng, shape, 2.0 / um_per_px))


def _spots(rng: np.random.Generator, region: np.ndarray, count: int, radius_um: Range,
           um_per_px: float) -> np.ndarray:
    """Soft round spots (nucleoli, vacuoles) centred on random pixels deep inside ``region``."""
    spots = np.zeros(region.shape, np.float32)
    radii = rng.uniform(*radius_um, count) / um_per_px
    depth = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 3)
    for r in radii:
        ys, xs = np.nonzero(depth > r + 2)
        if len(ys):
            i = rng.integers(len(ys))
            cv2.circle(spots, (int(xs[i]), int(ys[i])), int(round(r)), 1.0, -1, cv2.LINE_AA)
    return cv2.GaussianBlur(spots, (0, 0), 1.0)


def _paint(rng: np.random.Generator, spec: LeukocyteSpec, cell: np.ndarray,
           nucleus: np.ndarray, um_per_px: float) -> dict[str, np.ndarray]:
    """Dye concentration maps of one leukocyte, derived from its masks."""
    shape = cell.shape
    inside = cell.astype(np.float32)
    soft_nucleus = cv2.GaussianBlur(nucleus.astype(np.float32), (0, 0), 0.15 / um_per_px) * inside
    cyto = inside - soft_nucleus
    conc = {"nucleus": _chromatin(rng, spec, shape, um_per_px) * soft_nucleus}
    texture = 1.0 + 0.12 * smooth_noise(rng, shape, 2.0 / um_per_px)
    for dye, level in spec.cytoplasm:
        conc[dye] = conc.get(dye, 0) + rng.uniform(*level) * texture * cyto
    if spec.edge_basophilia:
        edge = cv2.distanceTransform(cell.astype(np.uint8), cv2.DIST_L2, 3) * um_per_px
        conc["baso"] *= 1.0 + 0.9 * np.exp(-edge / 1.2)
    if spec.granules:
        grains = smooth_noise(rng, shape, spec.granule_um / um_per_px)
        grain = np.clip(2.0 * (grains - spec.granule_threshold), 0, 1)
        conc[spec.granules] = conc.get(spec.granules, 0) + rng.uniform(0.6, 1.2) * grain * cyto
    if spec.max_vacuoles:
        count = int(rng.integers(0, spec.max_vacuoles + 1))
        keep = 1.0 - 0.85 * _spots(rng, cell & ~nucleus, count, (0.3, 0.8), um_per_px)
        conc = {dye: c * np.where(nucleus, 1.0, keep) for dye, c in conc.items()}
    if spec.max_nucleoli:
        count = int(rng.integers(0, spec.max_nucleoli + 1))
        nucleoli = _spots(rng, nucleus, count, (0.5, 1.1), um_per_px) * nucleus
        conc["nucleus"] *= 1.0 - 0.6 * nucleoli
        conc["baso"] = conc.get("baso", 0) + 0.6 * nucleoli
    return conc


def draw_leukocyte(rng: np.random.Generator, cell_type: str, centre: tuple[float, float],
                   diameter_px: float, um_per_px: float, od: dict[str, np.ndarray]
                   ) -> LeukocytePatch:
    """Draw one leukocyte of ``cell_type`` centred at canvas point ``centre`` (x, y)."""
    spec = SPECS[cell_type]
    radius = diameter_px / 2
    half = int(np.ceil(radius * 1.3)) + 3
    x0, y0 = int(np.floor(centre[0])) - half, int(np.floor(centre[1])) - half
    aspect = rng.uniform(0.88, 1.0)
    frame = _Frame(centre[0] - x0, centre[1] - y0, radius / np.sqrt(aspect),
                   radius * np.sqrt(aspect), rng.uniform(0, np.pi))
    outline = _wobble(rng, spec.roughness)
    cell = _fill((2 * half + 1, 2 * half + 1), [frame.polygon(outline)])
    nucleus = _nucleus_mask(rng, spec, frame, outline, cell, um_per_px)
    conc = _paint(rng, spec, cell, nucleus, um_per_px)
    paint = sum(c[..., None] * od[dye] for dye, c in conc.items())
    return LeukocytePatch(cell, nucleus, paint.astype(np.float32), (x0, y0))


def _disc_radius(rng: np.random.Generator, diameter_px: float, wobble: float) -> np.ndarray:
    """Normalised radius map (1 at the rim) of a slightly elliptic, irregular disc patch."""
    half = int(np.ceil(diameter_px * 0.6)) + 2
    axis = np.arange(-half, half + 1, dtype=np.float32)
    angle = rng.uniform(0, np.pi)
    a = diameter_px / 2 * rng.uniform(1.0, 1.1)
    b = diameter_px / 2 / rng.uniform(1.0, 1.1)
    u = (axis[None, :] * np.cos(angle) + axis[:, None] * np.sin(angle)) / a
    v = (axis[:, None] * np.cos(angle) - axis[None, :] * np.sin(angle)) / b
    return np.sqrt(u * u + v * v) + wobble * smooth_noise(rng, u.shape, diameter_px / 3)


def red_cell(rng: np.random.Generator, diameter_px: float) -> np.ndarray:
    """Haemoglobin concentration of one red cell: a disc with a thicker rim and central pallor."""
    r = _disc_radius(rng, diameter_px, 0.03)
    edge = np.clip((1.0 - r) / 0.07, 0.0, 1.0)
    pallor = rng.uniform(0.35, 0.75) * np.exp(-((r / rng.uniform(0.4, 0.55)) ** 4))
    rim = 0.25 * np.exp(-(((r - 0.8) / 0.13) ** 2))
    return (edge * (0.9 - pallor + rim)).astype(np.float32)


def platelet(rng: np.random.Generator, diameter_px: float, um_per_px: float) -> np.ndarray:
    """Nuclear-dye concentration of one platelet: a small granular purple dot."""
    r = _disc_radius(rng, diameter_px, 0.12)
    body = np.clip((1.0 - r) / 0.25, 0.0, 1.0)
    grains = np.clip(0.5 + 0.4 * smooth_noise(rng, r.shape, 0.35 / um_per_px), 0.1, 1.2)
    return (body * grains * rng.uniform(0.5, 0.9)).astype(np.float32)
