"""Coverage map and timings of a run, from its manifest alone.

The coverage map draws every manifest chunk as a rectangle (grid CRS, km axes) coloured by status. Timings
are the manifest's per-chunk seconds of the last attempt; throughput is km² done per hour between the first
``started`` and the last ``finished`` of the done chunks (so a pause between a killed run and its
``--resume`` counts as time), and km² per worker-hour from the sum of the chunks' ``total_s``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from miso_mapper import style
from miso_mapper.htmlpage import figure_png
from miso_mapper.report.mapfig import add_scalebar, add_zones, new_figure
from miso_mapper.report.source import RunData
from miso_mapper.style import css

#: Chunk status -> matplotlib colour (:data:`miso_mapper.style.STATUS_COLOURS`).
STATUS_COLOURS = {status: css(colour) for status, colour in style.STATUS_COLOURS.items()}


def coverage_png(run: RunData, dpi: int = 90) -> bytes:
    """PNG of the manifest's chunks coloured by status (done/failed/running/pending), with a legend."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Patch, Rectangle

    box = run.box().boundingbox
    fig, ax = new_figure((box.left, box.right, box.bottom, box.top), run.grid.config.crs, long_in=6.0)
    rects, colours = [], []
    for row in run.rows:
        xmin, ymin, xmax, ymax = run.chunk_bounds(row)
        rects.append(Rectangle((xmin / 1000, ymin / 1000), (xmax - xmin) / 1000, (ymax - ymin) / 1000))
        colours.append(STATUS_COLOURS.get(row.status, "#999999"))
    edge = 0.4 if len(rects) < 2000 else 0.0
    ax.add_collection(PatchCollection(rects, facecolors=colours, edgecolors="#444444", linewidths=edge))
    counts = {s: sum(r.status == s for r in run.rows) for s in STATUS_COLOURS}
    handles = [Patch(facecolor=c, edgecolor="#444444", label=f"{s} ({counts[s]})")
               for s, c in STATUS_COLOURS.items() if counts[s]]
    zones = add_zones(ax, run.workflow, color="#333333")
    add_scalebar(ax)
    if zones:
        from matplotlib.lines import Line2D

        handles.append(Line2D([], [], color="#333333", lw=0.9, label="permafrost zone boundary"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="chunk status")
    ax.set_title(f"{run.workflow.name}: chunks by status ({len(run.rows)} chunks)", fontsize=10)
    return figure_png(fig, dpi=dpi)


@dataclass
class Timings:
    """Totals of a run's timings. Seconds, km², km²/h; None where the manifest lacks the figures."""

    chunks_done: int
    km2_done: float
    km2_total: float
    read_s: float
    predict_s: float
    write_s: float
    total_s: float
    first_start: str | None
    last_finish: str | None
    wall_s: float | None
    km2_per_hour: float | None
    """km² done per wall-clock hour from ``first_start`` to ``last_finish``."""
    km2_per_worker_hour: float | None
    """km² done per hour of summed chunk ``total_s`` (worker time)."""


def _time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def timings(run: RunData) -> Timings:
    """Totals of the done chunks' timings and the run's throughput (see the module doc)."""
    done = run.done()
    km2 = sum(r.area_km2 for r in done)
    starts = [t for r in done if (t := _time(r.started)) is not None]
    ends = [t for r in done if (t := _time(r.finished)) is not None]
    first, last = (min(starts), max(ends)) if starts and ends else (None, None)
    wall = (last - first).total_seconds() if first and last else None
    total = sum(r.total_s or 0.0 for r in done)
    return Timings(
        chunks_done=len(done), km2_done=km2, km2_total=sum(r.area_km2 for r in run.rows),
        read_s=sum(r.read_s or 0.0 for r in done), predict_s=sum(r.predict_s or 0.0 for r in done),
        write_s=sum(r.write_s or 0.0 for r in done), total_s=total,
        first_start=first.isoformat() if first else None, last_finish=last.isoformat() if last else None,
        wall_s=wall, km2_per_hour=km2 / (wall / 3600) if wall else None,
        km2_per_worker_hour=km2 / (total / 3600) if total > 0 else None,
    )
