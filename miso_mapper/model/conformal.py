"""Split-conformal prediction sets for soil order (``train.conformal_coverage``).

Score of a calibration point: LAC, ``1 - p_true`` (Sadinle, Lei & Wasserman 2019), with the calibrated
probabilities. ``qhat`` is the ceil((n + 1) * coverage) / n empirical quantile of the n validation points'
scores, so a new exchangeable point's set ``{c : p_c >= 1 - qhat}`` holds its true order with probability
at least ``coverage`` (Angelopoulos & Bates 2021). Sets are stored as bitmasks: bit i is order i of
:data:`miso_mapper.bands.SOIL_ORDERS` (7 orders -> 0..127 in a uint8). :func:`prediction_set_bits` works on
torch tensors (the map), :func:`prediction_sets` and :func:`set_bits` on numpy arrays (points).

A set may be empty (no order reaches ``1 - qhat``); ``qhat = 1`` (too few calibration points for the
coverage) gives every order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

TIE = 1e-6
"""slack in ``p_c >= 1 - qhat - TIE``: a calibration point whose score equals ``qhat`` stays in its own set
whatever the float rounding of ``1 - (1 - p)``."""


def conformal_qhat(probs: np.ndarray, labels: np.ndarray, coverage: float) -> float:
    """``qhat`` of the LAC score at (n, k) calibrated probabilities and (n,) true class indices, for the
    nominal ``coverage`` in (0, 1): the ceil((n + 1) coverage)-th smallest score, 1.0 when that rank
    exceeds n (including n = 0)."""
    p = np.asarray(probs, np.float64)
    y = np.asarray(labels).astype(np.int64)
    n = y.size
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return 1.0
    scores = np.sort(1.0 - p[np.arange(n), y])
    return float(scores[rank - 1])


def prediction_sets(probs: np.ndarray, qhat: float) -> np.ndarray:
    """(n, k) bool: order c is in the set of a point where its probability is ``>= 1 - qhat``."""
    return np.asarray(probs, np.float64) >= 1.0 - qhat - TIE


def set_bits(sets: np.ndarray) -> np.ndarray:
    """(..., k) bool sets (k <= 8) -> (...) uint8 bitmask, bit c = order c."""
    weights = (1 << np.arange(sets.shape[-1])).astype(np.uint8)
    return (np.asarray(sets, bool) * weights).sum(axis=-1).astype(np.uint8)


def prediction_set_bits(probs: Tensor, qhat: float) -> Tensor:
    """(..., 7) calibrated soil-order probabilities -> (...) uint8 bitmask of the conformal set (bit i =
    order i of ``bands.SOIL_ORDERS``), on the probabilities' device. Same rule as :func:`prediction_sets`."""
    import torch

    inside = probs >= (1.0 - qhat - TIE)
    weights = torch.tensor([1 << i for i in range(probs.shape[-1])], dtype=torch.int32, device=probs.device)
    return (inside.to(torch.int32) * weights).sum(dim=-1).to(torch.uint8)


def set_coverage(sets: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(coverage: share of points whose set holds the true class, mean set size) of (n, k) bool sets and
    (n,) true class indices; NaNs for no points."""
    y = np.asarray(labels).astype(np.int64)
    if y.size == 0:
        return float("nan"), float("nan")
    s = np.asarray(sets, bool)
    return float(s[np.arange(y.size), y].mean()), float(s.sum(axis=1).mean())
