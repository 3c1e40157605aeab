"""Tables and the HTML report of an evaluation.

Table 1 (permafrost) and Table 2 (soil order) follow the layout of the paper's tables: one block of rows per
split scheme, one row per model, metrics as mean ± standard deviation over the folds. The regional table
pools each scheme's test points over its folds (every point is tested once) and breaks them down by
permafrost zone and MLRA. Each table file ends with MISO's calibration and uncertainty figures
(:mod:`miso_mapper.evaluate.uncertainty_report`). The HTML report is one self-contained file: tables plus
base64 PNG plots (per-region bars, confusion matrices, reliability diagrams before and after calibration).
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.evaluate.applicability import aoa_html, aoa_markdown, aoa_rows
from miso_mapper.evaluate.metrics import (
    PERMAFROST_CLASSES,
    PERMAFROST_KEYS,
    TAXONOMY_KEYS,
    binary_metrics,
    multiclass_metrics,
    per_class_metrics,
)
from miso_mapper.evaluate.run import MODELS, Evaluation, evaluation_json
from miso_mapper.htmlpage import figure_img, table
from miso_mapper.layout import EvaluationLayout
from miso_mapper.points import label_count_rows

HEADERS = {
    "accuracy": "Acc", "balanced_accuracy": "Bal acc", "precision_0": "P (no PF)", "recall_0": "R (no PF)",
    "f1_0": "F1 (no PF)", "precision_1": "P (PF)", "recall_1": "R (PF) = presence recall", "f1_1": "F1 (PF)",
    "auc": "AUC",
    "precision_macro": "P macro", "recall_macro": "R macro", "f1_macro": "F1 macro",
    "precision_weighted": "P weighted", "recall_weighted": "R weighted", "f1_weighted": "F1 weighted",
}


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=0))


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f} ± {std:.3f}"


def summary_rows(ev: Evaluation, task: str) -> list[dict[str, Any]]:
    """Rows of Table 1 (``task='permafrost'``) or Table 2 (``'taxonomy'``): scheme, model, folds, and
    ``<metric>_mean`` / ``<metric>_std`` over folds."""
    keys = PERMAFROST_KEYS if task == "permafrost" else TAXONOMY_KEYS
    rows = []
    for scheme in ev.schemes:
        for model in MODELS:
            folds = ev.fold_metrics.get((scheme, task, model), [])
            if not folds:
                continue
            row: dict[str, Any] = {"scheme": scheme, "model": model, "folds": len(folds),
                                   "test_points": int(sum(f["n"] for f in folds))}
            for k in keys:
                row[f"{k}_mean"], row[f"{k}_std"] = _mean_std([float(f[k]) for f in folds])  # type: ignore[arg-type]
            rows.append(row)
    return rows


def region_rows(ev: Evaluation) -> list[dict[str, Any]]:
    """Pooled metrics per (scheme, task, region layer, region, model): n, accuracy, recall and F1 of the
    permafrost class (permafrost) or macro recall/F1 (taxonomy), AUC (permafrost)."""
    rows = []
    for (scheme, task, model), pred in ev.predictions.items():
        truth, prob, _ = pred.arrays()
        threshold = pred.point_thresholds()
        ids = np.asarray(pred.ids)
        for kind, mapping in ev.regions.items():
            names = np.asarray([mapping.get(i, "(none)") for i in ids])
            for region in sorted(set(names.tolist())):
                sel = names == region
                if task == "permafrost":
                    m = binary_metrics(truth[sel], prob[sel], threshold[sel])
                    rec, f1, auc = m["recall_1"], m["f1_1"], m["auc"]
                else:
                    m = multiclass_metrics(truth[sel], prob[sel])
                    rec, f1, auc = m["recall_macro"], m["f1_macro"], float("nan")
                rows.append({"scheme": scheme, "task": task, "layer": kind, "region": region, "model": model,
                             "n": int(sel.sum()), "accuracy": m["accuracy"], "recall": rec, "f1": f1, "auc": auc})
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (r["scheme"], r["task"], r["layer"], r["region"], order[r["model"]]))
    return rows


def class_names(task: str) -> tuple[str, ...]:
    """The classes of ``task`` in label order."""
    return PERMAFROST_CLASSES if task == "permafrost" else SOIL_ORDERS


def per_class_rows(ev: Evaluation, task: str) -> list[dict[str, Any]]:
    """Per-class precision, recall and F1 of each (scheme, model), test points pooled over the folds (each
    fold's decision threshold applied to its own points): one row per (scheme, class) with ``n`` (test points
    of the class) and ``<model>_precision`` / ``_recall`` / ``_f1`` for each model that ran."""
    names = class_names(task)
    rows = []
    for scheme in ev.schemes:
        per_model = {}
        for model in MODELS:
            pred = ev.predictions.get((scheme, task, model))
            if pred is None:
                continue
            truth, prob, _ = pred.arrays()
            decided = ((prob >= pred.point_thresholds()).astype(int) if task == "permafrost"
                       else np.asarray(prob).argmax(axis=1))
            per_model[model] = per_class_metrics(truth, decided, names)
        if not per_model:
            continue
        for name in names:
            row: dict[str, Any] = {"scheme": scheme, "class": name,
                                   "n": int(next(iter(per_model.values()))[name]["support"])}
            for model, metrics in per_model.items():
                for k in ("precision", "recall", "f1"):
                    row[f"{model}_{k}"] = metrics[name][k]
            rows.append(row)
    return rows


def _prf(row: dict[str, Any], model: str) -> str:
    """'P / R / F1' cell of a :func:`per_class_rows` row."""
    if f"{model}_precision" not in row:
        return "n/a"
    return " / ".join("n/a" if math.isnan(row[f"{model}_{k}"]) else f"{row[f'{model}_{k}']:.2f}"
                      for k in ("precision", "recall", "f1"))


def per_class_markdown(rows: list[dict[str, Any]], task: str) -> str:
    """Rows of :func:`per_class_rows` as a Markdown table, one 'P / R / F1' cell per model."""
    what = "permafrost class" if task == "permafrost" else "soil order"
    head = ["Scheme", what.capitalize(), "n", *[f"{m} P / R / F1" for m in MODELS]]
    lines = [f"### Precision / recall / F1 per {what} (test points pooled over folds)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["scheme"], r["class"], str(r["n"]), *[_prf(r, m) for m in MODELS]])
                     + " |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict[str, Any]], keys: tuple[str, ...], title: str) -> str:
    """Rows of :func:`summary_rows` as a Markdown table (mean ± std cells)."""
    head = ["Scheme", "Model", *[HEADERS[k] for k in keys]]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["scheme"], r["model"], *[_fmt(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def write_outputs(ev: Evaluation, directory: Path) -> dict[str, Path]:
    """Write every table, ``predictions.csv``, ``metrics.json`` and ``report.html`` into ``directory`` (file
    names: :class:`~miso_mapper.layout.EvaluationLayout`); returns {table stem: its Markdown file,
    'report': the HTML report} of the files written."""
    from miso_mapper.evaluate.uncertainty_report import uncertainty_markdown, uncertainty_rows

    out = EvaluationLayout(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for task, keys, title in (
        ("permafrost", PERMAFROST_KEYS, "Table 1: near-surface permafrost"),
        ("taxonomy", TAXONOMY_KEYS, "Table 2: soil order"),
    ):
        if task not in ev.tasks:
            continue
        rows = summary_rows(ev, task)
        _write_csv(out.table(task, "csv"), rows)
        out.table(task, "md").write_text(markdown_table(rows, keys, title) + "\n"
                                         + per_class_markdown(per_class_rows(ev, task), task) + "\n"
                                         + uncertainty_markdown(uncertainty_rows(ev, task), task))
        paths[out.table(task, "md").stem] = out.table(task, "md")
    aoa = aoa_rows(ev)
    _write_csv(out.aoa("csv"), aoa)
    out.aoa("md").write_text(aoa_markdown(aoa))
    paths[out.aoa("md").stem] = out.aoa("md")
    regions = region_rows(ev)
    _write_csv(out.regions("csv"), regions)
    out.regions("md").write_text(_regions_markdown(regions))
    with out.predictions.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scheme", "task", "model", "fold", "id", "truth", "probability", "threshold", "aoa_di"])
        for (scheme, task, model), pred in ev.predictions.items():
            truth, prob, fold = pred.arrays()
            threshold = pred.point_thresholds()
            aoa_di = (pred.aoa_arrays() or (np.full(truth.size, np.nan),))[0]
            for i in range(truth.size):
                p = prob[i]
                cell = f"{p:.4f}" if np.ndim(p) == 0 else json.dumps([round(float(v), 4) for v in p])
                thr = f"{threshold[i]:.4f}" if task == "permafrost" else ""
                di = "" if np.isnan(aoa_di[i]) else f"{aoa_di[i]:.4f}"
                writer.writerow([scheme, task, model, int(fold[i]), pred.ids[i], int(truth[i]), cell, thr, di])
    out.metrics.write_text(json.dumps(evaluation_json(ev), indent=1, default=float))
    out.report.write_text(html_report(ev, regions))
    paths["report"] = out.report
    return paths


def _regions_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["### Results by permafrost zone and MLRA (test points pooled over folds)", "",
             "| Scheme | Task | Layer | Region | Model | n | Acc | Recall | F1 |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['task']} | {r['layer']} | {r['region']} | {r['model']} | {r['n']} | "
                     f"{r['accuracy']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- HTML


def _png(fig: Any) -> str:
    return figure_img(fig, alt="plot", dpi=90)


def _html_table(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["Scheme", "Model", *[HEADERS[k] for k in keys]])
    body = []
    for r in rows:
        cells = [r["scheme"], r["model"], *[_fmt(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys]]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _html_per_class(rows: list[dict[str, Any]], task: str) -> str:
    what = "permafrost class" if task == "permafrost" else "soil order"
    head = "".join(f"<th>{html.escape(h)}</th>"
                   for h in ["Scheme", what.capitalize(), "n", *[f"{m} P / R / F1" for m in MODELS]])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in
                                    [r["scheme"], r["class"], r["n"], *[_prf(r, m) for m in MODELS]]) + "</tr>"
                   for r in rows)
    return (f"<h3>Precision / recall / F1 per {what} (test points pooled over folds)</h3>"
            f"<table><tr>{head}</tr>{body}</table>")


def _region_bars(regions: list[dict[str, Any]], scheme: str, task: str, layer: str) -> str:
    import matplotlib.pyplot as plt

    rows = [r for r in regions if r["scheme"] == scheme and r["task"] == task and r["layer"] == layer]
    names = sorted({r["region"] for r in rows})
    if not names:
        return ""
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 2.8))
    width = 0.8 / len(MODELS)
    for k, model in enumerate(MODELS):
        vals = [next((r["accuracy"] for r in rows if r["region"] == n and r["model"] == model), np.nan)
                for n in names]
        ax.bar(np.arange(len(names)) + k * width, vals, width, label=model)
    counts = [next((r["n"] for r in rows if r["region"] == n), 0) for n in names]
    ax.set_xticks(np.arange(len(names)) + width, [f"{n}\n(n={c})" for n, c in zip(names, counts, strict=True)],
                  fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{task} accuracy by {'permafrost zone' if layer == 'zone' else 'MLRA'} ({scheme})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def _confusion(ev: Evaluation, scheme: str, model: str) -> str:
    import matplotlib.pyplot as plt

    pred = ev.predictions.get((scheme, "taxonomy", model))
    if pred is None:
        return ""
    truth, prob, _ = pred.arrays()
    cm = np.asarray(multiclass_metrics(truth, prob)["confusion"], np.float64)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    short = [s[:4] for s in SOIL_ORDERS]
    ax.set_xticks(range(len(short)), short, fontsize=7, rotation=45)
    ax.set_yticks(range(len(short)), short, fontsize=7)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(f"{model}, {scheme} (row-normalised)", fontsize=9)
    return _png(fig)


def html_report(ev: Evaluation, regions: list[dict[str, Any]]) -> str:
    """The self-contained HTML report (no external files or scripts)."""
    import matplotlib

    from miso_mapper.evaluate.uncertainty_report import uncertainty_html

    matplotlib.use("Agg")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>miso-mapper evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#eee}"
        "td:first-child,td:nth-child(2){text-align:left}img{margin:4px}.note{color:#555;font-size:13px}"
        "</style></head><body>",
        f"<h1>Evaluation: {html.escape(ev.workflow)}</h1>",
        f"<p class='note'>MISO network size <b>{html.escape(ev.size)}</b>, {ev.epochs} epochs at most; "
        f"{ev.folds_run} of {ev.folds} folds run per scheme; metrics are mean ± std over folds. "
        f"Total time {ev.seconds:.0f} s ({', '.join(f'{k} {v:.0f}' for k, v in ev.timings.items())}).</p>",
        "<p class='note'>Permafrost class metrics use each fold's decision threshold: MISO's as its training "
        "chose it on the validation points (<code>train.threshold</code>), 0.5 for RF-11 and the majority "
        "baseline. Macro averages run over all 7 soil orders (an order absent from a fold's test points and "
        "predictions counts 0, as the reference computes them); balanced accuracy averages the recall of the "
        "classes present.</p>",
    ]
    for n in ev.notes:
        parts.append(f"<p class='note'>{html.escape(n)}</p>")
    sizes = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{i + 1}</td><td>{f['train']}</td><td>{f['test']}</td>"
        f"<td>{f['buffer']}</td></tr>"
        for s, folds in ev.split_sizes.items() for i, f in enumerate(folds))
    parts.append("<h2>Splits</h2><table><tr><th>Scheme</th><th>Fold</th><th>Train</th><th>Test</th>"
                 f"<th>Buffer (left out)</th></tr>{sizes}</table>")
    if ev.label_counts:
        parts.append("<h2>Labelled points in the region</h2>"
                     + table(["Task", "Class", "Labelled points"], label_count_rows(ev.label_counts)))
    for task, keys, title in (("permafrost", PERMAFROST_KEYS, "Table 1: near-surface permafrost"),
                              ("taxonomy", TAXONOMY_KEYS, "Table 2: soil order")):
        if task in ev.tasks:
            parts.append(f"<h2>{title}</h2>")
            parts.append(_html_table(summary_rows(ev, task), keys))
            parts.append(_html_per_class(per_class_rows(ev, task), task))
    parts.append("<h2>By permafrost zone and MLRA</h2>")
    for scheme in ev.schemes:
        parts.append(f"<h3>{html.escape(scheme)}</h3><div>")
        for task in ev.tasks:
            for layer in ev.regions:
                parts.append(_region_bars(regions, scheme, task, layer))
        parts.append("</div>")
    rows = "".join(
        f"<tr><td>{r['scheme']}</td><td>{r['task']}</td><td>{r['layer']}</td><td>{html.escape(r['region'])}</td>"
        f"<td>{r['model']}</td><td>{r['n']}</td><td>{r['accuracy']:.3f}</td><td>{r['recall']:.3f}</td>"
        f"<td>{r['f1']:.3f}</td></tr>" for r in regions)
    parts.append("<table><tr><th>Scheme</th><th>Task</th><th>Layer</th><th>Region</th><th>Model</th><th>n</th>"
                 f"<th>Acc</th><th>Recall</th><th>F1</th></tr>{rows}</table>")
    parts.append(aoa_html(aoa_rows(ev)))
    if "taxonomy" in ev.tasks:
        parts.append("<h2>Confusion matrices (soil order, pooled over folds)</h2>")
        for scheme in ev.schemes:
            parts.append("<div>" + "".join(_confusion(ev, scheme, m) for m in ("MISO", "RF-11")) + "</div>")
    parts.append("<h2>Calibration and uncertainty</h2>")
    parts += [uncertainty_html(ev, task) for task in ev.tasks]
    parts.append("</body></html>")
    return "\n".join(parts)


def print_tables(ev: Evaluation, console: Any) -> None:
    """Table 1 and Table 2 in the terminal (rich)."""
    from rich.table import Table

    for task, keys, title in (("permafrost", PERMAFROST_KEYS, "Table 1: near-surface permafrost"),
                              ("taxonomy", TAXONOMY_KEYS, "Table 2: soil order")):
        if task not in ev.tasks:
            continue
        table = Table(title=f"{title} (mean ± std over {ev.folds_run} folds)", title_justify="left")
        for h in ["Scheme", "Model", *[HEADERS[k] for k in keys]]:
            table.add_column(h, justify="left" if h in ("Scheme", "Model") else "right")
        for r in summary_rows(ev, task):
            table.add_row(r["scheme"], r["model"], *[_fmt(r[f"{k}_mean"], r[f"{k}_std"]) for k in keys])
        console.print(table)
