"""Create the synthetic demo world on disk: ``create_world(out_dir, spec)``.

Layout of a world directory (all rasters COGs, all paths relative to it)::

    world.json                                   WorldManifest (this module)
    truth/permafrost.tif, truth/soil_order.tif   uint8 EPSG:3338 10 m, 255 = no data; soil order = index
                                                 into bands.SOIL_ORDERS
    covariates/<bands.COVARIATE_FILE_STEMS[name]>.tif
                                                 float32 EPSG:3338 10 m, nodata NaN (no pixel is missing)
    scenes/<item id>/B02.tif ... B12.tif, SCL.tif
                                                 uint16 reflectance DN (nodata 0) / uint8 SCL (0 = no data),
                                                 EPSG:32606, 10 m (B02-B04, B08) or 20 m (others, SCL)
    points/points.geojson                        field points, EPSG:4326 (+ x_3338, y_3338 properties)
    vectors/permafrost_zones.geojson, vectors/mlra.geojson
                                                 polygons, EPSG:3338 (named "crs" member)
    stac/sentinel-2-l2a/collection.json, stac/sentinel-2-l2a/items/<id>.json
    stac/covariates/collection.json, stac/covariates/items/covariates-demo.json

Covariates, truth, points and polygons cover the region plus ``spec.margin_m`` (points: the region only);
the Sentinel-2 tiles jointly cover the same extent.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from pydantic import BaseModel, ConfigDict
from shapely.geometry import box, mapping

from miso_mapper.bands import COVARIATE_FILE_STEMS, COVARIATES, S2_BAND_GSD, S2_BAND_IDS, S2_BANDS, SOIL_ORDERS
from miso_mapper.errors import MisoError
from miso_mapper.world import stac
from miso_mapper.world.cog import write_cog
from miso_mapper.world.fields import simulate
from miso_mapper.world.geometry import (
    ALBERS_EPSG,
    UTM_EPSG,
    S2Tile,
    acquisition_dates,
    footprint_mask,
    grid_from_bounds,
    make_sampler,
    reproject_polygon,
    sim_grid,
    tile_layout,
    window_of,
    world_grid,
)
from miso_mapper.world.spec import WorldSpec
from miso_mapper.world.spectra import (
    PERSISTENT_CLOUD_RADIUS_M,
    SUN_AZIMUTH_DEG,
    SUN_ZENITH_DEG,
    base_reflectance,
    observe,
)
from miso_mapper.world.vectors import mlra_features, sample_points, zone_features

#: Reflectance sensor noise (std, reflectance units) added on the UTM grids.
SENSOR_NOISE = 0.0004
MANIFEST_NAME = "world.json"
#: Mantissa bits kept in covariate rasters (relative precision ~5e-4, e.g. 0.25 m of elevation at 500 m).
COVARIATE_MANTISSA_BITS = 11

ProgressFn = Callable[[str, float], None]


class WorldManifest(BaseModel):
    """What :func:`create_world` wrote (also saved as ``world.json``). Paths are relative to the world dir."""

    model_config = ConfigDict(extra="forbid")

    spec: WorldSpec
    crs: str  # of covariates, truth and polygons: "EPSG:3338"
    region_bbox: tuple[float, float, float, float]  # EPSG:3338 m
    world_bbox: tuple[float, float, float, float]  # EPSG:3338 m, region + margin
    shape: tuple[int, int]  # (rows, cols) of the EPSG:3338 rasters
    truth: dict[str, str]  # "permafrost" / "soil_order" -> path
    covariates: dict[str, str]  # covariate name -> path
    tiles: list[str]  # MGRS ids of the Sentinel-2 tiles
    items: list[str]  # Sentinel-2 item ids
    dates: list[str]  # ISO acquisition times (UTC)
    points: str
    permafrost_zones: str
    mlra: str
    stac_collections: list[str]  # paths of collection.json files
    stac_items: list[str]  # paths of item json files (all collections)
    persistent_cloud_xy: tuple[float, float]  # EPSG:3338 m, centre of the cloud seen on every date
    persistent_cloud_radius_m: float
    soil_order_fractions: dict[str, float]  # in the region, per bands.SOIL_ORDERS name
    permafrost_fraction: float  # in the region
    files: dict[str, int]  # every file written (except world.json) -> size in bytes


def quantize_float32(a: np.ndarray, mantissa_bits: int = COVARIATE_MANTISSA_BITS) -> np.ndarray:
    """``a`` (float32, any shape) rounded to ``mantissa_bits`` of mantissa (relative precision
    2**-mantissa_bits), so DEFLATE compresses it well. NaN stays NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    drop = 23 - mantissa_bits
    r = ((u + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF >> drop) << drop)).view(np.float32)
    return np.where(np.isfinite(a), r, a).astype(np.float32)


def _dump_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")


def _to_lonlat(poly_3338_or_utm: Any, epsg: int) -> tuple[dict[str, Any], list[float]]:
    ll = reproject_polygon(poly_3338_or_utm, epsg, 4326)
    geom = mapping(ll)
    geom = {"type": geom["type"], "coordinates": [[[round(x, 7), round(y, 7)] for x, y in ring]
                                                  for ring in geom["coordinates"]]}
    return geom, [round(v, 7) for v in ll.bounds]


def _item_id(platform: str, tile: S2Tile, when: Any) -> str:
    return f"S2{platform[-1].upper()}_{tile.utm_zone}{tile.latitude_band}{tile.grid_square}_" \
           f"{when:%Y%m%d}_0_L2A"


def create_world(out_dir: Path, spec: WorldSpec | None = None, progress: ProgressFn | None = None,
                 overwrite: bool = False) -> WorldManifest:
    """Generate the demo world described by ``spec`` into ``out_dir`` and return its manifest.

    The world is built in a temporary sibling directory and renamed into place at the end, so a failure
    leaves ``out_dir`` untouched. Raises :class:`MisoError` if ``out_dir`` exists and is not empty, unless
    ``overwrite``. ``progress(message, fraction 0-1)`` is called as work proceeds. The same spec always
    gives byte-identical files. See the module docstring for the layout, CRS and dtypes.
    """
    spec = spec or WorldSpec()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MisoError(f"{out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise MisoError(f"{out_dir} exists and is not empty (add --overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        manifest = _build(tmp, spec, progress or (lambda msg, frac: None))
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _build(root: Path, spec: WorldSpec, progress: ProgressFn) -> WorldManifest:
    t0 = time.perf_counter()
    seeds = np.random.SeedSequence(spec.seed).spawn(6)
    rng_fields, rng_dates, rng_base, rng_obs, rng_noise, rng_points = (np.random.default_rng(s) for s in seeds)
    sgrid, wgrid = sim_grid(spec), world_grid(spec)
    rgrid = grid_from_bounds(ALBERS_EPSG, spec.region_bbox, spec.resolution)
    progress("simulating terrain, climate and truth", 0.0)
    lat = simulate(sgrid, spec.region_bbox, rng_fields)
    win = window_of(sgrid, wgrid)
    rwin = window_of(sgrid, rgrid)
    jobs: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        def submit(rel: str, data: np.ndarray, grid: GeoBox, nodata: Any, resampling: str) -> None:
            jobs.append(pool.submit(write_cog, root / rel, np.ascontiguousarray(data), grid, nodata, resampling))

        truth = {"permafrost": "truth/permafrost.tif", "soil_order": "truth/soil_order.tif"}
        submit(truth["permafrost"], lat.permafrost[win], wgrid, 255, "mode")
        submit(truth["soil_order"], lat.soil_order[win], wgrid, 255, "mode")
        covs = {}
        for name in COVARIATES:
            covs[name] = f"covariates/{COVARIATE_FILE_STEMS[name]}.tif"
            submit(covs[name], quantize_float32(lat.covariates[name][win]), wgrid, float("nan"), "average")

        progress("simulating Sentinel-2 scenes", 0.15)
        tiles = tile_layout(spec)
        dates = acquisition_dates(spec, rng_dates)
        base, water = base_reflectance(lat, rng_base)
        cx0, cy0, cx1, cy1 = spec.region_bbox
        cloud_xy = (cx0 + 0.5 * (cx1 - cx0), cy0 + 0.72 * (cy1 - cy0))
        item_ids, item_paths = [], []
        masks = {(t.mgrs, g): footprint_mask(t, getattr(t, f"grid{g}")) for t in tiles for g in (10, 20)}
        samplers = {(t.mgrs, g): make_sampler(sgrid, getattr(t, f"grid{g}"), bilinear=True,
                                              src_shift_px=0.0 if g == 10 else -0.5)
                    for t in tiles for g in (10, 20)}
        nearest20 = {t.mgrs: make_sampler(sgrid, t.grid20, bilinear=False) for t in tiles}
        for di, when in enumerate(dates):
            refl, scl, _ = observe(base, water, lat, rng_obs, cloud_xy)
            # 2x2 block means (centred on pixel corners) stand in for 'average' resampling to 20 m
            refl20 = {bi: 0.25 * (refl[bi, :-1, :-1] + refl[bi, 1:, :-1] + refl[bi, :-1, 1:] + refl[bi, 1:, 1:])
                      for bi, key in enumerate(S2_BANDS) if S2_BAND_GSD[key] == 20}
            platform = "sentinel-2a" if rng_obs.uniform() < 0.5 else "sentinel-2b"
            offset_dn = 1000 if spec.boa_offset_from_year is not None and when.year >= spec.boa_offset_from_year \
                else 0
            baseline = "04.00" if offset_dn else "03.01"
            for tile in tiles:
                iid = _item_id(platform, tile, when)
                grids = {10: tile.grid10, 20: tile.grid20}
                scl_t = nearest20[tile.mgrs](scl)
                m20 = masks[(tile.mgrs, 20)]
                scl_t[~m20] = 0
                submit(f"scenes/{iid}/SCL.tif", scl_t, tile.grid20, 0, "nearest")
                for bi, key in enumerate(S2_BANDS):
                    gsd = S2_BAND_GSD[key]
                    g = grids[gsd]
                    r = samplers[(tile.mgrs, gsd)](refl[bi] if gsd == 10 else np.pad(refl20[bi], ((0, 1), (0, 1))))
                    r += SENSOR_NOISE * rng_noise.standard_normal(r.shape, dtype=np.float32)
                    dn = np.clip(np.rint(r * 10000.0 + offset_dn), 1, 32767).astype(np.uint16)
                    dn[~masks[(tile.mgrs, gsd)]] = 0
                    submit(f"scenes/{iid}/{S2_BAND_IDS[key]}.tif", dn, g, 0, "average")
                valid = scl_t[m20]
                cc = 100.0 * float(np.isin(valid, (8, 9, 10)).mean())
                nd = 100.0 * float((~m20).mean())
                geom, bbox = _to_lonlat(tile.footprint, UTM_EPSG)
                item = stac.s2_item(iid, when, platform, tile.mgrs, UTM_EPSG, grids, geom, bbox, cc, nd,
                                    baseline, offset_dn, SUN_AZIMUTH_DEG, SUN_ZENITH_DEG)
                rel = f"stac/{stac.S2_COLLECTION}/items/{iid}.json"
                _dump_json(root / rel, item)
                item_ids.append(iid)
                item_paths.append(rel)
            progress(f"scenes of {when:%Y-%m-%d}", 0.15 + 0.75 * (di + 1) / len(dates))
            del refl, scl, refl20

        wgeom, wbbox = _to_lonlat(box(*spec.world_bbox), ALBERS_EPSG)
        _dump_json(root / f"stac/{stac.S2_COLLECTION}/collection.json",
                   stac.s2_collection(wbbox, dates[0], dates[-1]))
        _dump_json(root / f"stac/{stac.COVARIATE_COLLECTION}/collection.json", stac.covariate_collection(wbbox))
        cov_item = f"stac/{stac.COVARIATE_COLLECTION}/items/{stac.COVARIATE_ITEM}.json"
        _dump_json(root / cov_item, stac.covariate_item(wgrid, wgeom, wbbox))

        progress("points and polygons", 0.92)
        _dump_json(root / "points/points.geojson",
                   sample_points(lat, rgrid, spec.n_points, spec.unlabelled_fraction, spec.label_noise,
                                 rng_points))
        _dump_json(root / "vectors/permafrost_zones.geojson", zone_features(lat, spec.world_bbox))
        _dump_json(root / "vectors/mlra.geojson", mlra_features(lat, spec.world_bbox))
        for j in jobs:
            j.result()

    counts = np.bincount(lat.soil_order[rwin].ravel(), minlength=len(SOIL_ORDERS)) / lat.soil_order[rwin].size
    files = {p.relative_to(root).as_posix(): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
    manifest = WorldManifest(
        spec=spec, crs=f"EPSG:{ALBERS_EPSG}", region_bbox=spec.region_bbox, world_bbox=spec.world_bbox,
        shape=tuple(wgrid.shape), truth=truth, covariates=covs, tiles=[t.mgrs for t in tiles], items=item_ids,
        dates=[d.isoformat() for d in dates], points="points/points.geojson",
        permafrost_zones="vectors/permafrost_zones.geojson", mlra="vectors/mlra.geojson",
        stac_collections=[f"stac/{stac.S2_COLLECTION}/collection.json",
                          f"stac/{stac.COVARIATE_COLLECTION}/collection.json"],
        stac_items=item_paths + [cov_item], persistent_cloud_xy=cloud_xy,
        persistent_cloud_radius_m=PERSISTENT_CLOUD_RADIUS_M,
        soil_order_fractions={n: round(float(c), 5) for n, c in zip(SOIL_ORDERS, counts, strict=True)},
        permafrost_fraction=round(float(lat.permafrost[rwin].mean()), 5), files=files,
    )
    (root / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=1) + "\n")
    progress(f"done in {time.perf_counter() - t0:.1f} s", 1.0)
    return manifest


def load_manifest(world_dir: Path) -> WorldManifest:
    """Read ``world.json`` of a world directory; :class:`MisoError` if it is missing or invalid."""
    path = Path(world_dir) / MANIFEST_NAME
    try:
        return WorldManifest.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise MisoError(f"{world_dir} is not a demo world (no {MANIFEST_NAME})") from None
    except ValueError as e:
        raise MisoError(f"{path} is not a valid world manifest: {str(e).splitlines()[0]}") from None

