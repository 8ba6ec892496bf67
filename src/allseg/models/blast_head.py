"""The blast head: a logistic regression that weighs the CNN's P(blast) with the cell's
morphometry (size in µm², N:C, nucleus circularity, chromatin texture, nucleoli).

Why: the CNN learns blasts from synthetic cells and normal cells from real and synthetic
ones, so it partly learns "a real photo is not a blast" (the real-vs-synthetic probe, AUC
0.80). The morphometry is measured the same way on any photo, in µm and ratios, and is what
haematologists read a blast from; weighed together with the CNN the probe drops to 0.57 at
the same false-call rate on real normal cells (bench/blast_designs.py, model card). The head
is a handful of numbers kept in the model folder's ``config.json``; no pickle, no new weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize

from allseg.errors import ModelError

#: Per-cell features (keys of :func:`allseg.postprocess.features.cell_features`); the area
#: enters as its logarithm.
FEATURES = ("area_um2", "nc_ratio", "circularity", "chromatin_texture", "nucleolus_count",
            "diameter_um")
CNN_LOGIT = "cnn_logit"


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
                 l2: float = 1.0) -> np.ndarray:
    """L2-regularised logistic regression by L-BFGS; returns ``[bias, w_1 .. w_d]``.

    Minimises ``sum_i weight_i * logloss(y_i, bias + x_i . w) + l2 / 2 * |w|^2`` (the bias is
    not penalised). ``x`` should be standardised so that one ``l2`` suits every feature.

    >>> x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
    >>> coef = fit_logistic(x, np.array([0, 0, 1, 1]), l2=0.1)
    >>> bool(coef[1] > 1 and abs(coef[0]) < 1e-6)
    True
    """
    xb = np.hstack([np.ones((len(x), 1)), x])
    w = np.ones(len(x)) if weight is None else np.asarray(weight, float)
    y = np.asarray(y, float)
    mask = np.r_[0.0, np.ones(x.shape[1])]

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ beta
        nll = w @ (np.logaddexp(0, z) - y * z)
        grad = xb.T @ (w * (1 / (1 + np.exp(-z)) - y))
        return nll + l2 / 2 * (mask * beta) @ beta, grad + l2 * mask * beta

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x


def design_matrix(cells: Sequence[dict[str, Any]], cnn_probs: Sequence[float] | None = None
                  ) -> np.ndarray:
    """Raw inputs per cell: the features (log area; NaN where a cell has none) and, when
    given, the CNN's logit."""
    def value(cell: dict[str, Any], key: str) -> float:
        v = cell.get(key)
        return float("nan") if v is None else float(v)

    x = np.array([[value(c, f) for f in FEATURES] for c in cells], float).reshape(-1, len(FEATURES))
    x[:, 0] = np.log(np.maximum(x[:, 0], 1e-3))
    if cnn_probs is not None:
        p = np.clip(np.asarray(cnn_probs, float), 1e-6, 1 - 1e-6)
        x = np.hstack([x, np.log(p / (1 - p))[:, None]])
    return x


@dataclass(frozen=True)
class BlastHead:
    """Standardise, fill gaps with the training medians, weigh, squash."""

    inputs: tuple[str, ...]
    median: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    coef: tuple[float, ...]
    bias: float

    @property
    def uses_cnn(self) -> bool:
        return self.inputs[-1] == CNN_LOGIT

    @classmethod
    def fit(cls, cells: Sequence[dict[str, Any]], labels: Sequence[int],
            cnn_probs: Sequence[float] | None = None, weight: Sequence[float] | None = None,
            l2: float = 1.0) -> BlastHead:
        """Fit on labelled cells; blasts and normal cells weigh the same in total, on top
        of any per-cell ``weight`` (lymphocytes up, say)."""
        x = design_matrix(cells, cnn_probs)
        y = np.asarray(labels, int)
        if len(set(y.tolist())) < 2:
            raise ValueError("the blast head needs blasts and normal cells to learn from")
        median = np.nanmedian(x, axis=0)
        median = np.where(np.isnan(median), 0.0, median)
        x = np.where(np.isnan(x), median, x)
        mean, std = x.mean(0), x.std(0) + 1e-9
        w = np.ones(len(y)) if weight is None else np.asarray(weight, float)
        w = np.where(y == 1, w / w[y == 1].sum(), w / w[y == 0].sum()) * len(y) / 2
        beta = fit_logistic((x - mean) / std, y, w, l2)
        inputs = FEATURES + ((CNN_LOGIT,) if cnn_probs is not None else ())
        return cls(inputs, *(tuple(float(v) for v in a) for a in (median, mean, std, beta[1:])),
                   float(beta[0]))

    def probabilities(self, cells: Sequence[dict[str, Any]],
                      cnn_probs: Sequence[float] | None = None) -> np.ndarray:
        """P(blast) of each cell (``cnn_probs`` required when the head uses the CNN)."""
        if not cells:
            return np.zeros(0, np.float32)
        x = design_matrix(cells, cnn_probs if self.uses_cnn else None)
        x = np.where(np.isnan(x), self.median, x)
        z = self.bias + ((x - np.asarray(self.mean)) / np.asarray(self.std)) @ np.asarray(self.coef)
        return (1 / (1 + np.exp(-z))).astype(np.float32)

    def weights(self) -> dict[str, float]:
        """Coefficient per standardised input: which measurements carry the decision."""
        return {"bias": self.bias, **dict(zip(self.inputs, self.coef, strict=True))}

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any) -> BlastHead:
        """Read a model folder's head, refusing anything malformed (it is untrusted input)."""
        try:
            inputs = tuple(str(v) for v in data["inputs"])
            arrays = [tuple(float(v) for v in data[k]) for k in ("median", "mean", "std", "coef")]
            bias = float(data["bias"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"blast_head in config.json is malformed ({exc!r})") from exc
        if inputs not in (FEATURES, FEATURES + (CNN_LOGIT,)):
            raise ModelError(f"blast_head inputs {list(inputs)} are not {list(FEATURES)} "
                             f"(+ {CNN_LOGIT})")
        if any(len(a) != len(inputs) for a in arrays) or not np.isfinite([*sum(arrays, ()),
                                                                          bias]).all():
            raise ModelError("blast_head in config.json has arrays of the wrong length or "
                             "non-finite numbers")
        return cls(inputs, *arrays, bias)
