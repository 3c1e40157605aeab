"""Which exported layers the viewer shows, and how: colour map (stored uint8 value -> RGBA) and legend.

A layer is shown when ``export`` wrote its VRT mosaic and its statewide overview holds any data, so an extra
layer the store never filled (e.g. no AOA sidecar) stays out of the menu. Class layers use the export's colour
table (:func:`miso_mapper.export.layers.colour_table`); continuous layers the colour ramp of
:data:`miso_mapper.style.LAYER_RAMPS` over its physical range, as the QGIS styles and the report draw them
(one style). The 7-band ``taxonomy_probability`` is not drawn but is sampled under a click.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from miso_mapper.export.layers import LAYER_SPECS, LayerSpec, colour_table
from miso_mapper.export.paths import mosaic_path, overview_path
from miso_mapper.pipeline.store import NODATA
from miso_mapper.style import LAYER_RAMPS, css, matplotlib_cmap

RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class ViewLayer:
    """One layer the viewer can draw or sample: its export spec, VRT mosaic, statewide overview COG
    (None when absent) and whether it is drawn as tiles."""

    spec: LayerSpec
    mosaic: Path
    overview: Path | None
    drawn: bool

    @property
    def name(self) -> str:
        """The layer's name (as in ``maps.zarr`` and the products folder)."""
        return self.spec.name

    def colormap(self) -> dict[int, RGBA]:
        """Stored uint8 value -> RGBA for every value 0..255 (no data 255 transparent)."""
        if self.spec.categorical:
            return colour_table(self.spec)
        ramp = LAYER_RAMPS[self.name]
        scale = self.spec.scale if self.spec.scale is not None else 1.0
        t = np.clip((np.arange(256) * scale - ramp.minimum) / (ramp.maximum - ramp.minimum), 0.0, 1.0)
        colours = np.round(np.asarray(matplotlib_cmap(ramp)(t)) * 255).astype(int)  # type: ignore[operator]
        table = {v: _rgba(colours[v]) for v in range(256)}
        table[NODATA] = (0, 0, 0, 0)
        return table

    def legend(self) -> dict[str, Any]:
        """What the page's legend shows: class swatches (grouped by colour), or a ramp with its end values."""
        if self.spec.categorical:
            groups: dict[str, list[str]] = {}
            for cls in self.spec.classes:
                groups.setdefault(cls.colour, []).append(cls.name if len(self.spec.classes) <= 12
                                                         else cls.description.split(":")[0])
            return {"kind": "classes", "entries": [{"colour": f"#{c}", "label": names[0] if len(set(names)) == 1
                                                    else ", ".join(names)} for c, names in groups.items()]}
        ramp = LAYER_RAMPS[self.name]
        return {"kind": "ramp", "stops": [css(c) for _, c in ramp.stops], "min": ramp.minimum, "max": ramp.maximum,
                "label": ramp.label}

    def describe(self) -> dict[str, Any]:
        """The layer as the page's ``/layers.json`` lists it."""
        return {"name": self.name, "title": self.spec.title, "drawn": self.drawn, "legend": self.legend()}


def _rgba(colour: Any) -> RGBA:
    r, g, b, a = (int(x) for x in colour)
    return r, g, b, a


def find_layers(products: Path) -> list[ViewLayer]:
    """The exported layers under ``products`` that hold data, in the export's layer order."""
    layers = []
    for spec in LAYER_SPECS:
        mosaic = mosaic_path(products, spec.name)
        if not mosaic.is_file():
            continue
        overview = overview_path(products, spec.name)
        peak = _overview_peak(overview) if overview.is_file() else 0
        if peak < 0:
            continue
        layers.append(ViewLayer(spec, mosaic, overview if overview.is_file() else None, spec.count == 1))
    return layers


def _overview_peak(path: Path) -> int:
    """The largest valid stored value of a statewide overview COG; -1 when it holds no data at all."""
    with rasterio.open(path) as src:
        data = src.read()
    valid = data[data != NODATA]
    return int(valid.max()) if valid.size else -1


def physical(layer: ViewLayer, stored: int) -> float | str | None:
    """A stored value as the user reads it: the class name, the scaled value, the count; None for no data."""
    if stored == NODATA:
        return None
    if layer.spec.categorical:
        return next((c.name for c in layer.spec.classes if c.value == stored), str(stored))
    if layer.spec.scale is not None:
        return round(float(np.float64(stored) * layer.spec.scale + (layer.spec.offset or 0.0)), 6)
    return stored
