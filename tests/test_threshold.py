"""The blast threshold comes from real normal validation cells, not synthetic ones."""

from __future__ import annotations

import numpy as np
import torch

from allseg.training.samples import CellSample
from allseg.training.threshold import MIN_REAL_NORMALS, real_normal_threshold, threshold_for


class Brightness(torch.nn.Module):
    """A stand-in classifier: the brighter the crop, the surer it is of a blast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.mean(dim=(1, 2, 3)) - 128.0) / 8.0)[:, None]


def _cells(levels: np.ndarray, real: bool, label: int = 0) -> list[CellSample]:
    return [CellSample(f"c{i}", np.full((8, 8, 3), v, np.uint8), label, real)
            for i, v in enumerate(levels)]


def test_threshold_leaves_one_percent_of_real_normals() -> None:
    rng = np.random.default_rng(0)
    real = _cells(rng.integers(60, 200, 300), real=True)
    synthetic = _cells(np.full(300, 250), real=False)  # would push the threshold to ~1
    blasts = _cells(np.full(50, 250), real=True, label=1)  # blasts never set it
    chosen = real_normal_threshold(Brightness(), real + synthetic + blasts)
    assert chosen is not None and chosen["real_normal_cells"] == 300
    assert chosen["threshold"] > 0.5 and chosen["calls_at_threshold"] <= 3
    assert chosen["calls_at_0.5"] > chosen["calls_at_threshold"]


def test_too_few_real_normals_set_nothing() -> None:
    cells = _cells(np.full(MIN_REAL_NORMALS - 1, 200), real=True)
    assert real_normal_threshold(Brightness(), cells) is None


def test_threshold_never_below_one_half() -> None:
    assert threshold_for(np.full(500, 0.1)) == 0.5
