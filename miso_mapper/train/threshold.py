"""The permafrost decision threshold, chosen on a trained network's validation points (``train.threshold``).

The reference maps P(permafrost) >= 0.5 as permafrost (``MISO/utils/metric.py``, ``compute_binary_ACC``);
that is the ``'fixed'`` rule. With imbalanced labels a network's probabilities lean towards the majority, and
a threshold chosen on held-out points recovers the minority class's recall: ``'youden'`` maximises
sensitivity + specificity - 1 (Youden's J, the same as maximising balanced accuracy), ``'f1'`` maximises the
F1 of the permafrost class, ``'prevalence'`` makes the share of points mapped as permafrost equal to the
training labels' share (prior matching: the map's permafrost frequency follows the labels; it needs no label
at the points it is chosen on). :func:`match_class_prior` is the soil-order counterpart (``train.class_prior``):
per-class logit shifts under which the predicted orders' frequencies match the training labels'.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, rule: str,
                     prevalence: float | None = None) -> tuple[float, str | None]:
    """The threshold for ``rule`` on (n,) 0/1 labels and (n,) P(permafrost), and a note when it fell back.

    Candidates are the midpoints between consecutive distinct probabilities (so every possible split of the
    points is tried); among equally good ones the candidate nearest 0.5 wins. ``'prevalence'`` picks the
    candidate whose share of points at or above it is nearest ``prevalence`` (the training labels' share of
    permafrost; labels unused). Returns (0.5, note) when the rule is ``'fixed'`` (note None), when the points
    hold one class only or none (a note saying so; ``'prevalence'`` needs points only).
    """
    if rule == "fixed":
        return DEFAULT_THRESHOLD, None
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, np.float64)
    if rule == "prevalence":
        return _prevalence_threshold(p, prevalence)
    if np.unique(y).size < 2:
        return DEFAULT_THRESHOLD, (f"threshold: the validation points hold {'no' if y.size == 0 else 'one'} "
                                   f"class{'es' if y.size == 0 else ''}; {rule!r} fell back to 0.5")
    levels = np.unique(p)
    candidates = np.concatenate([[levels[0] / 2], (levels[:-1] + levels[1:]) / 2, [(levels[-1] + 1) / 2]])
    scores = np.asarray([_score(y, p >= t, rule) for t in candidates])
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]]), None


def _score(y: np.ndarray, pred: np.ndarray, rule: str) -> float:
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    tn = float(np.sum(~pred & (y == 0)))
    if rule == "youden":
        return tp / (tp + fn) + tn / (tn + fp) - 1
    if rule == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    raise ValueError(f"unknown threshold rule {rule!r}")


def _prevalence_threshold(p: np.ndarray, prevalence: float | None) -> tuple[float, str | None]:
    if prevalence is None or not 0.0 < prevalence < 1.0 or p.size == 0:
        return DEFAULT_THRESHOLD, ("threshold: no points or a training share of permafrost of 0 or 1; "
                                   "'prevalence' fell back to 0.5")
    levels = np.unique(p)
    candidates = np.concatenate([[levels[0] / 2], (levels[:-1] + levels[1:]) / 2, [(levels[-1] + 1) / 2]])
    shares = np.asarray([np.mean(p >= t) for t in candidates])
    gap = np.abs(shares - prevalence)
    best = np.flatnonzero(gap <= gap.min() + 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]]), None


def match_class_prior(prob: np.ndarray, prior: np.ndarray, iterations: int = 300,
                      limit: float = 8.0) -> np.ndarray:
    """(k,) float64 logit shifts ``b`` under which ``argmax(log prob + b)`` over the (n, k) class probabilities
    predicts each class with the frequency ``prior`` (k,) (counts or shares; normalised here).

    A fixed-point search: each step moves ``b_c`` by a shrinking share (0.5 x 0.98^step) of the log-ratio of
    target to predicted frequency (both smoothed by 1/n), centred, clipped to +-``limit``; the ``b`` with the
    smallest total absolute frequency gap seen is returned (argmax counts move in steps, so the search need
    not settle; ``b = 0`` is the first tried, so the result is never worse than no shift). A class absent from
    ``prior`` is pushed down until it is not predicted.
    """
    p = np.asarray(prob, np.float64)
    n, k = p.shape
    target = np.asarray(prior, np.float64)
    target = target / target.sum()
    logp = np.log(np.clip(p, 1e-7, 1.0))
    bias = np.zeros(k)
    best_gap, best = np.inf, bias.copy()
    for it in range(iterations):
        freq = np.bincount((logp + bias).argmax(axis=1), minlength=k) / n
        gap = float(np.abs(freq - target).sum())
        if gap < best_gap - 1e-12:
            best_gap, best = gap, bias.copy()
        if gap == 0.0:
            break
        step = 0.5 * 0.98**it  # shrinking, so near-tied points can still be told apart late in the search
        bias = np.clip(bias + step * (np.log(target + 1 / n) - np.log(freq + 1 / n)), -limit, limit)
        bias -= bias.mean()
    return best
