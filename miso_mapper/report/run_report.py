"""The HTML run report: one self-contained page about a ``miso-mapper run``.

Sections: what was run (workflow, store provenance, model card(s), the resolved YAML config), coverage
(chunks by status, failed chunks with their errors), timings (totals, throughput, per-chunk seconds), the
quicklooks, the field sites of ``miso-mapper sample-sites`` over the uncertainty (:mod:`.sites`), accuracy
against the demo world's truth (:func:`~miso_mapper.report.accuracy.map_accuracy`), the evaluation tables of
``miso-mapper evaluate`` when its folder exists, and links to products.

Every image is a base64 data URI; the only script is the inline one of
:data:`~miso_mapper.htmlpage.READY_SCRIPT` (ready flag and error capture for headless-browser checks).
Links to local files (evaluation report, products) are relative to the page's folder.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from miso_mapper import __version__
from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.htmlpage import ERROR_ELEMENT, READY_SCRIPT, markdown_tables, png_img, table
from miso_mapper.layout import EvaluationLayout, RunLayout
from miso_mapper.report.accuracy import map_accuracy, truth_paths
from miso_mapper.report.coverage import coverage_png, timings
from miso_mapper.report.quicklooks import write_quicklooks
from miso_mapper.report.source import RunData, load_run, read_preview

#: Per-chunk timing rows shown (the slowest ones first beyond this many chunks).
MAX_CHUNK_ROWS = 500
#: Tasks whose Markdown evaluation table (Table 1, Table 2) is embedded in the report.
EVALUATION_TASKS = ("permafrost", "taxonomy")

_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1250px;color:#222}"
    "table{border-collapse:collapse;margin:0.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
    "th{background:#eee;text-align:left}td{text-align:right}td:first-child{text-align:left}"
    "pre{background:#f6f6f6;padding:0.8em;font-size:12px;overflow-x:auto}img{margin:4px;max-width:100%}"
    ".note{color:#555;font-size:13px}.err td{text-align:left}.kv td{text-align:left}"
)


def _f(value: float | None, fmt: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, fmt)


def _rel_href(target: Path, page_dir: Path) -> str:
    return quote(Path(os.path.relpath(Path(target).resolve(), page_dir.resolve())).as_posix())


def _model_section(workflow: Workflow) -> str:
    model = workflow.model
    parts = [f"<p>Model kind <b>{html.escape(model.kind)}</b>, network size {html.escape(model.size)}.</p>"]
    if model.kind == "synthetic":
        parts.append("<p class='note'>synthetic: a deterministic stand-in predictor for tests and the demo "
                     "(NOT a model); there is no model card.</p>")
    elif model.kind == "rf":
        parts.append(f"<p class='note'>rf: RF-11 baseline from <code>{html.escape(str(model.rf_model))}</code>; "
                     "no MISO model card.</p>")
    else:
        for task in ("permafrost", "taxonomy"):
            path = getattr(model, f"{task}_checkpoint")
            parts.append(f"<h3>{task} checkpoint</h3>")
            if path is None:
                parts.append("<p class='note'>not configured</p>")
                continue
            parts.append(f"<p><code>{html.escape(str(path))}</code></p>")
            try:
                from miso_mapper.model.checkpoint import read_model_card

                card = read_model_card(path).model_dump(mode="json")
            except MisoError as exc:
                parts.append(f"<p class='note'>model card not readable: {html.escape(str(exc))}</p>")
                continue
            config = card.pop("config", {})
            rows = [(k, json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in card.items()]
            parts.append(table(["field", "value"], rows, "kv"))
            parts.append(f"<details><summary>network config</summary><pre>"
                         f"{html.escape(json.dumps(config, indent=1))}</pre></details>")
    return "\n".join(parts)


def _coverage_section(run: RunData) -> str:
    counts = {s: sum(r.status == s for r in run.rows) for s in ("done", "failed", "running", "pending")}
    km2 = {s: sum(r.area_km2 for r in run.rows if r.status == s) for s in counts}
    parts = [png_img(coverage_png(run), "coverage map: chunks by status"),
             table(["status", "chunks", "km²"], [(s, n, f"{km2[s]:,.1f}") for s, n in counts.items()])]
    failed = [r for r in run.rows if r.status == "failed" or (r.last_error and r.status != "done")]
    if failed:
        parts.append("<h3>Failed chunks</h3>")
        parts.append(table(["chunk", "tile", "status", "attempts", "last error"],
                           [(r.id, r.tile, r.status, r.attempts, r.last_error or "") for r in failed], "err"))
    else:
        parts.append("<p class='note'>No chunk failed.</p>")
    return "\n".join(parts)


def _timings_section(run: RunData) -> str:
    t = timings(run)
    head = table(["figure", "value"], [
        ("chunks done", f"{t.chunks_done} of {len(run.rows)}"),
        ("area done", f"{t.km2_done:,.1f} km² of {t.km2_total:,.1f} km²"),
        ("read / predict / write, summed", f"{t.read_s:,.1f} s / {t.predict_s:,.1f} s / {t.write_s:,.1f} s"),
        ("worker time, summed", f"{t.total_s:,.1f} s"),
        ("first start → last finish", f"{t.first_start or 'n/a'} → {t.last_finish or 'n/a'} "
                                      f"({_f(t.wall_s)} s)"),
        ("throughput", f"{_f(t.km2_per_hour)} km²/h wall clock; {_f(t.km2_per_worker_hour)} km²/h per worker"),
    ], "kv")
    done = run.done()
    shown = done if len(done) <= MAX_CHUNK_ROWS else sorted(done, key=lambda r: -(r.total_s or 0))[:MAX_CHUNK_ROWS]
    note = "" if len(shown) == len(done) else (f"<p class='note'>The {len(shown)} slowest of {len(done)} done "
                                               "chunks are listed.</p>")
    rows = [(r.id, r.tile, r.worker or "", _f(r.read_s, ".2f", ""), _f(r.predict_s, ".2f", ""),
             _f(r.write_s, ".2f", ""), _f(r.total_s, ".2f", ""), r.attempts) for r in shown]
    per_chunk = table(["chunk", "tile", "worker", "read s", "predict s", "write s", "total s", "attempts"], rows)
    return (f"{head}<p class='note'>km²/h wall clock spans the first start to the last finish of the done "
            f"chunks' last attempts (a pause between a run and its --resume counts).</p>{note}"
            f"<details><summary>per-chunk timings ({len(shown)} chunks)</summary>{per_chunk}</details>")


def _accuracy_section(acc: dict[str, Any]) -> str:
    rows = []
    for key, label in (("permafrost", f"permafrost (p ≥ {acc.get('decision_threshold', 0.5):g})"),
                       ("soil_order", "soil order")):
        a = acc[key]
        rows.append((label, f"{a['pixels']:,}", _f(a["accuracy"], ".4f"), str(a["majority_class"]),
                     _f(a["majority_accuracy"], ".4f"), _f(a["truth_majority_accuracy"], ".4f"),
                     f"{a['points']:,}", _f(a["points_accuracy"], ".4f"), _f(a["points_majority_accuracy"], ".4f")))
    source = ("the majority class of the labelled points in the region" if acc["majority_source"] == "points"
              else "the majority class of the truth over the scored pixels (no labelled points)")
    return (table(["layer", "pixels", "map accuracy", "majority class", "majority accuracy",
                   "best constant (truth majority)", "points", "map accuracy at points",
                   "majority accuracy at points"], rows)
            + f"<p class='note'>Every pixel of the {acc['chunks']} done chunks ({acc['area_km2']:,.1f} km²) where "
              f"map and truth both have data. The majority baseline is {source}; the best constant map is the "
              "truth's own majority over the same pixels. Point labels carry the demo world's label noise.</p>"
            + _labels_note(acc))


def _labels_note(acc: dict[str, Any]) -> str:
    """The labelled points' counts per class (a table), or why no points were used."""
    from miso_mapper.points import label_count_rows

    if acc.get("labels"):
        return "<h3>Labelled points in the region</h3>" + table(["task", "class", "labelled points"],
                                                                 label_count_rows(acc["labels"]))
    if acc.get("points_note"):
        return f"<p class='note'>Labelled points not used: {html.escape(acc['points_note'])}</p>"
    return ""


def _evaluation_section(evaluation: EvaluationLayout, page_dir: Path) -> str:
    parts = []
    report = evaluation.report
    if report.is_file():
        parts.append(f"<p>Full cross-validation report: <a href=\"{_rel_href(report, page_dir)}\">"
                     f"{html.escape(str(report))}</a></p>")
    for task in EVALUATION_TASKS:
        path = evaluation.table(task, "md")
        if path.is_file():
            parts.append(markdown_tables(path.read_text()))
    return "\n".join(parts) or "<p class='note'>The evaluation folder has no report or tables.</p>"


def _products_section(products: Sequence[str | Path] | Mapping[str, str | Path], page_dir: Path) -> str:
    items = products.items() if isinstance(products, Mapping) else [(Path(p).name, p) for p in products]
    lis = [f"<li>{html.escape(str(name))}: <a href=\"{_rel_href(Path(p), page_dir)}\">"
           f"{html.escape(os.path.relpath(Path(p).resolve(), page_dir.resolve()))}</a>"
           f"{'' if Path(p).exists() else ' (missing)'}</li>" for name, p in items]
    return f"<ul>{''.join(lis)}</ul>"


def write_run_report(workflow: Workflow, out_path: Path, evaluation_dir: Path | None = None,
                     products: Sequence[str | Path] | Mapping[str, str | Path] | None = None,
                     accuracy: dict[str, Any] | None = None) -> Path:
    """Write the self-contained HTML report of a workflow's run to ``out_path``; returns the path.

    Quicklook PNGs are written to ``<out_path's folder>/quicklooks/`` and embedded. ``evaluation_dir``
    defaults to the workflow's evaluation folder, used when it exists. ``products`` (paths, or
    {label: path}) are listed with links relative to the page. ``accuracy`` reuses a
    :func:`~miso_mapper.report.accuracy.map_accuracy` result (computed here when the world has truth).
    Raises :class:`MisoError` when the workflow has no run manifest.
    """
    layout = RunLayout.of(workflow)
    out_path = Path(out_path)
    page_dir = out_path.parent
    page_dir.mkdir(parents=True, exist_ok=True)
    run = load_run(workflow)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>miso-mapper run: {esc(workflow.name)}</title><style>{_STYLE}</style>{READY_SCRIPT}</head><body>",
        f"<h1>Run report: {esc(workflow.name)}</h1>",
        f"<p class='note'>{esc(workflow.description)}</p>" if workflow.description else "",
        f"<p class='note'>Written {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} by miso-mapper "
        f"{esc(__version__)}. Store <code>{esc(str(layout.store))}</code>, manifest "
        f"<code>{esc(str(layout.manifest))}</code>.</p>",
        "<h2>What was run</h2>",
    ]
    attrs = dict(run.store.attrs) if run.store is not None else {}
    prov = [(k, attrs[k]) for k in ("created", "software_version", "model_kind", "config_hash", "map_config_hash",
                                    "imagery_date_range", "store_uuid") if k in attrs]
    prov += [(f"manifest {k}", v) for k, v in sorted(run.meta.items())]
    if prov:
        parts.append(table(["provenance", "value"], prov, "kv"))
    parts.append(_model_section(workflow))
    config_yaml = yaml.safe_dump(workflow.model_dump(mode="json"), sort_keys=False)
    parts.append(f"<details><summary>resolved workflow config (YAML)</summary><pre>{esc(config_yaml)}</pre>"
                 "</details>")
    parts += ["<h2>Coverage</h2>", _coverage_section(run), "<h2>Timings</h2>", _timings_section(run)]
    parts.append("<h2>Quicklooks</h2>")
    if run.store is not None and run.done():
        preview = read_preview(run)
        looks = write_quicklooks(workflow, page_dir / "quicklooks", run=run, preview=preview)
        parts.append("".join(png_img(p, f"quicklook: {name}") for name, p in looks.items()))
        parts.append(f"<p class='note'>Block means (probabilities) and block modes (soil order, legend: "
                     f"{esc(', '.join(SOIL_ORDERS))}) over {preview.factor} x {preview.factor} map pixels. "
                     f"PNG files: <code>{esc(str(page_dir / 'quicklooks'))}</code>.</p>")
    else:
        parts.append("<p class='note'>No chunk is done yet: nothing to show.</p>")
    if run.store is not None and run.done():
        from miso_mapper.report.sites import sites_section

        parts += ["<h2>Field-sampling guidance</h2>", sites_section(run)]
    if truth_paths(workflow) is not None and run.store is not None and run.done():
        parts.append("<h2>Accuracy against the demo world's truth</h2>")
        parts.append(_accuracy_section(accuracy or map_accuracy(workflow, run)))
    evaluation = EvaluationLayout(Path(evaluation_dir)) if evaluation_dir is not None else layout.evaluate
    if evaluation.directory.is_dir():
        parts += ["<h2>Cross-validation (miso-mapper evaluate)</h2>", _evaluation_section(evaluation, page_dir)]
    if products:
        parts += ["<h2>Products</h2>", _products_section(products, page_dir)]
    parts.append(f"{ERROR_ELEMENT}</body></html>")
    out_path.write_text("\n".join(p for p in parts if p))
    return out_path
