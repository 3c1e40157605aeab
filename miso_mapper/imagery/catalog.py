"""Catalogs on disk: STAC items from a static catalog, an ItemCollection file or stac-geoparquet, searched
locally with no server (``imagery.catalog`` / ``covariates.catalog``).

What :func:`open_catalog` accepts, by path:

* a static catalog or collection (``catalog.json`` / ``collection.json`` whose ``item`` and ``child`` links
  lead to the items), read with pystac;
* an ItemCollection (a GeoJSON ``FeatureCollection`` of items) or a single item, in one ``.json`` file;
* a stac-geoparquet file (``.parquet`` / ``.geoparquet``), read with rustac (whole, in memory: its own search
  needs DuckDB's spatial extension, which is downloaded on first use and so fails offline);
* a folder holding one of ``catalog.json``, ``collection.json`` or exactly one ``*.parquet`` file.

Relative asset hrefs resolve against the file of their item (the ItemCollection or geoparquet file for those
formats) and are returned as absolute local paths; URLs and absolute paths are kept as they are.

:meth:`LocalCatalog.search` answers like the STAC API searches of :mod:`miso_mapper.imagery.search`, with the
semantics rustac's API has (see :mod:`miso_mapper.world.serve`): a collection list, a footprint that must
intersect the item geometry, and a datetime interval (inclusive) matched by an item's ``datetime``, or, where
that is null, by overlap with its ``start_datetime``/``end_datetime``. Cloud ceiling and the least-cloudy cap
stay with :func:`~miso_mapper.imagery.search.select_items`, as for an API.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from miso_mapper.errors import MisoError

FOLDER_ENTRIES = ("catalog.json", "collection.json")
PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def catalog_file(path: Path) -> Path:
    """The catalog file ``path`` names: ``path`` itself, or for a folder its ``catalog.json``,
    ``collection.json`` or only ``*.parquet``. :class:`MisoError` naming the path when there is none."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise MisoError(f"catalog {path} not found")
    for name in FOLDER_ENTRIES:
        if (path / name).is_file():
            return path / name
    parquets = sorted(p for p in path.iterdir() if p.suffix in PARQUET_SUFFIXES)
    if len(parquets) == 1:
        return parquets[0]
    raise MisoError(f"catalog folder {path} has no catalog.json, collection.json or single *.parquet file")


def absolute_href(href: str, base: Path) -> str:
    """``href`` unchanged when it is a URL or an absolute path; else the absolute path of it relative to the
    folder ``base``."""
    if "://" in href or os.path.isabs(href):
        return href
    return os.path.normpath(base / href)


def _with_absolute_assets(item: dict[str, Any], base: Path) -> dict[str, Any]:
    for asset in item.get("assets", {}).values():
        if isinstance(asset.get("href"), str):
            asset["href"] = absolute_href(asset["href"], base)
    return item


def _pystac_items(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Items (absolute asset hrefs) and collections (dicts, links dropped) of a static catalog file."""
    import pystac

    root = pystac.read_file(str(path))
    if not isinstance(root, pystac.Catalog):
        raise MisoError(f"catalog {path} is a STAC {type(root).__name__}, not a catalog or collection")
    items = []
    for item in root.get_items(recursive=True):
        item.make_asset_hrefs_absolute()
        d = item.to_dict(include_self_link=False, transform_hrefs=False)
        if d.get("collection") is None and item.get_collection() is not None:
            d["collection"] = item.get_collection().id  # type: ignore[union-attr]
        items.append(d)
    collections = [c.to_dict(include_self_link=False, transform_hrefs=False) | {"links": []}
                   for c in ([root] if isinstance(root, pystac.Collection) else [])
                   + list(root.get_all_collections())]
    return items, collections


def read_catalog(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, collections) of the catalog at ``path`` (see the module doc): item dicts with absolute local
    asset hrefs, and the collection documents it holds (none for ItemCollections and geoparquet).

    Raises :class:`MisoError` in one line for a missing file, a file that is not JSON/geoparquet, or not STAC.
    """
    import pystac

    file = catalog_file(path)
    if file.suffix in PARQUET_SUFFIXES:
        return _geoparquet_items(file), []
    try:
        doc = json.loads(file.read_text())
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "FeatureCollection":
            return [_with_absolute_assets(f, file.parent) for f in doc.get("features", [])], []
        if kind == "Feature":
            return [_with_absolute_assets(doc, file.parent)], []
        if kind in ("Catalog", "Collection"):
            return _pystac_items(file)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, pystac.STACError) as exc:
        raise _unreadable(file, exc) from None
    raise MisoError(f"catalog {file} is not STAC (a catalog, collection, ItemCollection, item or geoparquet)")


def _unreadable(file: Path, exc: BaseException) -> MisoError:
    return MisoError(f"catalog {file} cannot be read as STAC: {' '.join(str(exc).split())[:200]}")


def _geoparquet_items(file: Path) -> list[dict[str, Any]]:
    """Items (absolute asset hrefs) of a stac-geoparquet file, read whole with rustac (imported here: JSON
    catalogs do without it)."""
    try:
        import rustac
    except ImportError:
        raise MisoError(f"rustac is not installed (pip install rustac); it reads the catalog {file}") from None
    try:
        features = rustac.read_sync(str(file)).get("features", [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, rustac.RustacError) as exc:
        raise _unreadable(file, exc) from None
    return [_with_absolute_assets(f, file.parent) for f in features]


def _instant(text: str | None) -> np.datetime64:
    if not text:
        return np.datetime64("NaT")
    t = dt.datetime.fromisoformat(text)
    t = t.astimezone(dt.UTC).replace(tzinfo=None) if t.tzinfo else t
    return np.datetime64(t, "us")


@dataclass(frozen=True)
class LocalCatalog:
    """The items of a catalog on disk, indexed for :meth:`search`. ``items`` keep the catalog's order."""

    path: Path
    items: list[dict[str, Any]]
    collections: list[dict[str, Any]]

    @functools.cached_property
    def _index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        geoms = np.array([shapely.geometry.shape(i["geometry"]) if i.get("geometry") else None
                          for i in self.items], dtype=object)
        colls = np.array([i.get("collection") for i in self.items], dtype=object)
        props = [i.get("properties", {}) for i in self.items]
        start = np.array([_instant(p.get("datetime") or p.get("start_datetime")) for p in props])
        end = np.array([_instant(p.get("datetime") or p.get("end_datetime")) for p in props])
        return geoms, colls, start.astype("datetime64[us]"), end.astype("datetime64[us]")

    def collection_ids(self) -> set[str]:
        """Every collection id an item names."""
        return {i["collection"] for i in self.items if i.get("collection")}

    def search(self, collections: list[str], intersects: BaseGeometry | None = None,
               first: dt.datetime | None = None, last: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Items of ``collections`` whose geometry intersects ``intersects`` (lon/lat) and whose time
        (instant, or start/end interval) meets [``first``, ``last``] (naive = UTC; None: unbounded).
        Deep copies, in catalog order."""
        geoms, colls, start, end = self._index
        keep = np.isin(colls, collections)
        if intersects is not None:
            keep &= np.array([g is not None for g in geoms], dtype=bool)
            if keep.any():
                keep[keep] = shapely.intersects(np.array(list(geoms[keep]), dtype=object), intersects)
        if first is not None:
            keep &= ~(end < np.datetime64(first.replace(tzinfo=None), "us"))  # NaT compares False: kept
        if last is not None:
            keep &= ~(start > np.datetime64(last.replace(tzinfo=None), "us"))
        return [json.loads(json.dumps(self.items[k])) for k in np.flatnonzero(keep)]


@functools.lru_cache(maxsize=8)
def _open(file: str, mtime_ns: int, size: int) -> LocalCatalog:
    items, collections = read_catalog(Path(file))
    return LocalCatalog(Path(file), items, collections)


def open_catalog(path: Path) -> LocalCatalog:
    """The catalog at ``path`` (see the module doc), read once per process while its file is unchanged.
    :class:`MisoError` (one line naming the path) when it is missing or not STAC."""
    file = catalog_file(Path(path)).resolve()
    st = file.stat()
    return _open(str(file), st.st_mtime_ns, st.st_size)


def require_collection(catalog: LocalCatalog, collection: str) -> None:
    """:class:`MisoError` naming the catalog and the collections it has when no item is of ``collection``."""
    have = catalog.collection_ids()
    if collection not in have:
        known = ", ".join(sorted(have)) or "none"
        raise MisoError(f"catalog {catalog.path} has no items of collection {collection!r} (it has: {known})")
