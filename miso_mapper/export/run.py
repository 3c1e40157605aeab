"""``export_workflow``: the whole export of a map store into the products folder (see :mod:`miso_mapper.export`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from miso_mapper import __version__
from miso_mapper.config import Workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.export.cog import hidden_temp, publish_cog, staging
from miso_mapper.export.layers import LAYER_SPECS, LAYERS
from miso_mapper.export.mosaic import MosaicSource, vrt_xml
from miso_mapper.export.source import StoreReader, TileWindow
from miso_mapper.export.stac import Footprint, write_collection
from miso_mapper.export.tiles import TileJob, TileResult, run_tile_job

#: ``progress(stage, done, total)``: called as tiles finish and as the shared products are written.
Progress = Callable[[str, int, int], None]


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


def products_dir(workflow: Workflow) -> Path:
    """The products folder: ``export.directory`` or ``output.directory/products``."""
    return workflow.export.directory or workflow.output.directory / "products"


def cog_path(products: Path, layer: str, tile: str) -> Path:
    """Where a tile's COG of ``layer`` goes."""
    return products / "cogs" / layer / f"{tile}.tif"


def overview_factor(workflow: Workflow) -> int:
    """Grid pixels per statewide-overview pixel (edge); :class:`ConfigError` unless whole and dividing a tile."""
    res, want, tile = workflow.grid.resolution, workflow.export.overview_resolution, workflow.grid.tile_size
    factor = round(want / res)
    if factor < 1 or abs(factor * res - want) > 1e-9 * want or tile % factor:
        raise ConfigError(f"export.overview_resolution {want:g} m must be a whole multiple of grid.resolution "
                          f"({res:g} m) that divides a tile ({tile} px)")
    return factor


def _planned(products: Path, tiles: list[str]) -> list[Path]:
    """Every product path this export writes (the STAC folder by its collection file)."""
    paths = []
    for spec in LAYER_SPECS:
        aux = [".aux.xml"] if spec.categorical else []
        for tile in tiles:
            cog = cog_path(products, spec.name, tile)
            paths += [cog] + [cog.with_name(cog.name + s) for s in aux]
        overview = products / "overview" / f"{spec.name}.tif"
        paths += [products / "mosaic" / f"{spec.name}.vrt", overview]
        paths += [overview.with_name(overview.name + s) for s in aux]
    return paths + [products / "stac" / "collection.json"]


def _reused(reader: StoreReader, products: Path, candidates: list[TileWindow]) -> list[TileWindow]:
    """Tiles whose three COGs an earlier export of this very store left in ``products``."""
    out = []
    for tile in candidates:
        paths = [cog_path(products, spec.name, tile.tile) for spec in LAYER_SPECS]
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


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = hidden_temp(path, "part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap the folder ``tmp`` in at ``final`` (an existing ``final`` is removed only after the swap)."""
    old = hidden_temp(final, "old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def export_workflow(workflow: Workflow, client: Any = None, tiles: list[str] | None = None, overwrite: bool = False,
                    progress: Progress | None = None) -> ExportResult:
    """Export the workflow's ``maps.zarr`` into COGs per tile and layer, VRT mosaics, overviews and STAC.

    ``client``: a :class:`distributed.Client` to export tiles in parallel on (None: in this process).
    ``tiles``: tile ids to export (default: every tile of the store that holds data). ``overwrite``: replace
    existing products; without it an export that would overwrite any product raises :class:`MisoError`
    before writing anything. Raises :class:`MisoError` for a missing or unreadable store, unknown tiles, or
    a product that fails COG validation.
    """
    t0 = time.perf_counter()
    report = progress or (lambda stage, done, total: None)
    products = products_dir(workflow)
    reader = StoreReader(workflow.output.store, workflow.grid)
    factor = overview_factor(workflow)
    in_store = reader.tiles()
    if tiles:
        known = {t.tile for t in in_store}
        for tile_id in tiles:
            reader.grid.parse_tile_id(tile_id)
            if tile_id not in known:
                raise MisoError(f"tile {tile_id} is not in the store {reader.path} (it has {', '.join(sorted(known))})")
        in_store = [t for t in in_store if t.tile in set(tiles)]
    todo = [t for t in in_store if reader.has_data(t)]
    empty = [t.tile for t in in_store if t not in todo]
    if not todo:
        raise MisoError(f"no tile of {reader.path} holds data{' among ' + ', '.join(tiles) if tiles else ''}: "
                        "nothing to export (has `miso-mapper run` written any chunk?)")
    existing = [p for p in _planned(products, [t.tile for t in todo]) if p.exists()]
    if existing and not overwrite:
        raise MisoError(f"{products} already holds export products ({len(existing)} of the files this export "
                        f"writes, e.g. {existing[0].relative_to(products)}); pass --overwrite to replace them")
    reused = _reused(reader, products, [t for t in reader.tiles() if t not in todo])
    covered = sorted(todo + reused, key=lambda t: (t.row, t.col))

    for spec in LAYER_SPECS:
        (products / "cogs" / spec.name).mkdir(parents=True, exist_ok=True)
    (products / "mosaic").mkdir(exist_ok=True)
    (products / "overview").mkdir(exist_ok=True)
    attrs = reader.attrs
    tags = {"MISO_STORE_UUID": reader.uuid, "MISO_MAP_CONFIG_HASH": str(attrs.get("map_config_hash", "")),
            "MISO_IMAGERY_DATE_RANGE": str(attrs.get("imagery_date_range", "")),
            "MISO_EXPORT_VERSION": __version__}
    jobs = [TileJob(str(reader.path), workflow.grid, workflow.export, t, factor, tags,
                    {spec.name: str(cog_path(products, spec.name, t.tile)) for spec in LAYER_SPECS})
            for t in todo]
    jobs += [TileJob(str(reader.path), workflow.grid, workflow.export, t, factor, tags) for t in reused]

    crs = CRS.from_user_input(workflow.grid.crs)
    row0, col0 = min(t.row for t in covered), min(t.col for t in covered)
    height = max(t.row + t.size for t in covered) - row0
    width = max(t.col + t.size for t in covered) - col0
    mosaic_transform = reader.transform(row0, col0)
    ov_transform = mosaic_transform * rasterio.Affine.scale(factor)
    ov_shape = (height // factor, width // factor)
    overview_paths = {spec.name: products / "overview" / f"{spec.name}.tif" for spec in LAYER_SPECS}
    ov_stage = {name: hidden_temp(path, "staging.tif") for name, path in overview_paths.items()}
    files: list[Path] = []
    seconds: dict[str, float] = {}
    try:
        with rasterio.Env(GDAL_CACHEMAX=workflow.export.gdal_cache_mb), contextlib.ExitStack() as stack:
            ov = {spec.name: stack.enter_context(staging(ov_stage[spec.name], spec, crs, ov_transform, *ov_shape,
                                                         tags | {"MISO_LAYER": spec.name, "MISO_TILE": "overview"}))
                  for spec in LAYER_SPECS}
            report("tiles", 0, len(jobs))
            for n, result in enumerate(_results(jobs, client), start=1):
                t = result.tile
                if result.files:
                    seconds[t.tile] = result.seconds
                    files += result.files
                for name, piece in result.coarse.items():
                    window = Window((t.col - col0) // factor, (t.row - row0) // factor, piece.shape[-1],
                                    piece.shape[-2])
                    ov[name].write(piece if piece.ndim == 3 else piece[None], window=window)
                report("tiles", n, len(jobs))
        report("overviews", 0, len(LAYER_SPECS))
        for n, spec in enumerate(LAYER_SPECS, start=1):
            with rasterio.Env(GDAL_CACHEMAX=workflow.export.gdal_cache_mb):
                files += publish_cog(ov_stage[spec.name], overview_paths[spec.name], spec, workflow.export)
            report("overviews", n, len(LAYER_SPECS))
    finally:
        for path in ov_stage.values():
            path.unlink(missing_ok=True)

    mosaics = {}
    for spec in LAYER_SPECS:
        path = products / "mosaic" / f"{spec.name}.vrt"
        sources = [MosaicSource(cog_path(products, spec.name, t.tile), t.row - row0, t.col - col0, t.size)
                   for t in covered]
        _write_text_atomic(path, vrt_xml(spec, crs, mosaic_transform, height, width, sources, path,
                                         workflow.export.blocksize))
        mosaics[spec.name] = path
        files.append(path)

    stac_final = products / "stac"
    stac_tmp = products / f".stac-tmp-{uuid.uuid4().hex[:12]}"  # no dot suffix: pystac would take it for a file
    try:
        footprints = {
            t.tile: (Footprint(crs, reader.transform(t.row, t.col), (t.size, t.size)),
                     {name: cog_path(products, name, t.tile) for name in LAYERS})
            for t in covered
        }
        write_collection(stac_tmp, f"miso-{workflow.name}", attrs, workflow.grid.resolution, footprints, mosaics,
                         {name: (Footprint(crs, ov_transform, ov_shape), path)
                          for name, path in overview_paths.items()}, stac_final)
        _replace_dir(stac_tmp, stac_final)
    finally:
        shutil.rmtree(stac_tmp, ignore_errors=True)
    files += sorted(stac_final.rglob("*.json"))
    return ExportResult(
        products=products, tiles=[t.tile for t in todo], files=files, tile_seconds=seconds,
        seconds=time.perf_counter() - t0, mosaics=mosaics, overviews=overview_paths,
        stac=stac_final / "collection.json", reused_tiles=[t.tile for t in reused], empty_tiles=empty,
    )
