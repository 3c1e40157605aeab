"""``export_workflow``: the whole export of a map store into the products folder (see :mod:`miso_mapper.export`).

One step per product, in this order: tile COGs and statewide overviews (one pass over the store,
:mod:`.tiles` and :mod:`.overview`), VRT mosaics (:mod:`.mosaic`), QGIS styles (:mod:`.qml`), STAC collection
(:mod:`.stac`). All are georeferenced from the store's own ``spatial_ref``
(:class:`~miso_mapper.export.source.StoreReader`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from odc.geo.geobox import GeoBox

from miso_mapper import __version__
from miso_mapper.config import Workflow
from miso_mapper.export.layers import LAYERS
from miso_mapper.export.mosaic import write_mosaics
from miso_mapper.export.overview import StatewideOverviews, overview_factor
from miso_mapper.export.paths import cog_path, products_dir, stac_dir
from miso_mapper.export.qml import write_styles
from miso_mapper.export.selection import TileSelection, select_tiles
from miso_mapper.export.source import StoreReader
from miso_mapper.export.stac import publish_collection
from miso_mapper.export.tiles import Progress, TileJob, export_tile_cogs
from miso_mapper.layout import RunLayout

__all__ = ["ExportResult", "Progress", "export_workflow", "overview_factor", "products_dir"]


@dataclass
class ExportResult:
    """What an export wrote. Paths are final product paths; seconds are wall seconds.

    ``tiles``: tiles exported by this call (row-major); ``reused_tiles``: tiles exported earlier from the same
    store that the mosaics, overviews and STAC still cover; ``empty_tiles``: tiles of the store (or asked for)
    with no written Zarr chunk, not exported; ``tile_seconds``: worker seconds per exported tile.
    """

    products: Path
    tiles: list[str]
    files: list[Path]
    tile_seconds: dict[str, float]
    seconds: float
    mosaics: dict[str, Path]
    overviews: dict[str, Path]
    stac: Path
    reused_tiles: list[str] = field(default_factory=list)
    empty_tiles: list[str] = field(default_factory=list)


def export_workflow(workflow: Workflow, client: Any = None, tiles: list[str] | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> ExportResult:
    """Export the workflow's ``maps.zarr`` into COGs per tile and layer, VRT mosaics, overviews and STAC.

    ``client``: a :class:`distributed.Client` to export tiles in parallel on (None: in this process).
    ``tiles``: tile ids to export (default: every tile of the store that holds data). ``overwrite``: replace
    existing products; without it an export that would overwrite any product raises :class:`MisoError`
    before writing anything. Raises :class:`MisoError` for a missing or unreadable store, a store off the
    workflow's grid, unknown tiles, or a product that fails COG validation.
    """
    t0 = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    products = products_dir(workflow)
    reader = StoreReader(RunLayout.of(workflow).store, workflow.grid)
    factor = overview_factor(workflow)
    chosen = select_tiles(reader, products, tiles, overwrite)
    extent = reader.cover(list(chosen.covered.values()))
    tags = _tags(reader)
    jobs = _tile_jobs(workflow, reader, chosen, factor, tags, products)
    with rasterio.Env(GDAL_CACHEMAX=workflow.export.gdal_cache_mb), \
            StatewideOverviews(products, extent, factor, tags, reader.decision_threshold) as overviews:
        files, seconds = export_tile_cogs(jobs, client, overviews.add, report)
        files += overviews.publish(workflow.export, report)
    mosaics = write_mosaics(products, chosen.covered, extent, workflow.export.blocksize)
    files += list(mosaics.values())
    files += write_styles(products, mosaics, overviews.paths)
    files += _write_stac(workflow, reader, products, chosen.covered, mosaics, overviews)
    return ExportResult(
        products=products, tiles=list(chosen.todo), files=files, tile_seconds=seconds,
        seconds=time.perf_counter() - t0, mosaics=mosaics, overviews=overviews.paths,
        stac=stac_dir(products) / "collection.json", reused_tiles=list(chosen.reused), empty_tiles=chosen.empty,
    )


def _tags(reader: StoreReader) -> dict[str, str]:
    """GeoTIFF tags of every COG: the store's provenance and this software's version."""
    attrs = reader.attrs
    return {"MISO_STORE_UUID": reader.uuid, "MISO_MAP_CONFIG_HASH": str(attrs.get("map_config_hash", "")),
            "MISO_IMAGERY_DATE_RANGE": str(attrs.get("imagery_date_range", "")),
            "MISO_EXPORT_VERSION": __version__}


def _tile_jobs(workflow: Workflow, reader: StoreReader, chosen: TileSelection, factor: int, tags: dict[str, str],
               products: Path) -> list[TileJob]:
    """One job per tile to export (writing its COGs) and per reused tile (overview pieces only)."""

    def job(tile: str, outputs: dict[str, str]) -> TileJob:
        return TileJob(str(reader.path), workflow.grid, workflow.export, tile, reader.tiles[tile], factor, tags,
                       outputs)

    return ([job(tile, {name: str(cog_path(products, name, tile)) for name in LAYERS}) for tile in chosen.todo]
            + [job(tile, {}) for tile in chosen.reused])


def _write_stac(workflow: Workflow, reader: StoreReader, products: Path, covered: dict[str, GeoBox],
                mosaics: dict[str, Path], overviews: StatewideOverviews) -> list[Path]:
    """The STAC collection: an item per covered tile (its COGs), the mosaics and overviews as collection assets."""
    items = {tile: (geobox, {name: cog_path(products, name, tile) for name in LAYERS})
             for tile, geobox in covered.items()}
    overview_assets = {name: (overviews.geobox, path) for name, path in overviews.paths.items()}
    attrs = reader.attrs | {"decision_threshold": reader.decision_threshold}
    return publish_collection(stac_dir(products), f"miso-{workflow.name}", attrs, workflow.grid.resolution,
                              items, mosaics, overview_assets)
