"""A picture a person can check at a glance: contours, ids, probabilities, verdict."""

from __future__ import annotations

import cv2
import numpy as np

from allseg.data.record import BLAST, LEUKOCYTE, NUCLEUS
from allseg.inference.illumination import exposed
from allseg.outputs.schema import ALL_SUSPECTED, CellResult, ImageResult

#: Class colours (RGB), shared with the GeoJSON classifications.
CLASS_RGB = {LEUKOCYTE: (40, 200, 60), BLAST: (255, 0, 200)}
NUCLEUS_ALPHA = 0.25
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _scale(image: np.ndarray) -> float:
    """Drawing scale: 1 for a ~1000 px image, so lines and text stay readable
    on a 640x480 crop and on a 2592x1944 field alike."""
    return max(image.shape[:2]) / 1000.0


def _outlined_text(canvas: np.ndarray, text: str, origin: tuple[int, int],
                   font_scale: float, thickness: int, colour: tuple[int, int, int]) -> None:
    """Text with a dark outline, legible over any stain colour."""
    cv2.putText(canvas, text, origin, FONT, font_scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, origin, FONT, font_scale, colour, thickness, cv2.LINE_AA)


def _label(canvas: np.ndarray, cell: CellResult, font_scale: float, thickness: int,
           colour: tuple[int, int, int]) -> None:
    """``"id p=0.93"`` just above the cell's box, kept inside the image."""
    text = f"{cell.id} p={cell.blast_probability:.2f}"
    (w, h), base = cv2.getTextSize(text, FONT, font_scale, thickness)
    x = int(np.clip(cell.bbox[0], 0, max(0, canvas.shape[1] - w)))
    y = cell.bbox[1] - base - 2
    if y - h < 0:  # no room above: write below the top edge of the box instead
        y = cell.bbox[1] + h + 2
    _outlined_text(canvas, text, (x, int(y)), font_scale, thickness, colour)


#: Smallest header font scale (about 9 px capitals): below it the text wraps instead.
MIN_HEADER_FONT_SCALE = 0.4


def _wrapped(text: str, width: int, font_scale: float, thickness: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (a word longer
    than that gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        candidate = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(candidate, FONT, font_scale, thickness)[0][0] <= width:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _header(width: int, result: ImageResult, scale: float) -> np.ndarray:
    """A strip above the image stating the verdict and that this is research use only.

    On a narrow image (a 120 px single-cell crop) the text wraps onto several lines
    rather than shrinking past reading.
    """
    font_scale = max(0.45, 0.7 * scale)
    thickness = max(1, round(1.5 * scale))
    text = (f"{result.verdict}: {result.blast_count} blast(s) / {result.leukocyte_count} "
            f"leukocyte(s) - research use only, not a diagnosis")
    margin = max(4, round(6 * scale))
    room = width - 2 * margin
    (w, _), _ = cv2.getTextSize(text, FONT, font_scale, thickness)
    font_scale *= max(min(1.0, room / w), MIN_HEADER_FONT_SCALE / font_scale)
    lines = _wrapped(text, room, font_scale, thickness)
    widest = max(cv2.getTextSize(line, FONT, font_scale, thickness)[0][0] for line in lines)
    font_scale *= min(1.0, room / widest)  # only a single over-long word is still too wide
    (_, h), base = cv2.getTextSize(text, FONT, font_scale, thickness)
    step = h + base + margin // 2
    strip = np.zeros((len(lines) * step - margin // 2 + 2 * margin, width, 3), np.uint8)
    strip[:] = (120, 0, 90) if result.verdict == ALL_SUSPECTED else (40, 40, 40)
    for i, line in enumerate(lines):
        cv2.putText(strip, line, (margin, margin + h + i * step), FONT, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return strip


def _tint_nuclei(canvas: np.ndarray, result: ImageResult) -> None:
    """Blend each nucleus with its cell's class colour, one cell's box at a time (a
    whole-image mask of a 2592x1944 field cost 55 ms; the boxes cover a small part)."""
    for cell in result.cells:
        x0, y0, x1, y1 = cell.bbox
        region = canvas[y0:y1, x0:x1]  # a view: blending it blends the canvas
        nucleus = ((result.parts[y0:y1, x0:x1] == NUCLEUS)
                   & (result.instances[y0:y1, x0:x1] == cell.id))
        tint = np.asarray(CLASS_RGB[cell.cls], np.float32)
        region[nucleus] = ((1 - NUCLEUS_ALPHA) * region[nucleus]
                           + NUCLEUS_ALPHA * tint).astype(np.uint8)


def draw_overlay(image: np.ndarray, result: ImageResult) -> np.ndarray:
    """RGB ``uint8`` overlay: the image with nuclei tinted, cell contours (blasts
    thicker, in magenta; other leukocytes green), ``id p=...`` labels and a
    header strip on top (so the overlay is taller than the image). A dark photo is
    shown brightened, as the networks saw it (``illumination.exposed``): drawn on the
    photo itself, a quarter-exposure photo's cells could hardly be seen."""
    scale = _scale(image)
    header = _header(image.shape[1], result, scale)
    overlay = np.empty((header.shape[0] + image.shape[0], *image.shape[1:]), np.uint8)
    overlay[:header.shape[0]] = header
    canvas = overlay[header.shape[0]:]  # a contiguous view: drawing on it draws the overlay
    canvas[:] = exposed(image)
    _tint_nuclei(canvas, result)
    line = max(1, round(2 * scale))
    font_scale = max(0.5, 0.6 * scale)
    for cell in result.cells:
        colour = CLASS_RGB[cell.cls]
        thickness = 2 * line if cell.is_blast else line
        polygon = np.asarray(cell.contour, np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [polygon], True, colour, thickness, cv2.LINE_AA)
        _label(canvas, cell, font_scale, max(1, line // 2 + cell.is_blast), colour)
    return overlay
