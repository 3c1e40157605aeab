"""Metrics of the paper's evaluation, on plain arrays (one row per test point).

Permafrost (binary, P(permafrost) >= the decision threshold, 0.5 unless a trained network chose another):
accuracy, balanced accuracy, precision/recall/F1 of each class (0 = no permafrost, 1 = permafrost; the recall
of class 1 is the *presence recall*), ROC AUC. Soil order (7 classes, argmax): accuracy, balanced accuracy,
macro and weighted precision/recall/F1, per-class precision/recall/F1 and the 7 x 7 confusion matrix (rows =
truth, columns = prediction, in :data:`~miso_mapper.bands.SOIL_ORDERS` order).

Averages: macro averages run over all 7 orders, an order absent from both truth and predictions counting 0,
as the reference computes them (``MISO/utils/metric.py``, ``compute_multi_ACC``: the mean of the 7 per-class
values), so the tables compare with the paper's; weighted averages weight each order by its test support
(absent orders drop out). Balanced accuracy is the mean recall over the classes present in the truth
(scikit-learn's ``balanced_accuracy_score``). Per-class recall is NaN for a class absent from the truth.
A metric that is undefined for the set (AUC with one class present, anything on zero points) is NaN.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from miso_mapper.bands import SOIL_ORDERS

PERMAFROST_KEYS = ("accuracy", "balanced_accuracy", "precision_0", "recall_0", "f1_0", "precision_1", "recall_1",
                   "f1_1", "auc")
TAXONOMY_KEYS = ("accuracy", "balanced_accuracy", "precision_macro", "recall_macro", "f1_macro",
                 "precision_weighted", "recall_weighted", "f1_weighted")
PERMAFROST_CLASSES = ("no permafrost", "permafrost")


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """Permafrost metrics of (n,) 0/1 truth and (n,) float P(permafrost), predicted permafrost where
    ``prob >= threshold`` (a float, or (n,) per point when pooled folds had their own thresholds)."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(prob, np.float64)
    out: dict[str, float] = {"n": float(y.size)}
    if y.size == 0:
        return out | {k: float("nan") for k in PERMAFROST_KEYS}
    pred = (p >= np.asarray(threshold, np.float64)).astype(int)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    out["accuracy"] = float(np.mean(pred == y))
    out["balanced_accuracy"] = float(np.mean(rec[support > 0]))
    for c in (0, 1):
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"] = float(prec[c]), float(rec[c]), float(f1[c])
    out["auc"] = float(roc_auc_score(y, p)) if np.unique(y).size == 2 else float("nan")
    return out


def multiclass_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, object]:
    """Soil-order metrics of (n,) class indices and (n, 7) probabilities (or (n,) predicted indices).

    Returns the :data:`TAXONOMY_KEYS` floats, ``n``, ``recall_per_class`` {order: recall or NaN when the
    order is absent from the truth}, ``per_class`` {order: {precision, recall, f1, support}} (recall NaN when
    absent from the truth, precision 0 when never predicted) and ``confusion`` (7 x 7 list of ints).
    """
    y = np.asarray(y_true).astype(int)
    pred = np.asarray(proba)
    pred = pred.argmax(axis=1) if pred.ndim == 2 else pred.astype(int)
    k = len(SOIL_ORDERS)
    out: dict[str, object] = {"n": float(y.size)}
    if y.size == 0:
        return out | {key: float("nan") for key in TAXONOMY_KEYS} | {
            "recall_per_class": {c: float("nan") for c in SOIL_ORDERS},
            "per_class": per_class_metrics(y, pred, SOIL_ORDERS), "confusion": [[0] * k for _ in range(k)]}
    out["accuracy"] = float(np.mean(pred == y))
    p, r, f, support = precision_recall_fscore_support(y, pred, labels=list(range(k)), zero_division=0)
    out["balanced_accuracy"] = float(np.mean(r[support > 0]))
    out["precision_macro"], out["recall_macro"], out["f1_macro"] = float(p.mean()), float(r.mean()), float(f.mean())
    w = support / support.sum()
    out["precision_weighted"], out["recall_weighted"], out["f1_weighted"] = (float(p @ w), float(r @ w),
                                                                             float(f @ w))
    out["per_class"] = per_class_metrics(y, pred, SOIL_ORDERS)
    out["recall_per_class"] = {name: v["recall"] for name, v in out["per_class"].items()}  # type: ignore[attr-defined]
    out["confusion"] = confusion_matrix(y, pred, labels=list(range(k))).tolist()
    return out


def per_class_metrics(y_true: np.ndarray, pred: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """{class name: {precision, recall, f1, support}} of (n,) true and (n,) predicted class indices
    ``0 .. len(names) - 1``; recall and F1 are NaN for a class absent from the truth, precision is 0 for a
    class never predicted."""
    y, yhat = np.asarray(y_true).astype(int), np.asarray(pred).astype(int)
    labels = list(range(len(names)))
    if y.size == 0:
        nan = float("nan")
        return {name: {"precision": nan, "recall": nan, "f1": nan, "support": 0.0} for name in names}
    p, r, f, support = precision_recall_fscore_support(y, yhat, labels=labels, zero_division=0)
    return {name: {"precision": float(p[i]), "recall": float(r[i]) if support[i] else float("nan"),
                   "f1": float(f[i]) if support[i] else float("nan"), "support": float(support[i])}
            for i, name in enumerate(names)}


def majority_prediction(train_labels: np.ndarray, n: int, task: str) -> np.ndarray:
    """The majority-class baseline's output for ``n`` test points: (n,) P(permafrost) equal to the training
    share for permafrost — so its AUC is 0.5 — or (n, 7) one-hot of the most common training order."""
    y = np.asarray(train_labels).astype(int)
    if task == "permafrost":
        share = float(np.mean(y == 1)) if y.size else 0.0
        # the majority class decides the thresholded label; the constant probability keeps AUC at 0.5
        value = 1.0 if share >= 0.5 else 0.0
        return np.full(n, value, np.float64)
    counts = np.bincount(y, minlength=len(SOIL_ORDERS))
    out = np.zeros((n, len(SOIL_ORDERS)))
    out[:, int(counts.argmax())] = 1.0
    return out


def reliability(y_true: np.ndarray, prob: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Reliability diagram data of binary probabilities: per equal-width bin the mean predicted
    probability, the observed frequency of class 1 and the count (empty bins: NaN, NaN, 0), plus the
    expected calibration error ``ece`` (count-weighted mean |frequency - confidence|)."""
    y = np.asarray(y_true, np.float64)
    p = np.asarray(prob, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    conf, freq, count = [], [], []
    for b in range(bins):
        sel = which == b
        count.append(float(sel.sum()))
        conf.append(float(p[sel].mean()) if sel.any() else float("nan"))
        freq.append(float(y[sel].mean()) if sel.any() else float("nan"))
    c = np.asarray(count)
    gaps = np.abs(np.nan_to_num(np.asarray(freq)) - np.nan_to_num(np.asarray(conf)))
    ece = float((gaps * c).sum() / c.sum()) if c.sum() else float("nan")
    return {"confidence": conf, "frequency": freq, "count": count, "edges": edges.tolist(), "ece": [ece]}
