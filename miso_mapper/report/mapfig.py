"""Matplotlib pieces shared by the map figures: km axes, scale bar, permafrost-zone outlines.

Figures are :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas (no pyplot, no GUI backend).
Map axes are in grid-CRS kilometres (EPSG:3338 by default); inputs are in metres.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper import style
from miso_mapper.config import Workflow
from miso_mapper.style import css

log = logging.getLogger(__name__)

#: Background of map axes: where the map has no data (ocean, not run, failed) the grey shows through.
NODATA_GREY = css(style.NODATA_GREY)


def new_figure(extent: tuple[float, float, float, float], crs: str = "EPSG:3338",
               long_in: float = 8.0) -> tuple[Any, Any]:
    """A figure and map axes sized to ``extent`` ((xmin, xmax, ymin, ymax), ``crs`` metres), limits set,
    axes labelled in km; the map part is about ``long_in`` inches on its long side."""
    from matplotlib.figure import Figure

    xmin, xmax, ymin, ymax = extent
    aspect = (xmax - xmin) / max(ymax - ymin, 1e-9)
    w, h = (long_in, long_in / aspect) if aspect >= 1 else (long_in * aspect, long_in)
    fig = Figure(figsize=(max(w, 3.0) + 2.6, max(h, 3.0) + 0.9))
    ax = fig.add_subplot()
    ax.set_facecolor(NODATA_GREY)
    ax.set_xlim(xmin / 1000, xmax / 1000)
    ax.set_ylim(ymin / 1000, ymax / 1000)
    ax.set_aspect("equal")
    ax.set_xlabel(f"x (km, {crs})")
    ax.set_ylabel(f"y (km, {crs})")
    ax.ticklabel_format(useOffset=False, style="plain")
    return fig, ax


def nice_length(span_km: float) -> float:
    """A 1/2/5 x 10^k length, km, of about a fifth of ``span_km`` (the scale bar's length)."""
    target = max(span_km / 5, 1e-3)
    base = 10 ** np.floor(np.log10(target))
    return float(max(m * base for m in (1, 2, 5) if m * base <= target))


def add_scalebar(ax: Any) -> None:
    """A km scale bar in the lower left of map axes."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1 = ax.get_xlim()
    length = nice_length(x1 - x0)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} km", "lower left", pad=0.4, borderpad=0.6,
                          sep=4, frameon=True, size_vertical=(x1 - x0) / 250)
    bar.patch.set_alpha(0.8)
    ax.add_artist(bar)


def read_polygons(path: Path, crs: str, field: str | None = None) -> list[tuple[Any, str]]:
    """(shapely geometry in ``crs``, label) of every polygon of a vector file; [] when it cannot be read."""
    import pyogrio
    import shapely
    from pyproj import CRS, Transformer

    try:
        meta, _, wkb, fields = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:  # noqa: BLE001 - an outline layer is decoration: warn, never fail the report
        log.warning("cannot read polygons %s: %s", path, exc)
        return []
    names = list(meta["fields"])
    labels = fields[names.index(field)] if field in names else [""] * len(wkb)
    src = CRS.from_user_input(meta.get("crs") or "EPSG:4326")
    to_grid = None if src == CRS.from_user_input(crs) else Transformer.from_crs(src, crs, always_xy=True)
    out = []
    for geom, label in zip(shapely.from_wkb(wkb), labels, strict=True):
        if geom is None or geom.is_empty:
            continue
        if to_grid is not None:
            geom = shapely.transform(geom, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
        out.append((geom, str(label)))
    return out


def zones_path(workflow: Workflow) -> Path | None:
    """The permafrost-zone polygon file of a workflow (``points.permafrost_zones`` or the world's), if it exists."""
    from miso_mapper.points import polygon_path

    path = polygon_path(workflow, "zones")
    return path if path is not None and path.is_file() else None


def add_zones(ax: Any, workflow: Workflow, color: str = "black") -> bool:
    """Outline (and label) the permafrost zones on map axes; False when the workflow has no zone file."""
    import shapely

    path = zones_path(workflow)
    if path is None:
        return False
    polygons = read_polygons(path, workflow.grid.crs, workflow.points.zone_field)
    if not polygons:
        return False
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    view = shapely.box(x0 * 1000, y0 * 1000, x1 * 1000, y1 * 1000)
    first = True
    for geom, label in polygons:
        for ring in _rings(geom):
            xy = np.asarray(ring.coords)
            ax.plot(xy[:, 0] / 1000, xy[:, 1] / 1000, color=color, lw=0.9,
                    label="permafrost zone boundary" if first else None)
            first = False
        inside = geom.intersection(view)
        if label and not inside.is_empty and inside.area > 0.02 * view.area:
            p = inside.representative_point()
            ax.text(p.x / 1000, p.y / 1000, label, fontsize=8, ha="center", va="center", color=color,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.6, "lw": 0})
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    return True


def _rings(geom: Any) -> list[Any]:
    parts = getattr(geom, "geoms", [geom])
    rings = []
    for part in parts:
        if part.geom_type == "Polygon":
            rings.append(part.exterior)
            rings.extend(part.interiors)
    return rings
