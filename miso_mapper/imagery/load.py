"""Reading STAC items onto a chunk's grid: stackstac (default) or odc-stac behind one function.

Traps handled here, each of which otherwise corrupts data silently:

* stackstac 0.5.1 reads the CRS only from ``proj:epsg``; items that carry only ``proj:code`` (STAC projection
  v2, e.g. Earth Search today) are given ``proj:epsg`` before stacking.
* ``snap_bounds=False`` or stackstac widens the bounds to whole pixels of its own and the grid shifts.
* stackstac's default ``errors_as_nodata`` turns an HTTP 404 into silent no data; here every read error
  fails the chunk, naming the asset href (with any token stripped).
* ``rescale=False`` and uint16 with fill value ``np.uint16(0)`` (the L2A no-data value; a plain ``0`` fails
  stackstac's cast check under numpy 2): stackstac's default would apply raster:bands scale/offset and return
  float64, doubling memory and hiding the baseline offset, which :mod:`miso_mapper.imagery.profiles` handles
  per item instead.
* one band per asset: each asset key maps to exactly one band; multi-band assets are refused.

GDAL is configured for cloud reads (:data:`GDAL_CLOUD_ENV`): retries with backoff on transient HTTP errors
(429/5xx), no directory listing on open, a bounded block cache.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from miso_mapper.errors import MisoError
from miso_mapper.imagery.search import redact_href

#: GDAL settings for every read (stackstac and odc-stac alike).
GDAL_CLOUD_ENV: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.vrt,.jp2",
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",  # seconds; GDAL doubles it after each try (exponential backoff)
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_CACHEMAX": 64,  # MB of block cache per process (rasterio wants an int here)
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 2**20),
}

Loader = Literal["stackstac", "odc"]


def with_proj_epsg(item: dict[str, Any]) -> dict[str, Any]:
    """A copy of an item dict where every ``proj:code`` of the form ``EPSG:n`` also has ``proj:epsg: n``."""
    item = copy.deepcopy(item)
    for holder in [item.get("properties", {}), *item.get("assets", {}).values()]:
        code = holder.get("proj:code")
        if holder.get("proj:epsg") is None and isinstance(code, str):
            m = re.fullmatch(r"EPSG:(\d+)", code.strip(), flags=re.IGNORECASE)
            if m:
                holder["proj:epsg"] = int(m[1])
    return item


def _check_single_band(items: list[dict[str, Any]], assets: list[str]) -> None:
    for item in items:
        for key in assets:
            asset = item.get("assets", {}).get(key)
            if asset is None:
                raise MisoError(f"item {item['id']} has no asset {key!r}")
            bands = asset.get("raster:bands") or asset.get("eo:bands") or [None]
            if len(bands) > 1:
                raise MisoError(
                    f"asset {key!r} of item {item['id']} has {len(bands)} bands; one band per asset is required"
                )


def stack_items(
    items: list[dict[str, Any]],
    assets: list[str],
    geobox: GeoBox,
    loader: Loader = "stackstac",
) -> xr.DataArray:
    """A lazy (time, band, y, x) uint16 DataArray of ``assets`` of ``items`` on ``geobox``, 0 = no data.

    ``time`` follows the items' datetimes (ascending); ``band`` is the asset keys in the order given.
    Pixels outside an item's footprint are 0. Nearest-neighbour resampling (20 m bands are repeated, never
    smoothed, so SCL codes stay codes). Dask chunks are (1, 1, y, x): one asset over the whole grid.

    Pitfall: read each chunk whole (:func:`read_item`). GDAL warps with an approximate transformer fitted to
    the window it is asked for, so reading the same grid in row blocks picks a different nearest source pixel
    for a few pixels per thousand; whole-grid reads make values independent of how memory is budgeted.
    """
    if not items:
        raise MisoError("no items to load")
    _check_single_band(items, assets)
    # one order for both loaders: by acquisition time, ties (tiles of one pass) by id
    items = sorted((with_proj_epsg(item) for item in items), key=lambda it: (_datetime(it), it["id"]))
    rows = geobox.shape.y
    if loader == "stackstac":
        return _stackstac(items, assets, geobox, rows)
    if loader == "odc":
        return _odc(items, assets, geobox, rows)
    raise MisoError(f"unknown imagery loader {loader!r} (stackstac or odc)")


def _stackstac(items: list[dict[str, Any]], assets: list[str], geobox: GeoBox, rows: int) -> xr.DataArray:
    import stackstac

    epsg = geobox.crs.epsg
    if epsg is None:
        raise MisoError(f"stackstac needs an EPSG CRS, got {geobox.crs}")
    res = abs(geobox.resolution.x)
    env = stackstac.LayeredEnv(always=GDAL_CLOUD_ENV)
    arr = stackstac.stack(
        items,
        assets=assets,
        epsg=epsg,
        resolution=res,
        bounds=tuple(geobox.boundingbox),
        snap_bounds=False,
        resampling=_nearest(),
        chunksize=(1, 1, rows, geobox.shape.x),
        dtype=np.dtype("uint16"),
        fill_value=np.uint16(0),  # a Python int fails stackstac's can_cast check under numpy 2
        rescale=False,
        sortby_date="asc",
        xy_coords="center",
        properties=False,
        band_coords=False,
        gdal_env=env,
        errors_as_nodata=(),
    )
    if arr.shape[-2:] != tuple(geobox.shape):
        raise MisoError(f"stackstac returned {arr.shape[-2:]} pixels for a {tuple(geobox.shape)} grid")
    return arr.assign_coords(band=assets, id=("time", arr["id"].values))


def _odc(items: list[dict[str, Any]], assets: list[str], geobox: GeoBox, rows: int) -> xr.DataArray:
    import pystac
    from odc.stac import load

    pystac_items = [pystac.Item.from_dict(item) for item in items]  # already in stack order
    import rasterio

    with rasterio.Env(**GDAL_CLOUD_ENV):
        ds = load(
            pystac_items,
            bands=assets,
            geobox=geobox,
            groupby="id",
            resampling="nearest",
            dtype="uint16",
            chunks={"y": rows, "x": geobox.shape.x},
            fail_on_error=True,
            preserve_original_order=True,
        )
    arr = ds[assets].to_array("band").transpose("time", "band", "y", "x")
    return arr.assign_coords(band=assets, id=("time", [it.id for it in pystac_items]))


def _datetime(item: dict[str, Any]) -> str:
    props = item.get("properties", {})
    return str(props.get("datetime") or props.get("start_datetime") or "")


def _nearest() -> Any:
    from rasterio.enums import Resampling

    return Resampling.nearest


def read_item(arr: xr.DataArray, index: int) -> np.ndarray:
    """All bands of item ``index`` of a lazy stack, (band, y, x) uint16; read errors become :class:`MisoError`.

    The error names the asset href, with any token stripped.
    """
    return read_all(arr.isel(time=slice(index, index + 1)))[0]


def read_all(arr: xr.DataArray) -> np.ndarray:
    """Compute a whole lazy stack (time, band, y, x); read errors become :class:`MisoError` naming the href."""
    import rasterio

    try:
        with rasterio.Env(**GDAL_CLOUD_ENV):
            return arr.compute(scheduler="threads").values
    except MisoError:
        raise
    except Exception as exc:  # rasterio/odc raise many types; all mean an unreadable input
        raise MisoError(f"cannot read imagery: {_describe_read_error(exc)}") from None


_URL_RE = re.compile(r"(?:/vsicurl/)?(https?://[^\s'\"]+|/[^\s'\":]+\.(?:tif|tiff|vrt|TIF))")


def _describe_read_error(exc: BaseException) -> str:
    """A one-line reason with every href in it shown without its query string."""
    text = " ".join(str(exc).split())
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc:
        text = f"{text} ({' '.join(str(cause).split())})"
    if "Read failed" in text or "TIFFReadEncodedTile" in text or "IReadBlock" in text:
        text += " - the file is truncated or corrupt"
    return _URL_RE.sub(lambda m: redact_href(m.group(1)), text)[:500]
