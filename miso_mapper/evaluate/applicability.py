"""MISO's accuracy inside and outside its area of applicability, per split scheme and task (``evaluate``).

Each fold's network has its own area of applicability, fitted on that fold's training points as ``train``
fits it (:mod:`miso_mapper.train.applicability`); its test points are inside when their dissimilarity index
is at most the fold's threshold. Test points are pooled over the folds; a permafrost point counts as correct
with its fold's decision threshold, a soil-order point when the most probable order is the true one.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

from miso_mapper.evaluate.run import Evaluation, Predictions

AOA_KEYS = ("scheme", "task", "n_inside", "n_outside", "accuracy_inside", "accuracy_outside", "threshold_mean",
            "note")


def correct(task: str, pred: Predictions) -> np.ndarray:
    """(n,) bool whether each pooled test point of ``pred`` is predicted right."""
    truth, prob, _ = pred.arrays()
    if task == "permafrost":
        return (prob >= pred.point_thresholds()).astype(int) == truth.astype(int)
    return prob.argmax(axis=1) == truth.astype(int)


def aoa_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """One row per (scheme, task) with MISO predictions: test points and accuracy inside / outside the area
    of applicability (NaN accuracy for an empty side), the folds' mean DI threshold and a note when every
    test point is inside or no fold had an area of applicability."""
    rows = []
    for scheme in ev.schemes:
        for task in ev.tasks:
            pred = ev.predictions.get((scheme, task, "MISO"))
            aoa = pred.aoa_arrays() if pred is not None else None
            if pred is None or aoa is None:
                continue
            di, inside = aoa
            ok = correct(task, pred)
            known = ~np.isnan(di)
            outside = known & ~inside
            thresholds = [t for t in pred.aoa_threshold if not math.isnan(t)]
            note = ("no fold had an area of applicability" if not known.any()
                    else "every test point is inside" if not outside.any() else "")
            rows.append({"scheme": scheme, "task": task, "n_inside": int(inside.sum()),
                         "n_outside": int(outside.sum()), "accuracy_inside": _mean(ok[inside]),
                         "accuracy_outside": _mean(ok[outside]),
                         "threshold_mean": float(np.mean(thresholds)) if thresholds else float("nan"),
                         "note": note})
    return rows


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _acc(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["scheme"], r["task"], f"{r['n_inside']}", _acc(r["accuracy_inside"]), f"{r['n_outside']}",
            _acc(r["accuracy_outside"]), _acc(r["threshold_mean"]), r["note"]]


HEAD = ["Scheme", "Task", "n inside", "Acc inside", "n outside", "Acc outside", "DI threshold (mean)", "Note"]
TITLE = "MISO accuracy inside vs outside the area of applicability (test points pooled over folds)"


def aoa_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`aoa_rows` as a Markdown table."""
    lines = [f"### {TITLE}", "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    if not rows:
        lines.append("| (no MISO predictions with an area of applicability) |" + " |" * (len(HEAD) - 1))
    return "\n".join(lines) + "\n"


def aoa_html(rows: list[dict[str, Any]]) -> str:
    """The rows of :func:`aoa_rows` as an HTML section (heading, explanation, table)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    return (f"<h2>Area of applicability</h2><p class='note'>{html.escape(TITLE)}. Each fold's network is "
            "compared with its own training points in its embedding space (dissimilarity index of Meyer &amp; "
            "Pebesma 2021, threshold from cross-validation folds of the training points as CAST takes it); "
            f"a test point is inside when its index is at most the threshold.</p><table><tr>{head}</tr>{body}"
            "</table>")
