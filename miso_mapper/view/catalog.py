"""Which exported layers the viewer shows, and how: colour map (stored uint8 value -> RGBA) and legend.

A layer is shown when ``export`` wrote its VRT mosaic and its statewide overview holds any data, so an extra
layer the store never filled (e.g. no AOA sidecar) stays out of the menu. Class layers use the export's colour
table (:func:`miso_mapper.export.layers.colour_table`); continuous layers a viridis ramp from 0 to ``vmax``
(stored units: 250 for the x250/x500/x50 scaled layers, the overview's maximum for counts). The 7-band
``taxonomy_probability`` is not drawn but is sampled under a click.
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

#: Stored value drawn at the top of the ramp for a scaled continuous layer (x250 probabilities: 1.0).
SCALED_VMAX = 250
RAMP = "viridis"
RGBA = tuple[int, int, int, int]


@dataclass(frozen=True)
class ViewLayer:
    """One layer the viewer can draw or sample: its export spec, VRT mosaic, statewide overview COG
    (None when absent), whether it is drawn as tiles, and ``vmax`` (stored value at the ramp's top)."""

    spec: LayerSpec
    mosaic: Path
    overview: Path | None
    drawn: bool
    vmax: int

    @property
    def name(self) -> str:
        """The layer's name (as in ``maps.zarr`` and the products folder)."""
        return self.spec.name

    def colormap(self) -> dict[int, RGBA]:
        """Stored uint8 value -> RGBA for every value 0..255 (no data 255 transparent)."""
        if self.spec.categorical:
            return colour_table(self.spec)
        from rio_tiler.colormap import cmap

        ramp = cmap.get(RAMP)
        table = {v: _rgba(ramp[min(255, round(v * 255 / max(self.vmax, 1)))]) for v in range(256)}
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
        from rio_tiler.colormap import cmap

        ramp = cmap.get(RAMP)
        stops = ["#{:02x}{:02x}{:02x}".format(*(int(x) for x in ramp[i][:3])) for i in range(0, 256, 51)]
        top = self.vmax * self.spec.scale if self.spec.scale is not None else self.vmax
        return {"kind": "ramp", "stops": stops, "min": 0, "max": round(float(top), 4)}

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
        vmax = SCALED_VMAX if spec.scale is not None else max(peak, 1)
        layers.append(ViewLayer(spec, mosaic, overview if overview.is_file() else None, spec.count == 1, vmax))
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
