"""The evaluation report's calibration and uncertainty section (MISO, held-out folds).

Per scheme and task: the fitted temperature, expected calibration error before (T = 1) and after calibration,
AUROC of the uncertainty for misclassified points and, for soil order, the conformal sets' coverage against
the nominal and their mean size, as mean ± std over the folds (figures:
:mod:`miso_mapper.evaluate.uncertainty`); and a reliability diagram per task (test points pooled over the
folds): MISO before and after calibration, RF-11 as it comes.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from miso_mapper.evaluate.run import Evaluation
from miso_mapper.evaluate.uncertainty import ECE_BINS, reliability_curve

KEYS = ("temperature", "ece_before", "ece_after", "error_auroc", "conformal_nominal", "conformal_coverage",
        "conformal_set_size")
HEADERS = {"temperature": "T", "ece_before": "ECE before", "ece_after": "ECE after",
           "error_auroc": "AUROC (uncertainty for errors)", "conformal_nominal": "Set coverage nominal",
           "conformal_coverage": "Set coverage", "conformal_set_size": "Mean set size"}


def uncertainty_rows(ev: Evaluation, task: str) -> list[dict[str, Any]]:
    """One row per scheme whose MISO folds carry the figures: scheme, folds and ``<key>_mean`` /
    ``<key>_std`` over the folds for each of :data:`KEYS` the task has (conformal: soil order only)."""
    from miso_mapper.evaluate.report import _mean_std

    rows = []
    for scheme in ev.schemes:
        folds = [f for f in ev.fold_metrics.get((scheme, task, "MISO"), []) if "ece_after" in f]
        if not folds:
            continue
        row: dict[str, Any] = {"scheme": scheme, "folds": len(folds)}
        for k in KEYS:
            if k in folds[0]:
                row[f"{k}_mean"], row[f"{k}_std"] = _mean_std([float(f.get(k, np.nan)) for f in folds])
        rows.append(row)
    return rows


def _cells(row: dict[str, Any]) -> list[str]:
    from miso_mapper.evaluate.report import _fmt

    return [row["scheme"], str(row["folds"]),
            *[_fmt(row[f"{k}_mean"], row[f"{k}_std"]) if f"{k}_mean" in row else "n/a" for k in KEYS]]


def _title(task: str) -> str:
    what = "near-surface permafrost" if task == "permafrost" else "soil order"
    return f"Calibration and uncertainty, MISO, {what} (held-out folds, mean ± std)"


def uncertainty_markdown(rows: list[dict[str, Any]], task: str) -> str:
    """Rows of :func:`uncertainty_rows` as a Markdown table with a line on what the figures mean."""
    head = ["Scheme", "Folds", *[HEADERS[k] for k in KEYS]]
    lines = [f"### {_title(task)}", "", NOTE, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    if not rows:
        lines.append("| (no MISO calibration figures in this evaluation) |" + " |" * (len(head) - 1))
    return "\n".join(lines) + "\n"


NOTE = (f"ECE: expected calibration error, {ECE_BINS} equal-width bins (permafrost: P(permafrost) against the "
        "observed share; soil order: top probability against accuracy), before (T = 1) and after temperature "
        "scaling on the validation points. AUROC: how well the uncertainty (binary entropy of P(permafrost); "
        "soil-order entropy / ln 7) ranks misclassified test points above correct ones (0.5 = chance). Set "
        "coverage: share of test points whose conformal soil-order set holds the truth.")


def uncertainty_html(ev: Evaluation, task: str) -> str:
    """The section of the HTML report for ``task``: the table and one reliability diagram per scheme."""
    rows = uncertainty_rows(ev, task)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["Scheme", "Folds", *[HEADERS[k] for k in KEYS]])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows)
    plots = "".join(reliability_plot(ev, scheme, task) for scheme in ev.schemes)
    table = f"<table><tr>{head}</tr>{body}</table>" if rows else "<p class='note'>No MISO calibration figures.</p>"
    return f"<h3>{html.escape(_title(task))}</h3><p class='note'>{html.escape(NOTE)}</p>{table}<div>{plots}</div>"


def reliability_plot(ev: Evaluation, scheme: str, task: str) -> str:
    """PNG ``<img>`` of the reliability diagram of ``task`` in ``scheme`` (test points pooled over the folds):
    MISO before and after calibration, RF-11; '' when MISO did not run there."""
    import matplotlib.pyplot as plt

    from miso_mapper.htmlpage import figure_img

    miso = ev.predictions.get((scheme, task, "MISO"))
    if miso is None:
        return ""
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    truth = np.asarray(miso.truth)
    curves = [("MISO before", truth, miso.raw_probabilities()), ("MISO after", truth, np.concatenate(miso.prob))]
    rf = ev.predictions.get((scheme, task, "RF-11"))
    if rf is not None:
        curves.append(("RF-11", np.asarray(rf.truth), np.concatenate(rf.prob)))
    for label, y, prob in curves:
        rel = reliability_curve(y, prob, task)
        ax.plot(rel["confidence"], rel["frequency"], "o-", ms=3, label=f"{label} (ECE {rel['ece']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(permafrost)" if task == "permafrost" else "top soil-order probability")
    ax.set_ylabel("observed share" if task == "permafrost" else "accuracy")
    ax.set_title(f"reliability, {task}, {scheme}", fontsize=9)
    ax.legend(fontsize=7)
    return figure_img(fig, alt=f"reliability diagram, {task}, {scheme}", dpi=90)
