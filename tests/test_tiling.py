"""Tiled prediction must be invisible: blending exact per-pixel functions gives them back."""

from __future__ import annotations

import numpy as np
import pytest

from allseg.inference.tiling import flip_tta, predict_tiled, tile_grid


def identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


def channel_sum(batch: np.ndarray) -> np.ndarray:
    """A per-pixel function with one output channel (the cheap stand-in for a network)."""
    return batch.sum(axis=1, keepdims=True)


def ramp_image(channels: int, h: int, w: int) -> np.ndarray:
    """Linear ramps plus a constant: any seam or mis-weighting would show."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    planes = [yy / h, xx / w, np.full((h, w), 0.5, np.float32)][:channels]
    return np.stack(planes).astype(np.float32)


@pytest.mark.parametrize(
    ("h", "w"),
    [(100, 90), (64, 64), (37, 501), (600, 400), (777, 1025), (1, 700), (513, 1)],
)
def test_identity_is_reproduced(h: int, w: int) -> None:
    image = ramp_image(3, h, w)
    out = predict_tiled(identity, image, out_channels=3, tile=128, overlap=16, batch_size=3)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, image, atol=1e-5)


def test_random_image_and_channel_change() -> None:
    image = np.random.default_rng(0).random((2, 300, 410), dtype=np.float32)
    out = predict_tiled(channel_sum, image, out_channels=1, tile=96, overlap=32)
    np.testing.assert_allclose(out, channel_sum(image[None])[0], atol=1e-5)


def test_small_image_runs_once_padded_to_multiple() -> None:
    shapes = []

    def run(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return batch

    image = ramp_image(2, 50, 70)
    out = predict_tiled(run, image, out_channels=2, tile=128, multiple=32)
    assert shapes == [(1, 2, 64, 96)]
    np.testing.assert_allclose(out, image, atol=1e-6)


@pytest.mark.parametrize(("h", "w"), [(1000, 1000), (513, 1200), (300, 2000), (5, 5)])
def test_grid_covers_every_pixel_with_full_tiles(h: int, w: int) -> None:
    tile, overlap = 256, 32
    boxes = tile_grid(h, w, tile, overlap)
    covered = np.zeros((h, w), dtype=int)
    for y0, x0, y1, x1 in boxes:
        assert (y1 - y0, x1 - x0) == (min(tile, h), min(tile, w))
        assert min(y0, x0) >= 0 and y1 <= h and x1 <= w
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1


def test_neighbours_overlap_at_least_overlap() -> None:
    ys = sorted({b[0] for b in tile_grid(1000, 1000, 256, 48)})
    assert all(256 - (b - a) >= 48 for a, b in zip(ys, ys[1:], strict=False))


def test_tiles_are_batched() -> None:
    sizes = []

    def run(batch: np.ndarray) -> np.ndarray:
        sizes.append(len(batch))
        return batch

    image = ramp_image(1, 400, 300)
    n_tiles = len(tile_grid(400, 300, 128, 32))
    predict_tiled(run, image, out_channels=1, tile=128, overlap=32, batch_size=4)
    assert sum(sizes) == n_tiles
    assert len(sizes) == -(-n_tiles // 4)
    assert max(sizes) == 4


def test_flip_tta_of_equivariant_function_is_the_function() -> None:
    def blur_ish(batch: np.ndarray) -> np.ndarray:
        """Symmetric 3x3 box mean with edge padding: flip-equivariant, position-aware."""
        padded = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
        h, w = batch.shape[-2:]
        windows = [padded[..., i : i + h, j : j + w] for i in range(3) for j in range(3)]
        return (np.mean(windows, axis=0) ** 2).astype(np.float32)

    batch = np.random.default_rng(1).random((2, 3, 17, 23), dtype=np.float32)
    np.testing.assert_allclose(flip_tta(blur_ish)(batch), blur_ish(batch), atol=1e-6)


def test_flip_tta_averages_a_non_equivariant_function() -> None:
    def x_coordinate(batch: np.ndarray) -> np.ndarray:
        w = batch.shape[-1]
        return np.broadcast_to(np.arange(w, dtype=np.float32), batch.shape).copy()

    out = flip_tta(x_coordinate)(np.zeros((1, 1, 4, 5), np.float32))
    np.testing.assert_allclose(out, 2.0)


def test_large_image_with_cheap_run() -> None:
    image = np.ones((1, 3000, 2000), dtype=np.float32)
    out = predict_tiled(identity, image, out_channels=1, tile=512, overlap=64, batch_size=8)
    np.testing.assert_allclose(out, 1.0, atol=1e-5)


def test_bad_output_shape_is_reported() -> None:
    with pytest.raises(ValueError, match="expected"):
        predict_tiled(identity, ramp_image(2, 40, 40), out_channels=3, tile=64, overlap=8)


@pytest.mark.parametrize(("tile", "overlap"), [(100, 10), (64, 64), (64, -1)])
def test_bad_tiling_is_rejected(tile: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        predict_tiled(identity, ramp_image(1, 40, 40), out_channels=1, tile=tile, overlap=overlap)
