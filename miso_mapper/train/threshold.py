"""The permafrost decision threshold, chosen on a trained network's validation points (``train.threshold``).

The reference maps P(permafrost) >= 0.5 as permafrost (``MISO/utils/metric.py``, ``compute_binary_ACC``);
that is the ``'fixed'`` rule. With imbalanced labels a network's probabilities lean towards the majority, and
a threshold chosen on held-out points recovers the minority class's recall: ``'youden'`` maximises
sensitivity + specificity - 1 (Youden's J, the same as maximising balanced accuracy), ``'f1'`` maximises the
F1 of the permafrost class.
"""

from __future__ import annotations

import numpy as np

DEFAULT_THRESHOLD = 0.5


def choose_threshold(y_true: np.ndarray, prob: np.ndarray, rule: str) -> tuple[float, str | None]:
    """The threshold for ``rule`` on (n,) 0/1 labels and (n,) P(permafrost), and a note when it fell back.

    Candidates are the midpoints between consecutive distinct probabilities (so every possible split of the
    points is tried); among equally good ones the candidate nearest 0.5 wins. Returns (0.5, note) when the
    rule is ``'fixed'`` (note None) or when the points hold one class only or none (a note saying so).
    """
    if rule == "fixed":
        return DEFAULT_THRESHOLD, None
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, np.float64)
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
