"""One tile's export, run on a Dask worker (or in process): stream the store into the tile's three COGs.

The tile is read in blocks of ``lcm(zarr_chunk, factor)`` px (whole Zarr chunks, whole overview cells),
row-major; each block is written as a window into the layers' staging GeoTIFFs and reduced to the tile's
piece of the statewide overviews (``factor`` = overview resolution / grid resolution). Peak memory is one
block of the three layers (9 bytes per pixel) plus GDAL's bounded cache, whatever the tile size.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import ExportConfig, GridConfig
from miso_mapper.export.aggregate import block_average, block_mode
from miso_mapper.export.cog import hidden_temp, publish_cog, staging
from miso_mapper.export.layers import LAYER_SPECS
from miso_mapper.export.source import StoreReader, TileWindow


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to export one tile (plain picklable values).

    ``outputs`` maps layer name -> final COG path; empty means "only compute the overview pieces" (a tile
    exported by an earlier run that the mosaic and overviews still cover).
    """

    store: str
    grid: GridConfig
    export: ExportConfig
    tile: TileWindow
    factor: int
    tags: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class TileResult:
    """What one tile job did: files written (final paths), seconds, and its statewide-overview pieces.

    ``coarse`` maps layer name -> uint8 (y, x) or (class, y, x) at the overview resolution, covering the tile.
    """

    tile: TileWindow
    files: list[Path]
    seconds: float
    coarse: dict[str, np.ndarray]


def block_size(grid: GridConfig, factor: int) -> int:
    """Edge of the read blocks, px: whole Zarr chunks and whole overview cells."""
    return math.lcm(grid.zarr_chunk, factor)


def run_tile_job(job: TileJob) -> TileResult:
    """Export one tile (see the module doc). Raises :class:`~miso_mapper.errors.MisoError` on bad data."""
    t0 = time.perf_counter()
    reader = StoreReader(Path(job.store), job.grid)
    t, f = job.tile, job.factor
    b = min(block_size(job.grid, f), t.size)
    n = t.size // f
    coarse = {
        "permafrost_probability": np.empty((n, n), np.uint8),
        "taxonomy_probability": np.empty((len(SOIL_ORDERS), n, n), np.uint8),
        "taxonomy_class": np.empty((n, n), np.uint8),
    }
    crs = CRS.from_user_input(job.grid.crs)
    transform = reader.transform(t.row, t.col)
    stage = {name: hidden_temp(Path(path), "staging.tif") for name, path in job.outputs.items()}
    files: list[Path] = []
    try:
        with rasterio.Env(GDAL_CACHEMAX=job.export.gdal_cache_mb):
            with contextlib.ExitStack() as stack:
                dsts = {
                    spec.name: stack.enter_context(staging(
                        stage[spec.name], spec, crs, transform, t.size, t.size,
                        job.tags | {"MISO_LAYER": spec.name, "MISO_TILE": t.tile}))
                    for spec in LAYER_SPECS if spec.name in stage
                }
                for r in range(0, t.size, b):
                    for c in range(0, t.size, b):
                        rows, cols = slice(t.row + r, t.row + r + b), slice(t.col + c, t.col + c + b)
                        for spec in LAYER_SPECS:
                            block = reader.read(spec.zarr_name, rows, cols)
                            if spec.name in dsts:
                                dsts[spec.name].write(block if block.ndim == 3 else block[None],
                                                      window=Window(c, r, b, b))
                            small = (block_mode(block, f, len(SOIL_ORDERS)) if spec.categorical
                                     else block_average(block, f))
                            coarse[spec.name][..., r // f:(r + b) // f, c // f:(c + b) // f] = small
            for spec in LAYER_SPECS:
                if spec.name in stage:
                    files += publish_cog(stage[spec.name], Path(job.outputs[spec.name]), spec, job.export)
    finally:
        for path in stage.values():
            path.unlink(missing_ok=True)
    return TileResult(t, files, time.perf_counter() - t0, coarse)
