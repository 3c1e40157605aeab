"""The 10 terrain and climate covariates on a chunk's grid, from a folder of COGs/VRTs or a STAC collection.

Each layer is read only over the window it needs (range requests for remote COGs) and reprojected onto the
target grid: bilinear for the continuous layers, and for aspect a bilinear of its sine and cosine, because
averaging 359° and 1° must give 0°, not 180°. Where several sources cover the grid (tiled STAC items), the
first one with data wins.

No data is NaN in the returned float32 stack; ``valid`` is True where every layer has data.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from miso_mapper.bands import COVARIATE_FILE_STEMS, COVARIATES
from miso_mapper.config import CovariatesConfig
from miso_mapper.errors import MisoError
from miso_mapper.imagery.load import GDAL_CLOUD_ENV
from miso_mapper.imagery.search import redact_href

CIRCULAR_LAYERS = frozenset({"aspct_4"})
#: Layers that can be computed from elevation when a source lacks them (``derive_missing``).
DERIVABLE_LAYERS = frozenset({"aspct_4", "sl_4", "tpi_4"})


def _check_missing(missing: list[str], where: str, derive_missing: bool) -> None:
    fatal = [m for m in missing if not (derive_missing and m in DERIVABLE_LAYERS)]
    if fatal:
        raise MisoError(f"{where} lacks covariate(s) {', '.join(fatal)}")


def folder_sources(folder: Path, derive_missing: bool = False) -> dict[str, list[str]]:
    """Layer name -> [path] for a folder holding ``{stem}.tif`` (or ``.tiff``/``.vrt``) per covariate.

    With ``derive_missing``, slope, aspect and TPI may be absent (they are then derived from elevation).
    """
    if not folder.is_dir():
        raise MisoError(f"covariate folder not found: {folder}")
    sources: dict[str, list[str]] = {}
    missing = []
    for name in COVARIATES:
        stem = COVARIATE_FILE_STEMS[name]
        found = [folder / f"{s}{ext}" for s in dict.fromkeys((stem, name)) for ext in (".tif", ".tiff", ".vrt")]
        hits = [str(p) for p in found if p.exists()]
        if hits:
            sources[name] = hits[:1]
        else:
            missing.append(name)
    _check_missing(missing, f"covariate folder {folder}", derive_missing)
    return sources


def stac_sources(items: list[dict[str, Any]], derive_missing: bool = False) -> dict[str, list[str]]:
    """Layer name -> hrefs from covariate STAC items whose asset keys are layer names or file stems."""
    sources: dict[str, list[str]] = {name: [] for name in COVARIATES}
    for item in items:
        assets = item.get("assets", {})
        for name in COVARIATES:
            for key in dict.fromkeys((name, COVARIATE_FILE_STEMS[name])):
                if key in assets:
                    sources[name].append(assets[key]["href"])
                    break
    missing = [name for name, hrefs in sources.items() if not hrefs]
    _check_missing(missing, "the covariate STAC items", derive_missing)
    return {name: hrefs for name, hrefs in sources.items() if hrefs}


# reproject() of in-memory arrays warns that "the dataset" has no geotransform although both transforms are
# passed explicitly; the warning is noise (and catch_warnings is not thread-safe for the chip read-ahead)
warnings.filterwarnings("ignore", message="Dataset has no geotransform", module="rasterio.warp")


def _read_onto(href: str, geobox: GeoBox, circular: bool) -> np.ndarray:
    """One source reprojected onto ``geobox``: float32 (y, x), NaN where the source has no data."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds

    dst = np.full(tuple(geobox.shape), np.nan, np.float32)
    with rasterio.Env(**GDAL_CLOUD_ENV), rasterio.open(href) as src:
        if src.count != 1:
            raise MisoError(f"covariate {redact_href(href)} has {src.count} bands; one is expected")
        left, bottom, right, top = transform_bounds(geobox.crs.to_wkt(), src.crs, *geobox.boundingbox)
        exact = from_bounds(left, bottom, right, top, src.transform)
        col0, row0 = math.floor(exact.col_off) - 2, math.floor(exact.row_off) - 2
        col1 = math.ceil(exact.col_off + exact.width) + 2
        row1 = math.ceil(exact.row_off + exact.height) + 2
        window = Window(col0, row0, col1 - col0, row1 - row0)
        full = Window(0, 0, src.width, src.height)
        try:
            window = window.intersection(full)
        except Exception:  # rasterio raises WindowError when they do not overlap
            return dst
        data = src.read(1, window=window, masked=True).astype(np.float32).filled(np.nan)
        data[data < -1e30] = np.nan  # the reference's -3e38 fill, undeclared in some files
        src_transform = src.window_transform(window)
        planes = [np.sin(np.radians(data)), np.cos(np.radians(data))] if circular else [data]
        out = []
        for plane in planes:
            target = np.full(tuple(geobox.shape), np.nan, np.float32)
            reproject(
                plane, target, src_transform=src_transform, src_crs=src.crs, src_nodata=np.nan,
                dst_transform=geobox.affine, dst_crs=geobox.crs.to_wkt(), dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
            out.append(target)
    if circular:
        return (np.degrees(np.arctan2(out[0], out[1])) % 360.0).astype(np.float32)
    return out[0]


def load_covariates(sources: dict[str, list[str]], geobox: GeoBox) -> xr.Dataset:
    """The covariate stack on ``geobox``.

    Returns a Dataset with ``covariates`` (band, y, x) float32 in physical units (NaN = no data) in
    :data:`~miso_mapper.bands.COVARIATES` order and ``valid`` (y, x) bool, georeferenced by a ``spatial_ref``
    coordinate (``ds.odc.geobox == geobox``). Raises :class:`MisoError` naming the href of a source that
    cannot be read.
    """
    import rasterio

    stack = np.full((len(COVARIATES), *geobox.shape), np.nan, np.float32)
    derived = _derived_layers(sources, geobox)
    for i, name in enumerate(COVARIATES):
        if name in derived:
            stack[i] = derived[name]
            continue
        for href in sources[name]:
            try:
                layer = _read_onto(href, geobox, circular=name in CIRCULAR_LAYERS)
            except rasterio.errors.RasterioError as exc:
                raise MisoError(f"cannot read covariate {name} from {redact_href(href)}: {exc}") from None
            fill = np.isnan(stack[i])
            stack[i][fill] = layer[fill]
    return xr.Dataset(
        {"covariates": (("band", "y", "x"), stack), "valid": (("y", "x"), np.isfinite(stack).all(axis=0))},
        coords={"band": list(COVARIATES), **xr_coords(geobox, crs_coord_name="spatial_ref")},
    )


def _derived_layers(sources: dict[str, list[str]], geobox: GeoBox, radius_px: int = 4) -> dict[str, np.ndarray]:
    """Derivable layers absent from ``sources``, computed from elevation read with a margin."""
    wanted = [name for name in DERIVABLE_LAYERS if name not in sources]
    if not wanted:
        return {}
    pad = radius_px + 1
    padded = geobox.pad(pad)
    elevation = np.full(tuple(padded.shape), np.nan, np.float32)
    for href in sources["elevation"]:
        layer = _read_onto(href, padded, circular=False)
        fill = np.isnan(elevation)
        elevation[fill] = layer[fill]
    terrain = derive_terrain(elevation, abs(geobox.resolution.x), radius_px)
    return {name: terrain[name][pad:-pad, pad:-pad] for name in wanted}


def derive_terrain(elevation: np.ndarray, resolution: float, radius_px: int = 4) -> dict[str, np.ndarray]:
    """Slope (degrees), aspect (degrees clockwise from north, downslope direction) and TPI (m) from a DEM.

    ``elevation`` is (y, x) metres on a north-up grid of ``resolution`` metres. TPI is elevation minus the
    mean of the square neighbourhood of ``radius_px`` pixels. Used when a covariate source lacks them.
    """
    from scipy.ndimage import uniform_filter

    dz_dy, dz_dx = np.gradient(elevation.astype(np.float64), resolution)
    dz_dnorth = -dz_dy  # rows grow southwards
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dnorth)))
    aspect = (np.degrees(np.arctan2(-dz_dx, -dz_dnorth)) % 360.0)
    tpi = elevation - uniform_filter(elevation.astype(np.float64), size=2 * radius_px + 1, mode="nearest")
    return {"sl_4": slope.astype(np.float32), "aspct_4": aspect.astype(np.float32), "tpi_4": tpi.astype(np.float32)}


def find_covariate_sources(
    config: CovariatesConfig, geobox: GeoBox, default_stac_url: str | None = None,
    default_catalog: Path | None = None,
) -> dict[str, list[str]]:
    """Layer name -> hrefs for ``geobox`` from the workflow's covariate settings (folder, STAC API or catalog
    on disk). ``source: stac`` uses the section's own ``catalog`` or ``stac_url``, else imagery's
    (``default_catalog`` / ``default_stac_url``)."""
    if config.source == "folder":
        if config.path is None:
            raise MisoError("covariates.path is required when covariates.source is 'folder'")
        return folder_sources(config.path, config.derive_missing)
    from miso_mapper.imagery.search import lonlat_footprint

    own = config.catalog is not None or config.stac_url is not None
    catalog = config.catalog if own else default_catalog
    if catalog is not None:
        from miso_mapper.imagery.catalog import open_catalog, require_collection

        local = open_catalog(catalog)
        require_collection(local, str(config.collection))
        items = local.search([str(config.collection)], lonlat_footprint(geobox))
    else:
        items = _api_items(config, geobox, config.stac_url or default_stac_url)
    if not items:
        raise MisoError(f"no covariate items in collection {config.collection!r} over this area")
    return stac_sources(items, config.derive_missing)


def _api_items(config: CovariatesConfig, geobox: GeoBox, url: str | None) -> list[dict[str, Any]]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    from miso_mapper.imagery.search import lonlat_footprint, stac_error

    if not url:
        raise MisoError("covariates.stac_url or .catalog (or imagery's) is required when covariates.source is "
                        "'stac'")
    try:
        client = Client.open(url)
        search = client.search(collections=[config.collection], intersects=lonlat_footprint(geobox).__geo_interface__)
        return list(search.items_as_dicts())
    except (APIError, OSError) as exc:
        raise stac_error(exc, url) from None
