"""Finding the Sentinel-2 items for a chunk with pystac-client (or in a catalog on disk), reproducibly.

The chunk's footprint (its halo grid, in the grid CRS) is transformed to lon/lat and split at the
antimeridian, so Aleutian chunks west of 180° get their items. Each yearly date window is searched on its
own; items above the cloud ceiling are dropped, then the least cloudy ``max_items`` are kept (ties broken by
date then id, so the choice is deterministic). The result is plain item dicts: the run manifest stores them,
so workers never query the API and a rerun reads exactly the same scenes. With ``imagery.catalog`` the same
searches run locally on the catalog's items (:mod:`miso_mapper.imagery.catalog`), with no server.

Credentials and signed-URL tokens never leave this module in text: use :func:`redact_href` when showing an
href.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import shapely
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.base import BaseGeometry

from miso_mapper.config import ImageryConfig
from miso_mapper.errors import MisoError


def redact_href(href: str) -> str:
    """``href`` without its query string, fragment or user info (where signed-URL tokens and keys live)."""
    parts = urlsplit(href)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) if parts.scheme else parts.path


def lonlat_footprint(geobox: GeoBox) -> BaseGeometry:
    """The outline of ``geobox`` in EPSG:4326, split into parts at the antimeridian when it crosses it.

    Longitudes of every part lie in [-180, 180].
    """
    x0, y0, x1, y1 = geobox.boundingbox
    ring = shapely.segmentize(box(x0, y0, x1, y1), max_segment_length=max(x1 - x0, y1 - y0) / 16)
    to_lonlat = Transformer.from_crs(geobox.crs.to_wkt(), "EPSG:4326", always_xy=True)
    xy = np.asarray(ring.exterior.coords)
    lon, lat = to_lonlat.transform(xy[:, 0], xy[:, 1])
    lon = np.unwrap(np.asarray(lon), period=360.0)  # continuous across the antimeridian
    footprint = Polygon(np.column_stack([lon, lat]))
    parts = []
    for shift in (-360.0, 0.0, 360.0):
        window = box(-180.0 + shift, -90.0, 180.0 + shift, 90.0)
        piece = footprint.intersection(window)
        if not piece.is_empty and piece.area > 0:
            parts.append(shapely.transform(piece, lambda c, s=shift: c - [s, 0.0]))
    polys = [p for part in parts for p in getattr(part, "geoms", [part])]
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def stac_error(exc: BaseException, url: str) -> MisoError:
    """A one-line :class:`MisoError` for a failed STAC request: unreachable server or refused request."""
    text = " ".join(str(exc).split())
    unreachable = isinstance(exc, OSError) or any(
        marker in text for marker in ("Max retries exceeded", "Failed to establish", "timed out", "Connection")
    )
    if unreachable:
        return MisoError(f"STAC API {redact_href(url)} is unreachable (is the server running? {text[:120]})")
    return MisoError(f"STAC API {redact_href(url)} refused the request: {text[:200]}")


def _datetime_range(first: dt.date, last: dt.date) -> str:
    return f"{first.isoformat()}T00:00:00Z/{last.isoformat()}T23:59:59Z"


def search_items(geobox: GeoBox, config: ImageryConfig, client: Any | None = None) -> list[dict[str, Any]]:
    """Item dicts (STAC JSON) to composite for the area of ``geobox``, at most ``config.max_items``.

    From ``config.catalog`` (searched locally) when set; else from the STAC API: ``client`` is an open
    :class:`pystac_client.Client` (opened from ``config.stac_url`` when None). Raises :class:`MisoError`
    naming the API (without credentials) when it cannot be reached, or the catalog when it cannot be read.
    """
    if config.catalog is not None and client is None:
        found = _catalog_search(geobox, config)
    else:
        found = _api_search(geobox, config, client)
    return select_items(list(found.values()), config.max_cloud_cover, config.max_items)


def _catalog_search(geobox: GeoBox, config: ImageryConfig) -> dict[str, dict[str, Any]]:
    from miso_mapper.imagery.catalog import open_catalog, require_collection

    catalog = open_catalog(config.catalog)  # type: ignore[arg-type]
    require_collection(catalog, config.collection)
    footprint = lonlat_footprint(geobox)
    found: dict[str, dict[str, Any]] = {}
    for first, last in config.date_windows():
        start = dt.datetime.combine(first, dt.time(0, 0, 0))
        end = dt.datetime.combine(last, dt.time(23, 59, 59))
        for item in catalog.search([config.collection], footprint, start, end):
            found.setdefault(item["id"], item)
    return found


def _api_search(geobox: GeoBox, config: ImageryConfig, client: Any | None) -> dict[str, dict[str, Any]]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    if config.stac_url is None and client is None:
        raise MisoError("imagery.stac_url is not set")
    url = redact_href(config.stac_url or "")
    try:
        client = client or Client.open(config.stac_url)
        footprint = lonlat_footprint(geobox)
        found: dict[str, dict[str, Any]] = {}
        for first, last in config.date_windows():
            search = client.search(
                collections=[config.collection],
                intersects=mapping(footprint),
                datetime=_datetime_range(first, last),
                max_items=None,
            )
            for item in search.items_as_dicts():
                found.setdefault(item["id"], item)
    except (APIError, OSError) as exc:
        raise stac_error(exc, url) from None
    return found


def select_items(items: list[dict[str, Any]], max_cloud_cover: float, max_items: int) -> list[dict[str, Any]]:
    """Items at or under the cloud ceiling, least cloudy first (then oldest, then id), at most ``max_items``.

    An item without ``eo:cloud_cover`` is treated as 100 % cloudy: it is used only when the ceiling is 100.
    """

    def cloud(item: dict[str, Any]) -> float:
        value = item.get("properties", {}).get("eo:cloud_cover")
        return 100.0 if value is None else float(value)

    kept = [item for item in items if cloud(item) <= max_cloud_cover]
    kept.sort(key=lambda item: (cloud(item), item["properties"].get("datetime") or "", item["id"]))
    return kept[:max_items]


def cached_search(
    geobox: GeoBox, config: ImageryConfig, record: Path, client: Any | None = None
) -> list[dict[str, Any]]:
    """:func:`search_items`, recorded in the JSON file ``record``; a second call reads the record instead.

    The record makes a run reproducible (the same scenes on every retry) and keeps workers off the API.
    It is written atomically, so a killed search leaves no partial record.
    """
    if record.exists():
        try:
            return json.loads(record.read_text())["items"]
        except (ValueError, KeyError) as exc:
            raise MisoError(f"search record {record} is corrupt ({exc}); delete it to search again") from None
    items = search_items(geobox, config, client)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = record.with_suffix(record.suffix + ".tmp")
    source = {"catalog": str(config.catalog)} if config.catalog is not None else {
        "stac_url": redact_href(config.stac_url or "")}
    tmp.write_text(json.dumps(source | {"items": items}))
    os.replace(tmp, record)
    return items
