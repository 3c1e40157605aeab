"""How far a network's probabilities and uncertainty can be trusted, on held-out points.

- **Reliability and expected calibration error** (ECE, 15 equal-width bins of confidence, Guo et al. 2017):
  permafrost bins P(permafrost) against the observed share of permafrost; soil order bins the top order's
  probability against the share of points where that order is right. ECE is the count-weighted mean gap.
- **Error ranking**: AUROC of a per-point uncertainty for telling misclassified points from correct ones
  (0.5 = no better than chance, 1 = every error more uncertain than every hit). Uncertainty: the binary
  entropy of P(permafrost) in bits (0..1), or the entropy of the 7 order probabilities / ln 7 (0..1, as the
  map's ``taxonomy_entropy`` layer).
- **Conformal sets** (soil order): share of points whose set (:mod:`miso_mapper.model.conformal`) holds the
  true order, and the mean set size.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score

from miso_mapper.model.card import ConformalRecord
from miso_mapper.model.conformal import prediction_sets, set_coverage

ECE_BINS = 15


def confidence_outcome(y_true: np.ndarray, prob: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, outcome) pairs a reliability diagram bins, each (n,) float64: permafrost P(permafrost)
    and truth == 1; soil order the top probability and whether the top order is the truth."""
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, np.float64)
    if task == "permafrost":
        return p, (y == 1).astype(np.float64)
    return p.max(axis=1), (p.argmax(axis=1) == y).astype(np.float64)


def reliability_curve(y_true: np.ndarray, prob: np.ndarray, task: str, bins: int = ECE_BINS
                      ) -> dict[str, list[float] | float]:
    """Per equal-width confidence bin on [0, 1]: mean ``confidence``, observed ``frequency`` of the outcome
    and ``count`` (an empty bin: NaN, NaN, 0); ``ece`` the count-weighted mean |frequency - confidence| (NaN
    for no points). See :func:`confidence_outcome` for what is binned."""
    conf, outcome = confidence_outcome(y_true, prob, task)
    which = np.clip(np.floor(conf * bins).astype(np.int64), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / count
        freq = np.bincount(which, outcome, minlength=bins) / count
    gaps = np.abs(np.nan_to_num(freq - mean_conf))
    ece = float((gaps * count).sum() / count.sum()) if count.sum() else float("nan")
    return {"confidence": mean_conf.tolist(), "frequency": freq.tolist(), "count": count.tolist(), "ece": ece}


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, task: str, bins: int = ECE_BINS) -> float:
    """ECE of :func:`reliability_curve` (0 = perfectly calibrated)."""
    return float(reliability_curve(y_true, prob, task, bins)["ece"])  # type: ignore[arg-type]


def uncertainty(prob: np.ndarray, task: str) -> np.ndarray:
    """(n,) float64 in [0, 1]: binary entropy of P(permafrost) in bits, or soil-order entropy / ln k."""
    p = np.asarray(prob, np.float64)
    if task == "permafrost":
        p = np.stack([p, 1 - p], axis=-1)
    logs = np.log(np.clip(p, 1e-12, 1.0))
    return -(p * logs).sum(axis=-1) / math.log(p.shape[-1])


def misclassified(y_true: np.ndarray, prob: np.ndarray, task: str, threshold: float | np.ndarray = 0.5
                  ) -> np.ndarray:
    """(n,) bool: the point's decision (P(permafrost) >= ``threshold``, or the top order) is not its truth."""
    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(prob, np.float64)
    pred = (p >= np.asarray(threshold, np.float64)).astype(np.int64) if task == "permafrost" else p.argmax(axis=1)
    return pred != y


def error_auroc(y_true: np.ndarray, prob: np.ndarray, task: str, threshold: float | np.ndarray = 0.5) -> float:
    """AUROC of :func:`uncertainty` for :func:`misclassified` points; NaN when all points are right or all
    wrong."""
    wrong = misclassified(y_true, prob, task, threshold)
    if wrong.all() or not wrong.any():
        return float("nan")
    return float(roc_auc_score(wrong, uncertainty(prob, task)))


def uncertainty_metrics(y_true: np.ndarray, prob: np.ndarray, raw_prob: np.ndarray, task: str,
                        threshold: float = 0.5, temperature: float = 1.0,
                        conformal: ConformalRecord | None = None
                        ) -> dict[str, float]:
    """One fold's figures for MISO: ``temperature``, ``ece_before`` (``raw_prob``, T = 1), ``ece_after``
    (``prob``, calibrated), ``error_auroc`` (of ``prob``) and, for soil order with a ``conformal`` record
    (:class:`~miso_mapper.model.card.ConformalRecord`), ``conformal_nominal``, ``conformal_coverage`` and
    ``conformal_set_size`` at the test points."""
    out = {"temperature": float(temperature),
           "ece_before": expected_calibration_error(y_true, raw_prob, task),
           "ece_after": expected_calibration_error(y_true, prob, task),
           "error_auroc": error_auroc(y_true, prob, task, threshold)}
    if task == "taxonomy" and conformal is not None:
        coverage, size = set_coverage(prediction_sets(prob, conformal.qhat), y_true)
        out |= {"conformal_nominal": float(conformal.coverage),
                "conformal_coverage": coverage, "conformal_set_size": size}
    return out
