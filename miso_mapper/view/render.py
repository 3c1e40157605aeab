"""Web map tiles and point values of the exported layers, read with rio-tiler.

Tiles are 256 px PNGs on the Web Mercator quad tree (EPSG:3857, ``z/x/y`` as Leaflet and OpenStreetMap
number them), nearest-neighbour resampled from the layer's VRT mosaic, or from its statewide overview COG
once a tile pixel is coarser than two overview pixels (so a zoomed-out view of Alaska opens one small file,
not every tile COG). No data and places outside the products are transparent.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from miso_mapper.view.catalog import ViewLayer, physical

TILE_PX = 256
#: Web Mercator metres per pixel of a 256 px tile at zoom 0 (2 pi R / 256).
Z0_RESOLUTION = 2 * math.pi * 6378137.0 / TILE_PX


@functools.cache
def empty_tile() -> bytes:
    """A fully transparent 256 px PNG."""
    from rio_tiler.models import ImageData

    data = np.zeros((1, TILE_PX, TILE_PX), np.uint8)
    return ImageData(np.ma.MaskedArray(data, mask=True)).render(img_format="PNG")


def tile_source(layer: ViewLayer, z: int) -> Path:
    """The file a zoom ``z`` tile of ``layer`` is read from: the overview COG when coarse enough, else the VRT."""
    if layer.overview is None:
        return layer.mosaic
    with rasterio.open(layer.overview) as src:
        overview_res = abs(src.transform.a)
    # Mercator stretches ground distances by 1/cos(lat) (about 2.4 over Alaska): two overview pixels is safe
    return layer.overview if Z0_RESOLUTION / 2**z >= 2 * overview_res * 2.4 else layer.mosaic


def render_tile(layer: ViewLayer, z: int, x: int, y: int) -> bytes:
    """The PNG of tile ``z/x/y`` of ``layer`` coloured by :meth:`ViewLayer.colormap` (transparent outside)."""
    from rio_tiler.errors import TileOutsideBounds
    from rio_tiler.io import Reader

    with Reader(str(tile_source(layer, z))) as src:
        try:
            image = src.tile(x, y, z, indexes=1, tilesize=TILE_PX)
        except TileOutsideBounds:
            return empty_tile()
    return image.render(img_format="PNG", colormap=layer.colormap())


def sample_point(layers: list[ViewLayer], lon: float, lat: float) -> dict[str, Any]:
    """Every layer's value at ``lon``/``lat`` (degrees, EPSG:4326), read at full resolution from its VRT.

    Returns ``{layer: {"stored": [uint8 per band], "value": [physical per band], "bands": [names]}}``;
    ``value`` is the class name, the scaled value or the count, None for no data. Layers the point is
    outside of are left out.
    """
    from rio_tiler.errors import PointOutsideBounds
    from rio_tiler.io import Reader

    out: dict[str, Any] = {}
    for layer in layers:
        with Reader(str(layer.mosaic)) as src:
            try:
                point = src.point(lon, lat)
            except PointOutsideBounds:
                continue
        stored = [int(v) for v in np.asarray(point.array.data).ravel()]
        out[layer.name] = {"stored": stored, "value": [physical(layer, v) for v in stored],
                           "bands": list(layer.spec.bands)}
    return out
