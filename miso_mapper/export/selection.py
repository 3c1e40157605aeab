"""Which tiles an export writes, which it skips for lack of data, and which an earlier export left in place.

Tiles are the store's (:attr:`~miso_mapper.export.source.StoreReader.tiles`: id -> tile GeoBox, row-major).
A tile is *empty* when no Zarr chunk of it was ever written. A tile is *reused* when an earlier export of the
very same store (same ``store_uuid``) left its three COGs in the products folder: the mosaics, overviews and
STAC of this export still cover it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import rasterio
from odc.geo.geobox import GeoBox

from miso_mapper.errors import MisoError
from miso_mapper.export.layers import LAYER_SPECS
from miso_mapper.export.paths import cog_path, planned_paths
from miso_mapper.export.source import StoreReader


@dataclass(frozen=True)
class TileSelection:
    """The tiles of one export (id -> tile grid, row-major)."""

    todo: dict[str, GeoBox]
    """Tiles exported now (they hold data)."""
    empty: list[str]
    """Tiles of the store (or asked for) with no written Zarr chunk: not exported."""
    reused: dict[str, GeoBox]
    """Tiles an earlier export of this store left in the products folder."""
    covered: dict[str, GeoBox]
    """``todo`` and ``reused`` together: what the mosaics, overviews and STAC span."""


def select_tiles(reader: StoreReader, products: Path, wanted: list[str] | None, overwrite: bool) -> TileSelection:
    """The tiles to export: ``wanted`` ids (default: every tile of the store) that hold data.

    Raises :class:`MisoError` for an unknown tile id, when no selected tile holds data, and, unless
    ``overwrite``, when any product this export writes already exists (before anything is written).
    """
    asked = _asked(reader, wanted)
    todo = {tile: geobox for tile, geobox in asked.items() if reader.has_data(geobox)}
    if not todo:
        raise MisoError(f"no tile of {reader.path} holds data{' among ' + ', '.join(wanted) if wanted else ''}: "
                        "nothing to export (has `miso-mapper run` written any chunk?)")
    existing = [p for p in planned_paths(products, list(todo)) if p.exists()]
    if existing and not overwrite:
        raise MisoError(f"{products} already holds export products ({len(existing)} of the files this export "
                        f"writes, e.g. {existing[0].relative_to(products)}); pass --overwrite to replace them")
    reused = _reused(reader, products, [tile for tile in reader.tiles if tile not in todo])
    return TileSelection(
        todo=todo, empty=[tile for tile in asked if tile not in todo],
        reused={tile: reader.tiles[tile] for tile in reused},
        covered={tile: geobox for tile, geobox in reader.tiles.items() if tile in todo or tile in reused},
    )


def _asked(reader: StoreReader, wanted: list[str] | None) -> dict[str, GeoBox]:
    """The store's tiles among ``wanted`` (all of them for None), row-major; :class:`MisoError` for others."""
    if not wanted:
        return dict(reader.tiles)
    for tile in wanted:
        reader.grid.parse_tile_id(tile)
        if tile not in reader.tiles:
            raise MisoError(f"tile {tile} is not in the store {reader.path} (it has {', '.join(sorted(reader.tiles))})")
    return {tile: geobox for tile, geobox in reader.tiles.items() if tile in set(wanted)}


def _reused(reader: StoreReader, products: Path, candidates: list[str]) -> list[str]:
    """Tiles whose three COGs an earlier export of this very store left in ``products``."""
    out = []
    for tile in candidates:
        paths = [cog_path(products, spec.name, tile) for spec in LAYER_SPECS]
        if not all(p.is_file() for p in paths):
            continue
        try:
            with rasterio.open(paths[0]) as src:
                same = src.tags().get("MISO_STORE_UUID") == reader.uuid
        except rasterio.errors.RasterioError:
            same = False
        if same:
            out.append(tile)
    return out
