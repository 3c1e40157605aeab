"""The run report's field-sampling section: the sites of ``miso-mapper sample-sites`` over the uncertainty.

The map shows the manifest chunks' bounding box (as the quicklooks do) read every ``factor`` pixels: the
uncertainty max(permafrost spread / 0.5, soil-order entropy) in [0, 1], pixels outside either task's area of
applicability hatched, and the sites numbered by rank; the table lists them with their reasons. A store
without the uncertainty layers (made before they existed), or a run without sites, gets a note instead.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.errors import MisoError
from miso_mapper.htmlpage import figure_img, table
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.store import NODATA
from miso_mapper.report.mapfig import add_scalebar, new_figure
from miso_mapper.report.source import MAX_PREVIEW_PX, RunData, decimation_factor
from miso_mapper.sites.layers import SCORE_LAYERS, outside_aoa, uncertainty

#: Columns of the sites table: (GeoJSON property, header).
COLUMNS = (("rank", "rank"), ("score", "score"), ("x_3338", "x (EPSG:3338)"), ("y_3338", "y (EPSG:3338)"),
           ("soil_order", "soil order"), ("reasons", "reasons"))


def sites_section(run: RunData) -> str:
    """HTML of the section (see the module doc) for a run whose store exists."""
    workflow = run.workflow
    if run.store is None or any(name not in run.store for name in SCORE_LAYERS):
        return ("<p class='note'>This store has no uncertainty and area-of-applicability layers (it was mapped by "
                "an older miso-mapper): no field-sampling guidance. Map again with <code>miso-mapper run "
                "--overwrite</code>, then run <code>miso-mapper sample-sites</code>.</p>")
    path = RunLayout.of(workflow).sample_sites.geojson
    if not path.is_file():
        return (f"<p class='note'>No field sites chosen yet: <code>miso-mapper sample-sites CONFIG</code> writes "
                f"them to <code>{html.escape(str(path))}</code>.</p>")
    try:
        records = [f["properties"] for f in json.loads(path.read_text())["features"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"<p class='note'>Sites file {html.escape(str(path))} not readable: {html.escape(str(exc))}</p>"
    parts = [figure_img(_map(run, records), "field sites over the map's uncertainty", dpi=100),
             table([h for _, h in COLUMNS], [[_cell(r.get(k)) for k, _ in COLUMNS] for r in records], "err"),
             f"<p class='note'>{len(records)} site(s) from <code>{html.escape(str(path))}</code> (and "
             f"<code>sample_sites.csv</code> beside it). Score = max(permafrost spread / 0.5, soil-order entropy), "
             "+ 1 outside either task's area of applicability (AOA).</p>"]
    if _older_than_store(path, run):
        parts.append("<p class='note'><b>These sites were chosen before this store was made</b>: run "
                     "<code>miso-mapper sample-sites</code> again.</p>")
    return "\n".join(parts)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _older_than_store(path: Path, run: RunData) -> bool:
    created = (run.store.attrs.get("created") if run.store is not None else None) or ""
    try:
        made = dt.datetime.fromisoformat(str(created)).timestamp()
    except ValueError:
        return False
    return path.stat().st_mtime < made


def _read(run: RunData, name: str, rows: slice, cols: slice) -> np.ndarray:
    return np.asarray(run.store[name][rows, cols])  # type: ignore[index]


def _map(run: RunData, records: list[dict[str, Any]]) -> Any:
    """The figure: uncertainty (every ``factor``-th pixel of the chunks' box), outside-AOA hatching, sites."""
    import matplotlib
    from pyproj import Transformer

    if run.store_geobox is None:
        raise MisoError("the run has no store")
    box = run.box()
    f = decimation_factor(box.shape, run.chunk_size, MAX_PREVIEW_PX)
    (r, c), (r0, c0) = run.grid.offset(box), run.grid.offset(run.store_geobox)
    rows, cols = slice(r - r0, r - r0 + box.shape[0], f), slice(c - c0, c - c0 + box.shape[1], f)
    layers = {name: _read(run, name, rows, cols) for name in (*SCORE_LAYERS, "permafrost_probability")}
    nodata = ((layers["permafrost_spread"] == NODATA) & (layers["taxonomy_entropy"] == NODATA)
              | (layers["permafrost_probability"] == NODATA))
    value = np.where(nodata, np.nan, uncertainty(layers["permafrost_spread"], layers["taxonomy_entropy"]))
    outside = outside_aoa(layers["permafrost_aoa"], layers["taxonomy_aoa"]) & ~nodata
    b = box.boundingbox
    extent = (b.left, b.right, b.bottom, b.top)
    fig, ax = new_figure(extent, run.workflow.grid.crs)
    km = tuple(v / 1000 for v in extent)
    cmap = matplotlib.colormaps["magma"].with_extremes(bad=(0, 0, 0, 0))
    im = ax.imshow(np.ma.masked_invalid(value), cmap=cmap, vmin=0, vmax=1, extent=km, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="uncertainty: max(permafrost spread / 0.5, soil-order entropy)")
    if outside.any():
        ax.contourf(np.where(outside, 1.0, 0.0), levels=[0.5, 1.5], colors="none", hatches=["////"],
                    extent=km, origin="upper")
    to_grid = Transformer.from_crs("EPSG:3338", run.workflow.grid.crs, always_xy=True)
    for rec in records:
        x, y = to_grid.transform(rec["x_3338"], rec["y_3338"])
        ax.plot(x / 1000, y / 1000, "o", ms=9, mfc="#00e5ff", mec="black", mew=0.8)
        ax.annotate(str(rec["rank"]), (x / 1000, y / 1000), xytext=(5, 5), textcoords="offset points",
                    fontsize=8, color="black", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.8,
                                                     "lw": 0})
    add_scalebar(ax)
    ax.set_title(f"{run.workflow.name}: {len(records)} proposed field sites (rank)\nhatched: outside the area of "
                 f"applicability; 1 map pixel = {run.workflow.grid.resolution * f:g} m; grey = no data",
                 fontsize=10, pad=14)
    return fig
