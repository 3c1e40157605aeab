"""The tile COGs: one job per tile, run on Dask workers (or in process), streaming the store into a COG per layer.

A job reads its tile in blocks of ``lcm(zarr_chunk, factor)`` px (whole Zarr chunks, whole overview cells),
row-major; each block is written as a window into the layers' staging GeoTIFFs and reduced to the tile's
piece of the statewide overviews (``factor`` = overview resolution / grid resolution). Peak memory is one
block of the layers (10 bytes per pixel) plus GDAL's bounded cache, whatever the tile size. A tile's
COGs are georeferenced by the tile's GeoBox, a slice of the store's own grid. Each stored array is read once
per block; ``permafrost_class`` is classified from the block of ``permafrost_probability`` at the store's
decision threshold (:meth:`~miso_mapper.export.layers.LayerSpec.from_stored`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import ExportConfig, GridConfig
from miso_mapper.export.aggregate import block_average, block_mode
from miso_mapper.export.atomic import hidden_temp
from miso_mapper.export.cog import publish_cog, staging
from miso_mapper.export.layers import LAYER_SPECS, layer_tags
from miso_mapper.export.source import StoreReader

#: ``progress(stage, done, total)``: called as tiles finish and as the shared products are written.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TileJob:
    """Everything a worker needs to export one tile (picklable values).

    ``geobox`` is the tile's grid (a slice of the store's); ``outputs`` maps layer name -> final COG path;
    empty means "only compute the overview pieces" (a tile exported by an earlier run that the mosaic and
    overviews still cover).
    """

    store: str
    grid: GridConfig
    export: ExportConfig
    tile: str
    geobox: GeoBox
    factor: int
    tags: dict[str, str]
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class TileResult:
    """What one tile job did: files written (final paths), seconds, and its statewide-overview pieces.

    ``coarse`` maps layer name -> uint8 (y, x) or (class, y, x) on ``geobox.zoom_out(factor)``.
    """

    tile: str
    geobox: GeoBox
    files: list[Path]
    seconds: float
    coarse: dict[str, np.ndarray]


def block_size(grid: GridConfig, factor: int) -> int:
    """Edge of the read blocks, px: whole Zarr chunks and whole overview cells."""
    return math.lcm(grid.zarr_chunk, factor)


def _empty_pieces(geobox: GeoBox, factor: int) -> dict[str, np.ndarray]:
    h, w = geobox.height // factor, geobox.width // factor
    return {spec.name: np.empty((len(SOIL_ORDERS), h, w) if spec.count > 1 else (h, w), np.uint8)
            for spec in LAYER_SPECS}


def run_tile_job(job: TileJob) -> TileResult:
    """Export one tile (see the module doc). Raises :class:`~miso_mapper.errors.MisoError` on bad data."""
    t0 = time.perf_counter()
    reader = StoreReader(Path(job.store), job.grid)
    stage = {name: hidden_temp(Path(path), "staging.tif") for name, path in job.outputs.items()}
    files: list[Path] = []
    try:
        with rasterio.Env(GDAL_CACHEMAX=job.export.gdal_cache_mb):
            with contextlib.ExitStack() as stack:
                tags = {spec.name: job.tags | {"MISO_LAYER": spec.name, "MISO_TILE": job.tile}
                        | layer_tags(spec, reader.decision_threshold) for spec in LAYER_SPECS}
                dsts = {spec.name: stack.enter_context(staging(stage[spec.name], spec, job.geobox, tags[spec.name]))
                        for spec in LAYER_SPECS if spec.name in stage}
                coarse = _stream(reader, job, dsts)
            for spec in LAYER_SPECS:
                if spec.name in stage:
                    files += publish_cog(stage[spec.name], Path(job.outputs[spec.name]), spec, job.export)
    finally:
        for path in stage.values():
            path.unlink(missing_ok=True)
    return TileResult(job.tile, job.geobox, files, time.perf_counter() - t0, coarse)


def _stream(reader: StoreReader, job: TileJob, dsts: dict[str, Any]) -> dict[str, np.ndarray]:
    """Copy the tile block by block into the open staging datasets ``dsts`` (layer -> dataset, may be empty);
    returns its overview pieces."""
    f = job.factor
    b = min(block_size(job.grid, f), *job.geobox.shape)
    coarse = _empty_pieces(job.geobox, f)
    for r in range(0, job.geobox.height, b):
        for c in range(0, job.geobox.width, b):
            rows, cols = reader.slices(job.geobox[r:r + b, c:c + b])
            stored = {name: reader.read(name, rows, cols) for name in {spec.zarr_name for spec in LAYER_SPECS}}
            for spec in LAYER_SPECS:
                block = spec.from_stored(stored[spec.zarr_name], reader.decision_threshold)
                if spec.name in dsts:
                    dsts[spec.name].write(block if block.ndim == 3 else block[None], window=Window(c, r, b, b))
                small = block_mode(block, f, len(spec.classes)) if spec.categorical else block_average(block, f)
                coarse[spec.name][..., r // f:(r + b) // f, c // f:(c + b) // f] = small
    return coarse


def _results(jobs: list[TileJob], client: Any) -> Iterator[TileResult]:
    """Run the jobs serially, or with ``client.map`` on a Dask cluster, yielding results as they finish."""
    if client is None:
        for job in jobs:
            yield run_tile_job(job)
        return
    from distributed import as_completed

    done = as_completed(client.map(run_tile_job, jobs, pure=False))
    try:
        for future in done:
            result = future.result()
            future.release()  # its overview pieces are copied out; free the worker's memory now
            yield result
    except BaseException:
        client.cancel(list(done.futures))
        raise


def export_tile_cogs(jobs: list[TileJob], client: Any, on_result: Callable[[TileResult], None],
                     progress: Progress) -> tuple[list[Path], dict[str, float]]:
    """Run every tile job (``client``: a Dask client, or None for in process), handing each result to
    ``on_result`` as it finishes; returns the COG files written and worker seconds per exported tile."""
    files: list[Path] = []
    seconds: dict[str, float] = {}
    for job in jobs:
        for path in job.outputs.values():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    progress("tiles", 0, len(jobs))
    for n, result in enumerate(_results(jobs, client), start=1):
        if result.files:
            seconds[result.tile] = result.seconds
            files += result.files
        on_result(result)
        progress("tiles", n, len(jobs))
    return files, seconds
