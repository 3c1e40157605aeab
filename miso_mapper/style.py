"""The one definition of how every map layer looks: class colours and names, colour ramps, chunk-status colours.

Everything that draws or describes a layer reads it from here: the run report's quicklooks
(:mod:`miso_mapper.report.quicklooks`, :mod:`miso_mapper.report.coverage`), the COG and VRT colour tables and
category names (:mod:`miso_mapper.export.layers`), the STAC classification extension
(:mod:`miso_mapper.export.stac`) and the QGIS style files (:mod:`miso_mapper.export.qml`).

Colours are hex RGB strings without ``#`` (``"2E7D32"``). Class layers map a stored uint8 value to a
:class:`LayerClass`; continuous layers map a *physical* value (stored x the layer's scale, e.g. a probability
in 0-1, not the stored 0-250) to a colour by linear interpolation between the stops of a :class:`ColourRamp`,
clamped at its ends. 255 is no data everywhere and is drawn transparent.
"""

from __future__ import annotations

from dataclasses import dataclass

from miso_mapper.bands import SOIL_ORDERS

#: Colour of each soil order (hex RGB), in :data:`~miso_mapper.bands.SOIL_ORDERS` order.
SOIL_ORDER_COLOURS: dict[str, str] = {
    "Andisols": "D94C2B",
    "Entisols": "F2D16B",
    "Gelisols": "6FA8DC",
    "Histosols": "5B3A1E",
    "Inceptisols": "A7C957",
    "Mollisols": "2E7D32",
    "Spodosols": "9C6ADE",
}
#: Colour of a manifest chunk by its status (coverage map, viewer overlay).
STATUS_COLOURS: dict[str, str] = {"done": "1A9850", "failed": "D73027", "running": "FDAE61", "pending": "FFFFFF"}
#: Where a map has no data (ocean, not run, failed) in the report's figures.
NODATA_GREY = "CFCFCF"


@dataclass(frozen=True)
class LayerClass:
    """One value of a categorical layer: the stored uint8 ``value``, its name, description and colour (hex RGB)."""

    value: int
    name: str
    description: str
    colour: str


@dataclass(frozen=True)
class ColourRamp:
    """A continuous layer's colours: ``stops`` are (physical value, hex RGB) in increasing value order, from
    ``minimum`` to ``maximum`` (values beyond are drawn in the end colours); ``label`` names the quantity and
    its unit for legends."""

    stops: tuple[tuple[float, str], ...]
    label: str

    @property
    def minimum(self) -> float:
        """Physical value of the first stop."""
        return self.stops[0][0]

    @property
    def maximum(self) -> float:
        """Physical value of the last stop."""
        return self.stops[-1][0]


def rgb(colour: str) -> tuple[int, int, int]:
    """(r, g, b) 0-255 of a hex RGB colour (with or without ``#``)."""
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def css(colour: str) -> str:
    """``#rrggbb`` (lower case) of a hex RGB colour, as matplotlib, HTML and QGIS write it."""
    return "#" + colour.lstrip("#").lower()


def _ramp(minimum: float, maximum: float, colours: tuple[str, ...], label: str) -> ColourRamp:
    """Evenly spaced stops of ``colours`` from ``minimum`` to ``maximum``."""
    step = (maximum - minimum) / (len(colours) - 1)
    return ColourRamp(tuple((round(minimum + i * step, 6), c) for i, c in enumerate(colours)), label)


# Permafrost runs from warm beige (none) to deep blue (frozen), the permafrost_class colours at its ends.
_PERMAFROST = ("E8E2C8", "C6DBEF", "6BAED6", "3B6FB6", "08306B")
_VIRIDIS = ("440154", "3B528B", "21918C", "5EC962", "FDE725")
_MAGMA = ("000004", "51127C", "B73779", "FC8961", "FCFDBF")
_CIVIDIS = ("00224E", "3D4D6E", "7C7B78", "BCAF6F", "FEE838")

PERMAFROST_CLASSES: tuple[LayerClass, ...] = (
    LayerClass(0, "no permafrost", "P(permafrost within 1 m) below the decision threshold", _PERMAFROST[0]),
    LayerClass(1, "permafrost", "P(permafrost within 1 m) at or above the decision threshold", _PERMAFROST[3]),
)
SOIL_ORDER_CLASSES: tuple[LayerClass, ...] = tuple(
    LayerClass(i, name, f"soil order {name} (USDA)", SOIL_ORDER_COLOURS[name]) for i, name in enumerate(SOIL_ORDERS))
AOA_CLASSES: tuple[LayerClass, ...] = (
    LayerClass(0, "outside", "outside the area of applicability: the model extrapolates (DI > threshold)", "D7301F"),
    LayerClass(1, "inside", "inside the area of applicability (DI <= threshold)", "1A9850"),
)
#: Colour of a conformal set by its number of orders (0 empty, 1 confident ... 7 every order).
SET_SIZE_COLOURS = ("FFFFFF", "1A9850", "91CF60", "D9EF8B", "FEE08B", "FC8D59", "D73027", "7F0000")


def _set_class(bits: int) -> LayerClass:
    orders = [name for i, name in enumerate(SOIL_ORDERS) if bits >> i & 1]
    name = "+".join(orders) if orders else "empty"
    return LayerClass(bits, name, f"conformal set of {len(orders)} order(s): {name}", SET_SIZE_COLOURS[len(orders)])


#: Every conformal set of the 7 orders as a class (value = bitmask, bit i = order i of SOIL_ORDERS).
SET_CLASSES: tuple[LayerClass, ...] = tuple(_set_class(bits) for bits in range(2 ** len(SOIL_ORDERS)))

#: The classes of each categorical layer (stored value -> class), by layer name.
LAYER_CLASSES: dict[str, tuple[LayerClass, ...]] = {
    "taxonomy_class": SOIL_ORDER_CLASSES,
    "permafrost_class": PERMAFROST_CLASSES,
    "permafrost_aoa": AOA_CLASSES,
    "taxonomy_aoa": AOA_CLASSES,
    "taxonomy_set": SET_CLASSES,
}

#: The colour ramp of each continuous layer in physical units (stored x scale), by layer name. The ranges are
#: the quantities' own: probabilities, normalised entropy and masked fraction 0-1; a window spread (std of a
#: probability) at most 0.5; the AOA dissimilarity index 0-2 (AOA thresholds lie well below 2; the store caps
#: at 5.08); valid observations 0-60 per composite.
LAYER_RAMPS: dict[str, ColourRamp] = {
    "permafrost_probability": _ramp(0.0, 1.0, _PERMAFROST, "probability of permafrost within 1 m"),
    "taxonomy_probability": _ramp(0.0, 1.0, _VIRIDIS, "probability of the soil order"),
    "permafrost_spread": _ramp(0.0, 0.5, _MAGMA, "std of P(permafrost) across windows"),
    "taxonomy_entropy": _ramp(0.0, 1.0, _MAGMA, "soil-order entropy / ln 7"),
    "taxonomy_spread": _ramp(0.0, 0.5, _MAGMA, "std of the top order's probability across windows"),
    "valid_observations": _ramp(0.0, 60.0, _CIVIDIS, "valid Sentinel-2 observations (count)"),
    "masked_fraction": _ramp(0.0, 1.0, _CIVIDIS[::-1], "fraction of observations masked"),
    "permafrost_aoa_index": _ramp(0.0, 2.0, _MAGMA[::-1], "dissimilarity index (permafrost network)"),
    "taxonomy_aoa_index": _ramp(0.0, 2.0, _MAGMA[::-1], "dissimilarity index (soil-order network)"),
}
#: The report's confidence quicklook (largest order probability): the soil-order probability ramp.
MAX_ORDER_PROBABILITY_RAMP = LAYER_RAMPS["taxonomy_probability"]


def legend(layer: str) -> list[tuple[str, str]]:
    """(label, hex RGB) entries of a layer's legend: its classes in value order, or its ramp's stops
    (labelled with their physical values). Raises KeyError for a layer without a style."""
    if layer in LAYER_CLASSES:
        return [(c.name, c.colour) for c in sorted(LAYER_CLASSES[layer], key=lambda c: c.value)]
    return [(f"{value:g}", colour) for value, colour in LAYER_RAMPS[layer].stops]


def matplotlib_cmap(ramp: ColourRamp) -> object:
    """A matplotlib colormap of ``ramp`` over 0-1 of its range (use ``vmin=ramp.minimum, vmax=ramp.maximum``);
    NaN / masked draw transparent."""
    from matplotlib.colors import LinearSegmentedColormap

    span = ramp.maximum - ramp.minimum
    nodes = [((value - ramp.minimum) / span, css(colour)) for value, colour in ramp.stops]
    return LinearSegmentedColormap.from_list(ramp.label, nodes).with_extremes(bad=(0, 0, 0, 0))
