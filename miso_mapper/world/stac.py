"""STAC JSON of the demo world (pure functions returning dicts; no I/O).

Sentinel-2 items follow Earth Search v1 (``sentinel-2-l2a``): asset keys red, green, ..., scl; ids like
``S2B_6WVS_20210712_0_L2A``; proj (both ``proj:code`` and the older ``proj:epsg``), eo, raster, mgrs, grid
and view extensions. Asset hrefs are relative to the world directory (e.g. ``scenes/<id>/B04.tif``);
:mod:`miso_mapper.world.serve` makes them absolute.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from odc.geo.geobox import GeoBox

from miso_mapper.bands import COVARIATE_FILE_STEMS, COVARIATES, S2_BAND_GSD, S2_BAND_IDS, S2_BANDS

S2_COLLECTION = "sentinel-2-l2a"
COVARIATE_COLLECTION = "covariates"
COVARIATE_ITEM = "covariates-demo"
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
EXT = {
    "eo": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "proj": "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "raster": "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "mgrs": "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "grid": "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "view": "https://stac-extensions.github.io/view/v1.0.0/schema.json",
}
#: (centre wavelength um, full width half max um) per Earth Search asset key.
WAVELENGTHS = {
    "blue": (0.490, 0.098), "green": (0.560, 0.045), "red": (0.665, 0.038), "rededge1": (0.704, 0.019),
    "rededge2": (0.740, 0.018), "rededge3": (0.783, 0.028), "nir": (0.842, 0.145), "swir16": (1.610, 0.143),
    "swir22": (2.190, 0.242),
}
#: Order of the assets in an item (Earth Search order), 10 m bands first.
ASSET_ORDER = ("blue", "green", "red", "nir", "rededge1", "rededge2", "rededge3", "swir16", "swir22", "scl")


def _common_name(key: str) -> str | None:
    return {"swir16": "swir16", "swir22": "swir22", "rededge1": "rededge", "rededge2": "rededge",
            "rededge3": "rededge"}.get(key, key)


def band_file(key: str) -> str:
    """File name of the asset ``key`` in a scene directory (ESA band id: 'B04.tif', ..., 'SCL.tif')."""
    return "SCL.tif" if key == "scl" else f"{S2_BAND_IDS[key]}.tif"


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def s2_item(item_id: str, when: dt.datetime, platform: str, tile_mgrs: str, epsg: int, grids: dict[int, GeoBox],
            geometry: dict[str, Any], bbox: list[float], cloud_cover: float, nodata_pct: float,
            baseline: str, dn_offset: int, sun_azimuth: float, sun_zenith: float) -> dict[str, Any]:
    """A Sentinel-2 L2A STAC item dict. ``grids`` maps GSD (10, 20) to the asset grid; ``geometry``/``bbox``
    are the data footprint in EPSG:4326 lon/lat; ``dn_offset`` is 1000 for baseline >= 04.00 else 0
    (reflectance = DN * 0.0001 - dn_offset / 10000, i.e. raster:bands offset -0.1 or 0)."""
    assets: dict[str, Any] = {}
    for key in ASSET_ORDER:
        gsd = S2_BAND_GSD[key]
        g = grids[gsd]
        asset: dict[str, Any] = {
            "href": f"scenes/{item_id}/{band_file(key)}",
            "type": COG_TYPE,
            "gsd": gsd,
            "proj:shape": list(g.shape),
            "proj:transform": [g.affine.a, g.affine.b, g.affine.c, g.affine.d, g.affine.e, g.affine.f],
        }
        if key == "scl":
            asset["title"] = "Scene classification map (SCL)"
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint8", "spatial_resolution": gsd}]
            asset["roles"] = ["data"]
        else:
            cw, fwhm = WAVELENGTHS[key]
            asset["title"] = f"{key} ({S2_BAND_IDS[key]}) - {gsd}m"
            asset["eo:bands"] = [{"name": S2_BAND_IDS[key], "common_name": _common_name(key),
                                  "center_wavelength": cw, "full_width_half_max": fwhm}]
            asset["raster:bands"] = [{"nodata": 0, "data_type": "uint16", "bits_per_sample": 15,
                                      "spatial_resolution": gsd, "scale": 0.0001,
                                      "offset": -dn_offset / 10000.0}]
            asset["roles"] = ["data", "reflectance"]
        assets[key] = asset
    zone, band, square = int(tile_mgrs[:2]), tile_mgrs[2], tile_mgrs[3:]
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": sorted(EXT.values()),
        "id": item_id,
        "collection": S2_COLLECTION,
        "bbox": bbox,
        "geometry": geometry,
        "properties": {
            "datetime": _iso(when),
            "platform": platform,
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": round(cloud_cover, 4),
            "proj:epsg": epsg,
            "proj:code": f"EPSG:{epsg}",
            "mgrs:utm_zone": zone,
            "mgrs:latitude_band": band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{tile_mgrs}",
            "view:sun_azimuth": sun_azimuth,
            "view:sun_elevation": 90.0 - sun_zenith,
            "s2:product_type": "S2MSI2A",
            "s2:processing_baseline": baseline,
            "s2:nodata_pixel_percentage": round(nodata_pct, 4),
            "earthsearch:boa_offset_applied": False,
        },
        "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"}],
        "assets": assets,
    }


def s2_collection(bbox: list[float], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """The ``sentinel-2-l2a`` collection dict covering ``bbox`` (lon/lat) and [start, end]."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": sorted(EXT.values()),
        "id": S2_COLLECTION,
        "title": "Sentinel-2 Level-2A (synthetic demo world)",
        "description": "Synthetic Sentinel-2 L2A-like scenes of the miso-mapper demo world, laid out like "
                       "Earth Search v1 (element84) items: single-band COGs per asset, UTM tile grids.",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[_iso(start), _iso(end)]]}},
        "summaries": {
            "platform": ["sentinel-2a", "sentinel-2b"], "constellation": ["sentinel-2"],
            "eo:bands": [{"name": S2_BAND_IDS[k], "common_name": _common_name(k),
                          "center_wavelength": WAVELENGTHS[k][0]} for k in S2_BANDS],
        },
        "links": [],
    }


def covariate_item(grid: GeoBox, geometry: dict[str, Any], bbox: list[float]) -> dict[str, Any]:
    """The single item of the ``covariates`` collection: one float32 EPSG:3338 COG asset per covariate layer
    (keys :data:`miso_mapper.bands.COVARIATES`, nodata NaN), valid for the 1991-2020 normals period."""
    t = grid.affine
    assets = {
        name: {
            "href": f"covariates/{COVARIATE_FILE_STEMS[name]}.tif",
            "type": COG_TYPE,
            "title": name,
            "roles": ["data"],
            "raster:bands": [{"nodata": "nan", "data_type": "float32", "spatial_resolution": grid.resolution.x}],
        }
        for name in COVARIATES
    }
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [EXT["proj"], EXT["raster"]],
        "id": COVARIATE_ITEM,
        "collection": COVARIATE_COLLECTION,
        "bbox": bbox,
        "geometry": geometry,
        "properties": {
            "datetime": None,
            "start_datetime": "1991-01-01T00:00:00Z",
            "end_datetime": "2020-12-31T23:59:59Z",
            "proj:epsg": grid.crs.epsg,
            "proj:code": f"EPSG:{grid.crs.epsg}",
            "proj:shape": list(grid.shape),
            "proj:transform": [t.a, t.b, t.c, t.d, t.e, t.f],
        },
        "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"}],
        "assets": assets,
    }


def covariate_collection(bbox: list[float]) -> dict[str, Any]:
    """The ``covariates`` collection dict (10 m EPSG:3338 terrain derivatives and climate normals)."""
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [EXT["proj"], EXT["raster"]],
        "id": COVARIATE_COLLECTION,
        "title": "MISO covariates (synthetic demo world)",
        "description": "IfSAR DEM derivatives and climate normals on the EPSG:3338 10 m grid.",
        "license": "proprietary",
        "extent": {"spatial": {"bbox": [bbox]},
                   "temporal": {"interval": [["1991-01-01T00:00:00Z", "2020-12-31T23:59:59Z"]]}},
        "links": [],
    }
