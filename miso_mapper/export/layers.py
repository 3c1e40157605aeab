"""What each exported layer is: bands, scaling, no data, overview resampling, colours and category names.

All layers are uint8 with no data 255 (as in ``maps.zarr``). Probabilities keep the store's x250 scaling, so
their GDAL scale/offset is 0.004/0 (physical = stored x 0.004).
"""

from __future__ import annotations

from dataclasses import dataclass

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.pipeline.store import PROB_SCALE

#: Colour hint of each soil order (hex RGB, in :data:`SOIL_ORDERS` order); class map palette and STAC hints.
SOIL_ORDER_COLOURS: dict[str, str] = {
    "Andisols": "D94C2B",
    "Entisols": "F2D16B",
    "Gelisols": "6FA8DC",
    "Histosols": "5B3A1E",
    "Inceptisols": "A7C957",
    "Mollisols": "2E7D32",
    "Spodosols": "9C6ADE",
}


@dataclass(frozen=True)
class LayerSpec:
    """One exported layer of the store.

    ``zarr_name`` is the array in ``maps.zarr``; ``bands`` the band descriptions (one per band, in order);
    ``resampling`` the GDAL overview resampling name; ``scale``/``offset`` the GDAL unpacking (None: none).
    """

    name: str
    zarr_name: str
    bands: tuple[str, ...]
    resampling: str
    title: str
    scale: float | None = None
    offset: float | None = None
    categorical: bool = False

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.bands)


LAYER_SPECS: tuple[LayerSpec, ...] = (
    LayerSpec("permafrost_probability", "permafrost_probability", ("permafrost_probability",), "average",
              "Probability of permafrost within 1 m (x250; scale 0.004)", 1.0 / PROB_SCALE, 0.0),
    LayerSpec("taxonomy_class", "taxonomy_class", ("taxonomy_class",), "mode",
              "Most probable soil order (index into the 7 orders)", categorical=True),
    LayerSpec("taxonomy_probability", "taxonomy_probability", tuple(SOIL_ORDERS), "average",
              "Probability of each soil order (x250; scale 0.004)", 1.0 / PROB_SCALE, 0.0),
)
LAYERS: dict[str, LayerSpec] = {spec.name: spec for spec in LAYER_SPECS}


def colour_table() -> dict[int, tuple[int, int, int, int]]:
    """The class layer's 256-entry palette: the order colours at 0..6, transparent elsewhere (255 = no data)."""
    table = {i: (0, 0, 0, 0) for i in range(256)}
    for i, name in enumerate(SOIL_ORDERS):
        hexa = SOIL_ORDER_COLOURS[name]
        table[i] = (int(hexa[0:2], 16), int(hexa[2:4], 16), int(hexa[4:6], 16), 255)
    return table


def category_names() -> list[str]:
    """GDAL category names of the class layer: value i -> name of order i (values 0..6)."""
    return list(SOIL_ORDERS)
