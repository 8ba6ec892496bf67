"""Sliding-window prediction with Gaussian blending, so any image size fits in memory.

A network sees fixed-size tiles; predictions near a tile's border are less reliable
(less context), so overlapping tiles are blended with a Gaussian weight that favours
tile centres (as nnU-Net does). The tile grid is a Cartesian product of row and column
positions and the weight is separable, so the weight sum is kept as two 1-D vectors
instead of an ``H x W`` map: memory is the output accumulator plus one batch of tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

BatchRunner = Callable[[np.ndarray], np.ndarray]
Box = tuple[int, int, int, int]

#: Weights are clipped to this fraction of the centre weight: a tile corner must
#: still count where it is the only prediction, and division by zero is impossible.
MIN_WEIGHT = 1e-4


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile start positions along one axis; the last tile is shifted inward, not padded.

    >>> axis_starts(1000, 512, 64)
    [0, 448, 488]
    >>> axis_starts(300, 512, 64)
    [0]
    """
    if size <= tile:
        return [0]
    stride = tile - overlap
    return list(range(0, size - tile, stride)) + [size - tile]


def tile_grid(h: int, w: int, tile: int, overlap: int) -> list[Box]:
    """Return the ``(y0, x0, y1, x1)`` boxes that cover an ``h x w`` image.

    Tiles are ``tile`` wide along an axis longer than ``tile`` and span the whole axis
    otherwise; neighbours overlap by at least ``overlap`` pixels.

    >>> tile_grid(600, 400, 512, 64)
    [(0, 0, 512, 400), (88, 0, 600, 400)]
    """
    _check_tiling(tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    return [
        (y0, x0, y0 + th, x0 + tw)
        for y0 in axis_starts(h, tile, overlap)
        for x0 in axis_starts(w, tile, overlap)
    ]


def gaussian_weights(length: int, sigma: float) -> np.ndarray:
    """1-D Gaussian centred on the window, peak 1, never below ``MIN_WEIGHT``."""
    centre = (length - 1) / 2.0
    x = np.arange(length, dtype=np.float64) - centre
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return np.maximum(g, MIN_WEIGHT).astype(np.float32)


def _check_tiling(tile: int, overlap: int) -> None:
    if tile <= 0 or not 0 <= overlap < tile:
        raise ValueError(f"need tile > 0 and 0 <= overlap < tile, got {tile=}, {overlap=}")


def _padded_length(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def _pad_tile(batch: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad the last two axes up to ``multiple`` (networks downsample by it)."""
    th, tw = batch.shape[-2:]
    pad_h, pad_w = _padded_length(th, multiple) - th, _padded_length(tw, multiple) - tw
    if pad_h == 0 and pad_w == 0:
        return batch
    # "symmetric" also works for a 1-pixel axis, where "reflect" cannot mirror anything.
    mode = "reflect" if min(th, tw) > 1 else "symmetric"
    return np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode=mode)


def _batches(boxes: list[Box], size: int) -> Iterator[list[Box]]:
    for i in range(0, len(boxes), size):
        yield boxes[i : i + size]


def _run_batch(run: BatchRunner, batch: np.ndarray, out_channels: int, multiple: int) -> np.ndarray:
    """Run one batch, padding it for the network and cropping the result back."""
    th, tw = batch.shape[-2:]
    pred = np.asarray(run(_pad_tile(batch, multiple)), dtype=np.float32)
    expected = (batch.shape[0], out_channels)
    if pred.ndim != 4 or pred.shape[:2] != expected:
        raise ValueError(f"run returned shape {pred.shape}, expected {expected} + (H, W)")
    return pred[:, :, :th, :tw]


def predict_tiled(
    run: BatchRunner,
    image: np.ndarray,
    out_channels: int,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    multiple: int = 32,
) -> np.ndarray:
    """Predict a ``(C, H, W)`` float32 image tile by tile; return ``(out_channels, H, W)``.

    ``run`` maps a ``(B, C, th, tw)`` float32 batch to ``(B, out_channels, th, tw)``
    (logits or probabilities: blending is linear, the caller decides). Tiles along an
    axis shorter than ``tile`` are reflect-padded to ``multiple`` and cropped back, so an
    image smaller than a tile is run once, whole. ``tile`` must be a multiple of
    ``multiple`` so that full tiles need no padding.
    """
    _check_tiling(tile, overlap)
    if tile % multiple:
        raise ValueError(f"tile ({tile}) must be a multiple of {multiple}")
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W), got shape {image.shape}")
    _, h, w = image.shape
    boxes = tile_grid(h, w, tile, overlap)
    wy = gaussian_weights(min(tile, h), min(tile, h) / 8)
    wx = gaussian_weights(min(tile, w), min(tile, w) / 8)
    window = wy[:, None] * wx[None, :]
    out = np.zeros((out_channels, h, w), dtype=np.float32)
    for chunk in _batches(boxes, batch_size):
        batch = np.stack([image[:, y0:y1, x0:x1] for y0, x0, y1, x1 in chunk]).astype(np.float32)
        pred = _run_batch(run, batch, out_channels, multiple)
        for (y0, x0, y1, x1), p in zip(chunk, pred, strict=True):
            out[:, y0:y1, x0:x1] += p * window
    _normalise(out, wy, wx, tile, overlap)
    return out


def _normalise(out: np.ndarray, wy: np.ndarray, wx: np.ndarray, tile: int, overlap: int) -> None:
    """Divide by the weight sum in place; it factorises into row and column sums."""
    _, h, w = out.shape
    out *= (1.0 / _axis_weight_sum(h, wy, tile, overlap))[None, :, None]
    out *= (1.0 / _axis_weight_sum(w, wx, tile, overlap))[None, None, :]


def _axis_weight_sum(size: int, weights: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    total = np.zeros(size, dtype=np.float64)
    for start in axis_starts(size, tile, overlap):
        total[start : start + len(weights)] += weights
    return total.astype(np.float32)


def flip_tta(run: BatchRunner) -> BatchRunner:
    """Wrap a batch runner to average over identity, horizontal, vertical and both flips.

    Assumes flip-equivariant outputs (flipping the input flips the output and nothing
    else). That holds for per-pixel class probabilities and centre/distance maps, but
    NOT for direction-carrying maps such as horizontal/vertical gradient fields, whose
    sign would also have to change.
    """

    def flipped(batch: np.ndarray) -> np.ndarray:
        total = None
        for axes in ((), (-1,), (-2,), (-2, -1)):
            pred = np.asarray(run(np.ascontiguousarray(np.flip(batch, axes))), dtype=np.float32)
            pred = np.flip(pred, axes)
            total = pred.copy() if total is None else total + pred
        return total / 4.0

    return flipped
