"""The demo world as a catalog on disk: a self-contained static STAC catalog or one stac-geoparquet file.

The world keeps its items under ``stac/`` with asset hrefs relative to the world folder (what
:mod:`miso_mapper.world.serve` needs). :func:`export_catalog` writes them the way a catalog staged on a shared
filesystem looks: asset hrefs relative to the file that holds the item, so the folder can be moved together
with the imagery and read by ``imagery.catalog`` or served by ``miso-mapper serve``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal

from miso_mapper.errors import MisoError
from miso_mapper.world.generate import load_manifest

CatalogFormat = Literal["json", "geoparquet"]


def _relative(href: str, world_dir: Path, holder_dir: Path) -> str:
    return os.path.relpath(world_dir / href, holder_dir) if "://" not in href else href


def export_catalog(world_dir: Path, out: Path, fmt: CatalogFormat = "json", overwrite: bool = False) -> Path:
    """Write the items of the world at ``world_dir`` into the folder ``out`` and return the catalog file.

    ``json``: ``out/catalog.json`` (self-contained static catalog, pystac layout: one folder per collection,
    one per item). ``geoparquet``: ``out/items.parquet`` (every item, collections named by their ``collection``
    field). Asset hrefs are relative to the item's file. :class:`MisoError` if ``out`` exists and is not empty
    (unless ``overwrite``) or ``world_dir`` is not a world.
    """
    world_dir, out = Path(world_dir).resolve(), Path(out).resolve()
    manifest = load_manifest(world_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MisoError(f"{out} is not empty (use --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    items = [json.loads((world_dir / rel).read_text()) for rel in manifest.stac_items]
    if fmt == "geoparquet":
        import rustac

        for item in items:
            item["links"] = []
            for asset in item["assets"].values():
                asset["href"] = _relative(asset["href"], world_dir, out)
        rustac.write_sync(str(out / "items.parquet"), items)
        return out / "items.parquet"
    return _static_catalog(world_dir, out, items, [json.loads((world_dir / rel).read_text())
                                                   for rel in manifest.stac_collections])


def _static_catalog(world_dir: Path, out: Path, items: list[dict], collections: list[dict]) -> Path:
    import pystac

    root = pystac.Catalog("miso-demo-world", "The miso-mapper demo world's imagery and covariates.")
    by_id = {}
    for c in collections:
        collection = pystac.Collection.from_dict(c | {"links": []})
        root.add_child(collection)
        by_id[collection.id] = collection
    for d in items:
        for asset in d["assets"].values():
            asset["href"] = str(world_dir / asset["href"])  # absolute until the layout is known
        by_id[d["collection"]].add_item(pystac.Item.from_dict(d | {"links": []}))
    root.normalize_hrefs(str(out))
    for item in root.get_items(recursive=True):
        item.make_asset_hrefs_relative()
    root.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog.json"
