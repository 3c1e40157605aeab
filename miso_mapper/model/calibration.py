"""Temperature scaling of a network's probabilities (``train.calibration: temperature``).

One scalar T > 0 divides the head's logits (after the card's ``class_bias``) before the sigmoid (permafrost)
or softmax (soil order); T is chosen to minimise the negative log-likelihood of the validation points' labels
(Guo et al. 2017, "On calibration of modern neural networks"). T > 1 softens over-confident probabilities,
T < 1 sharpens; argmax and the order of P(permafrost) are unchanged, so accuracy and AUC stay the same.
Everything here is numpy; :meth:`miso_mapper.model.network.MisoNet.predict_proba` is the torch twin of
:func:`probabilities`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

TEMPERATURE_RANGE = (0.05, 20.0)
"""bounds of the search for T; a fitted T at a bound means the points give no usable estimate."""


def probabilities(logits: np.ndarray, task: str, temperature: float = 1.0) -> np.ndarray:
    """float64 probabilities of ``logits`` / ``temperature``: permafrost (n,) logits -> (n,) P(permafrost),
    soil order (n, k) logits -> (n, k) softmax."""
    z = np.asarray(logits, np.float64) / temperature
    return 1.0 / (1.0 + np.exp(-z)) if task == "permafrost" else softmax(z, axis=-1)


def nll(logits: np.ndarray, labels: np.ndarray, task: str, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood (nats) of ``labels`` ((n,) 0/1 or class index) under ``logits`` /
    ``temperature``; NaN for no points."""
    y = np.asarray(labels).astype(np.int64)
    if y.size == 0:
        return float("nan")
    z = np.asarray(logits, np.float64) / temperature
    if task == "permafrost":
        # -log sigmoid(z) for y = 1, -log sigmoid(-z) for y = 0, both via logaddexp (no overflow)
        return float(np.mean(np.logaddexp(0.0, np.where(y == 1, -z, z))))
    return float(-np.mean(log_softmax(z, axis=-1)[np.arange(y.size), y]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, task: str) -> float:
    """The T in :data:`TEMPERATURE_RANGE` minimising :func:`nll` of ``labels`` under ``logits`` / T.

    A bounded 1-D search (Brent) over log T, so the step is relative; 1.0 for no points.
    """
    if np.asarray(labels).size == 0:
        return 1.0
    lo, hi = np.log(TEMPERATURE_RANGE)
    res = minimize_scalar(lambda log_t: nll(logits, labels, task, float(np.exp(log_t))), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))
