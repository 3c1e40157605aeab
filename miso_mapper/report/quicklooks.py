"""PNG quicklooks of a run's layers: permafrost probability, soil order, largest order probability.

Each PNG shows the bounding box of the run's manifest chunks (not the store's tile-snapped extent) read
decimated by :func:`~miso_mapper.report.source.read_preview` (block means of probabilities, block mode of the
class), axes in grid-CRS km (EPSG:3338), a colour bar or class legend, a km scale bar and, when the workflow
has a permafrost-zone polygon file, the zone outlines. No data (ocean, chunks not done) shows as grey.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.htmlpage import figure_png
from miso_mapper.report.mapfig import add_scalebar, add_zones, new_figure
from miso_mapper.report.source import MAX_PREVIEW_PX, Preview, RunData, load_run, read_preview
from miso_mapper.style import (
    LAYER_RAMPS,
    MAX_ORDER_PROBABILITY_RAMP,
    SOIL_ORDER_COLOURS,
    ColourRamp,
    css,
    matplotlib_cmap,
)

#: One colour per soil order, in SOIL_ORDERS order: the exported maps' colours (:mod:`miso_mapper.style`).
ORDER_COLOURS = tuple(css(SOIL_ORDER_COLOURS[name]) for name in SOIL_ORDERS)
#: Quicklook names -> file names.
FILES = {"permafrost_probability": "permafrost_probability.png", "taxonomy_class": "soil_order.png",
         "max_order_probability": "max_order_probability.png"}
DPI = 100


def write_quicklooks(workflow: Workflow, out_dir: Path, max_px: int = MAX_PREVIEW_PX,
                     run: RunData | None = None, preview: Preview | None = None) -> dict[str, Path]:
    """Write the quicklook PNGs of a workflow's run into ``out_dir``; returns {layer name: path}.

    Layers: ``permafrost_probability``, ``taxonomy_class`` (soil order) and ``max_order_probability``.
    ``max_px`` bounds the preview's long side in pixels; ``run``/``preview`` reuse already-read data.
    Raises :class:`~miso_mapper.errors.MisoError` when the workflow has no run manifest or store.
    """
    run = run or load_run(workflow)
    preview = preview or read_preview(run, max_px)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, draw in (("permafrost_probability", _permafrost), ("taxonomy_class", _soil_order),
                       ("max_order_probability", _max_probability)):
        fig, ax = new_figure(preview.extent, workflow.grid.crs)
        draw(fig, ax, preview)
        zones = add_zones(ax, workflow)
        add_scalebar(ax)
        if zones:
            ax.legend(loc="lower right", fontsize=7, framealpha=0.8)
        res = workflow.grid.resolution * preview.factor
        ax.set_title(f"{workflow.name}: {ax.get_title()}\n(1 preview pixel = {res:g} m; grey = no data)",
                     fontsize=10)
        path = out_dir / FILES[name]
        path.write_bytes(figure_png(fig, dpi=DPI))
        paths[name] = path
    return paths


def _km_extent(preview: Preview) -> tuple[float, float, float, float]:
    return tuple(v / 1000 for v in preview.extent)  # type: ignore[return-value]


def _continuous(fig: Any, ax: Any, preview: Preview, data: np.ndarray, ramp: ColourRamp, label: str,
                title: str) -> None:
    """A continuous layer (NaN = no data, transparent) in its style ramp, with a colour bar over the ramp's range."""
    im = ax.imshow(np.ma.masked_invalid(data), cmap=matplotlib_cmap(ramp), vmin=ramp.minimum, vmax=ramp.maximum,
                   extent=_km_extent(preview), interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)
    ax.set_title(title)


def _permafrost(fig: Any, ax: Any, preview: Preview) -> None:
    _continuous(fig, ax, preview, preview.permafrost, LAYER_RAMPS["permafrost_probability"],
                "probability of permafrost within 1 m", "permafrost probability")


def _soil_order(fig: Any, ax: Any, preview: Preview) -> None:
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.patches import Patch

    cmap = ListedColormap(ORDER_COLOURS).with_extremes(bad=(0, 0, 0, 0))
    norm = BoundaryNorm(np.arange(len(SOIL_ORDERS) + 1) - 0.5, len(SOIL_ORDERS))
    data = np.ma.masked_equal(preview.soil_order, 255)
    ax.imshow(data, cmap=cmap, norm=norm, extent=_km_extent(preview), interpolation="nearest")
    present = set(np.unique(data.compressed()).tolist())
    handles = [Patch(facecolor=c, edgecolor="k", lw=0.3, label=n + ("" if i in present else " (absent)"))
               for i, (n, c) in enumerate(zip(SOIL_ORDERS, ORDER_COLOURS, strict=True))]
    # a figure legend (beside the axes) leaves the axes' own legend to the zone outlines
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), bbox_transform=ax.transAxes,
               fontsize=8, title="soil order", frameon=False)
    ax.set_title("most probable soil order")


def _max_probability(fig: Any, ax: Any, preview: Preview) -> None:
    _continuous(fig, ax, preview, preview.max_order_probability, MAX_ORDER_PROBABILITY_RAMP,
                "probability of the most probable soil order", "soil-order confidence")
