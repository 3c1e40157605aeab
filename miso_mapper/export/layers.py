"""What each exported layer is: bands, scaling, no data, overview resampling, colours and category names.

Colours, class names and ramps come from :mod:`miso_mapper.style` (the one definition the report, STAC and
the QGIS styles share).

All layers are uint8 with no data 255 (as in ``maps.zarr``). Probabilities keep the store's x250 scaling, so
their GDAL scale/offset is 0.004/0 (physical = stored x 0.004).

The extra layers (uncertainty, input quality, area of applicability, conformal set;
:mod:`miso_mapper.pipeline.extra_layers`) keep their store scaling too: GDAL scale = the store's
``scale_factor`` (0.002 spread, 0.004 entropy and masked fraction, 0.02 AOA index), none for the counts,
the 0/1 AOA masks (classes) and the conformal set (a bitmask, one class per set of orders).

``permafrost_class`` is the one layer not stored as such: it is derived, block by block, from the stored
``permafrost_probability`` and the store's ``decision_threshold`` (1 where the stored probability x 0.004 is
>= the threshold, 0 below, 255 no data; :func:`miso_mapper.pipeline.store.permafrost_class`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.pipeline.extra_layers import EXTRA_LAYERS, ExtraLayer
from miso_mapper.pipeline.store import PROB_SCALE, permafrost_class
from miso_mapper.style import (
    AOA_CLASSES,
    LAYER_CLASSES,
    PERMAFROST_CLASSES,
    SET_CLASSES,
    SOIL_ORDER_CLASSES,
    SOIL_ORDER_COLOURS,
    LayerClass,
    rgb,
)

__all__ = ["AOA_CLASSES", "LAYERS", "LAYER_SPECS", "PERMAFROST_CLASSES", "SET_CLASSES", "SOIL_ORDER_CLASSES",
           "SOIL_ORDER_COLOURS", "LayerClass", "LayerSpec", "category_names", "colour_table", "layer_tags"]


@dataclass(frozen=True)
class LayerSpec:
    """One exported layer of the store.

    ``zarr_name`` is the array in ``maps.zarr``; ``bands`` the band descriptions (one per band, in order);
    ``resampling`` the GDAL overview resampling name; ``scale``/``offset`` the GDAL unpacking (None: none);
    ``classes`` the values of a categorical layer; ``thresholded``: the layer is ``zarr_name`` classified by
    the store's permafrost decision threshold (:meth:`from_stored`).
    """

    name: str
    zarr_name: str
    bands: tuple[str, ...]
    resampling: str
    title: str
    scale: float | None = None
    offset: float | None = None
    classes: tuple[LayerClass, ...] = ()
    thresholded: bool = False

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.bands)

    @property
    def categorical(self) -> bool:
        """Whether the values are classes (mode overviews, colour table, category names)."""
        return bool(self.classes)

    def from_stored(self, block: np.ndarray, threshold: float) -> np.ndarray:
        """This layer's uint8 values from a block of its stored array ``zarr_name`` (same shape)."""
        return permafrost_class(block, threshold) if self.thresholded else block


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("permafrost_probability", "permafrost_probability", ("permafrost_probability",), "average",
              "Probability of permafrost within 1 m (x250; scale 0.004)", 1.0 / PROB_SCALE, 0.0),
    LayerSpec("taxonomy_class", "taxonomy_class", ("taxonomy_class",), "mode",
              "Most probable soil order (index into the 7 orders)", classes=SOIL_ORDER_CLASSES),
    LayerSpec("taxonomy_probability", "taxonomy_probability", tuple(SOIL_ORDERS), "average",
              "Probability of each soil order (x250; scale 0.004)", 1.0 / PROB_SCALE, 0.0),
    LayerSpec("permafrost_class", "permafrost_probability", ("permafrost_class",), "mode",
              "Permafrost within 1 m (1) or not (0) at the model's decision threshold", classes=PERMAFROST_CLASSES,
              thresholded=True),
)


def _extra_spec(layer: ExtraLayer) -> LayerSpec:
    """The export of a store's extra layer: its scale (as stored), classes for the masks and the set."""
    classes = LAYER_CLASSES.get(layer.name, ())
    if classes:
        return LayerSpec(layer.name, layer.name, (layer.name,), "mode", layer.long_name, classes=classes)
    if layer.scale is None:
        return LayerSpec(layer.name, layer.name, (layer.name,), "average", layer.long_name)
    title = f"{layer.long_name[0].upper()}{layer.long_name[1:]} (x{round(1 / layer.scale)}; scale {layer.scale})"
    return LayerSpec(layer.name, layer.name, (layer.name,), "average", title, layer.scale, 0.0)


LAYER_SPECS += tuple(_extra_spec(layer) for layer in EXTRA_LAYERS)
LAYERS: dict[str, LayerSpec] = {spec.name: spec for spec in LAYER_SPECS}


def colour_table(spec: LayerSpec) -> dict[int, tuple[int, int, int, int]]:
    """A class layer's 256-entry palette: its classes' colours at their values, transparent elsewhere
    (255 = no data)."""
    table = {i: (0, 0, 0, 0) for i in range(256)}
    for cls in spec.classes:
        table[cls.value] = (*rgb(cls.colour), 255)
    return table


def category_names(spec: LayerSpec) -> list[str]:
    """GDAL category names of a class layer: entry i names value i (the classes' values are 0, 1, ...)."""
    return [cls.name for cls in sorted(spec.classes, key=lambda c: c.value)]


def layer_tags(spec: LayerSpec, threshold: float) -> dict[str, str]:
    """GeoTIFF tags a layer adds to the store's: the decision threshold of a thresholded layer."""
    return {"MISO_DECISION_THRESHOLD": repr(float(threshold))} if spec.thresholded else {}
