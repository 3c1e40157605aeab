"""The static STAC collection of the products (pystac), saved self-contained with relative hrefs.

Layout under the products folder: ``stac/collection.json`` and ``stac/<tile>/<tile>.json``. Each item is one
grid tile with one asset per layer COG (``permafrost_probability``, ``taxonomy_class``,
``taxonomy_probability``, ``permafrost_class``); the collection's assets are the VRT mosaics and the statewide
overview COGs.

Every footprint comes from the raster's GeoBox (a slice of the store's grid, or its zoom-out for overviews):
item ``geometry``/``bbox`` are its geographic extent (EPSG:4326, edges densified), the projection extension its
CRS, shape, affine and bounding box. Extensions: projection (``proj:code``, ``proj:shape``, ``proj:transform``,
``proj:bbox`` in the grid CRS), raster (``raster:bands`` with nodata 255, uint8, scale/offset 0.004/0 for
probabilities, spatial resolution), classification (the 7 soil orders, or no permafrost / permafrost, with
names and colour hints) on class assets; ``permafrost_class`` assets name the ``miso:decision_threshold``
they were classified at; file (``file:size`` of every COG). Item properties carry the
imagery date range (``start_datetime``/``end_datetime``) and the store's provenance (``miso:*``: checkpoint
sha256 per model role, model kind, map config hash, store uuid, software version, decision threshold). Nothing
here depends on the time of export, so the same store exports to the same bytes.

The collection also has ``item_assets`` (each layer's asset as items carry it, without href and per-tile
fields), ``summaries`` (layers, soil-order classes, each continuous layer's physical value range, the
Sentinel-2 platforms/instrument of the inputs, gsd, CRS) and ``license: other`` with a ``license`` link to
``terms.txt`` written beside ``collection.json``: the project has no licence yet, so the terms file says so
and names the provenance (store uuid, software version).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pystac
import shapely
import shapely.geometry
from odc.geo.geobox import GeoBox
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension

from miso_mapper.errors import MisoError
from miso_mapper.export.atomic import replace_dir
from miso_mapper.export.layers import LAYER_SPECS, SOIL_ORDER_CLASSES, LayerSpec
from miso_mapper.pipeline.extra_layers import CAP
from miso_mapper.pipeline.store import DEFAULT_THRESHOLD, NODATA, PROB_SCALE

VRT_MEDIA_TYPE = "application/x-gdal-vrt+xml"
#: The license file written beside ``collection.json`` (the project has no licence: ``license: other``).
TERMS_FILE = "terms.txt"
#: The imagery every map is made from (summaries): Sentinel-2 L2A, MultiSpectral Instrument.
INPUT_PLATFORMS = {"constellation": ["sentinel-2"], "platform": ["sentinel-2a", "sentinel-2b"], "instruments": ["msi"]}
#: Points per side of a footprint projected to EPSG:4326 (the edges of a projected box are curves).
FOOTPRINT_POINTS = 4


def geometry_4326(geobox: GeoBox) -> dict[str, Any]:
    """``geobox``'s geographic extent as a GeoJSON polygon (``FOOTPRINT_POINTS`` per side; 7 decimals)."""
    footprint = geobox.footprint("EPSG:4326", npoints=FOOTPRINT_POINTS).geom
    rounded = shapely.transform(footprint, lambda xy: np.round(xy, 7))
    return _lists(shapely.geometry.mapping(rounded))


def _lists(value: Any) -> Any:
    """Tuples -> lists, recursively (pystac round-trips lists)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def _proj(target: Any, geobox: GeoBox) -> None:
    """The projection extension of a raster on ``geobox``: CRS, bbox and shape in its CRS, affine."""
    proj = ProjectionExtension.ext(target, add_if_missing=isinstance(target, pystac.Item))
    epsg = geobox.crs.epsg
    box = geobox.boundingbox
    proj.apply(code=f"EPSG:{epsg}" if epsg else None, wkt2=None if epsg else geobox.crs.to_wkt(),
               bbox=[box.left, box.bottom, box.right, box.top], shape=list(geobox.shape),
               transform=list(geobox.affine)[:6])


def _layer_asset(spec: LayerSpec, href: str, title: str, roles: list[str]) -> pystac.Asset:
    return pystac.Asset(href=href, media_type=pystac.MediaType.COG, title=title, roles=roles,
                        extra_fields={"miso:layer": spec.name})


def _describe_asset(owner: Any, key: str, spec: LayerSpec, resolution: float, threshold: float) -> None:
    """Raster bands (and classes) of asset ``key`` of ``owner`` (an item or collection with the extensions);
    ``threshold``: the store's permafrost decision threshold (named on thresholded layers' assets)."""
    asset = owner.assets[key]
    bands = [RasterBand.create(nodata=NODATA, data_type=DataType.UINT8, spatial_resolution=resolution,
                               scale=spec.scale, offset=spec.offset, unit="1" if spec.scale else None)
             for _ in spec.bands]
    RasterExtension.ext(asset, add_if_missing=True).bands = bands
    if spec.count > 1:
        asset.extra_fields["miso:band_names"] = list(spec.bands)
    if spec.categorical:
        ClassificationExtension.ext(asset, add_if_missing=True).classes = [
            Classification.create(value=c.value, name=c.name, description=c.description, color_hint=c.colour)
            for c in spec.classes
        ]
    if spec.thresholded:
        asset.extra_fields["miso:decision_threshold"] = threshold


def date_range(attrs: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """(first instant, last instant) of the store's ``imagery_date_range`` ("YYYY-MM-DD/YYYY-MM-DD"), UTC."""
    try:
        first, last = str(attrs["imagery_date_range"]).split("/")
        start = dt.datetime.combine(dt.date.fromisoformat(first), dt.time(), dt.UTC)
        end = dt.datetime.combine(dt.date.fromisoformat(last), dt.time(23, 59, 59), dt.UTC)
    except (KeyError, ValueError) as exc:
        raise MisoError(f"the store has no valid imagery_date_range attribute ({exc})") from None
    return start, end


def decision_threshold(attrs: dict[str, Any]) -> float:
    """The permafrost decision threshold among ``attrs`` (the export adds the store's; 0.5 when absent)."""
    return float(attrs.get("decision_threshold", DEFAULT_THRESHOLD))


def provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The ``miso:*`` properties of every item, from the store's group attributes."""
    return {
        "miso:checkpoint_sha256": dict(attrs.get("model_checkpoints") or {}),
        "miso:model_kind": attrs.get("model_kind"),
        "miso:map_config_hash": attrs.get("map_config_hash"),
        "miso:store_uuid": attrs.get("store_uuid"),
        "miso:software_version": attrs.get("software_version"),
        "miso:imagery_seasons": list(attrs.get("imagery_seasons") or []),
        "miso:decision_threshold": decision_threshold(attrs),
        "miso:probability_scale": "stored uint8 = round(probability x 250); 255 = no data",
    }


def _rel(path: Path, json_path: Path) -> str:
    return Path(os.path.relpath(path, json_path.parent)).as_posix()


def publish_collection(final_dir: Path, collection_id: str, attrs: dict[str, Any], resolution: float,
                       tiles: dict[str, tuple[GeoBox, dict[str, Path]]], mosaics: dict[str, Path],
                       overviews: dict[str, tuple[GeoBox, Path]]) -> list[Path]:
    """Write the collection (arguments as :func:`write_collection`; ``attrs``: the store's group attributes
    plus ``decision_threshold``, its permafrost threshold) into a hidden folder beside ``final_dir``,
    then swap it in at ``final_dir``; returns its JSON files and the terms file."""
    # no dot suffix in the temporary name: pystac would take the folder for a file
    tmp = final_dir.with_name(f".{final_dir.name}-tmp-{uuid.uuid4().hex[:12]}")
    try:
        write_collection(tmp, collection_id, attrs, resolution, tiles, mosaics, overviews, final_dir)
        replace_dir(tmp, final_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(final_dir.rglob("*.json")) + [final_dir / TERMS_FILE]


def write_collection(directory: Path, collection_id: str, attrs: dict[str, Any], resolution: float,
                     tiles: dict[str, tuple[GeoBox, dict[str, Path]]], mosaics: dict[str, Path],
                     overviews: dict[str, tuple[GeoBox, Path]], final_dir: Path) -> Path:
    """Save the collection into ``directory``, with hrefs relative as if it lived at ``final_dir``.

    ``tiles`` maps tile id -> (tile grid, layer -> COG path); ``mosaics`` layer -> VRT path; ``overviews``
    layer -> (overview grid, COG path). Returns the collection JSON path under ``directory``.
    """
    items = [_tile_item(tile_id, *tiles[tile_id], attrs, resolution, final_dir / tile_id / f"{tile_id}.json")
             for tile_id in sorted(tiles)]
    if not items:
        raise MisoError("no tile to describe in the STAC collection")
    bbox = [min(i.bbox[0] for i in items), min(i.bbox[1] for i in items),
            max(i.bbox[2] for i in items), max(i.bbox[3] for i in items)]
    collection = pystac.Collection(
        id=collection_id,
        description=f"MISO soil maps of Alaska from {attrs.get('workflow', collection_id)}: permafrost probability, "
                    "soil-order probabilities and most probable soil order, per grid tile (COG).",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([list(date_range(attrs))])),
        license="other",
        title=f"MISO soil maps: {attrs.get('workflow', collection_id)}",
        extra_fields={"miso:provenance": provenance(attrs)},
    )
    collection.stac_extensions += [ext.get_schema_uri()
                                   for ext in (ProjectionExtension, RasterExtension, ClassificationExtension,
                                               FileExtension)]
    _collection_assets(collection, mosaics, overviews, final_dir / "collection.json", decision_threshold(attrs))
    collection.item_assets = item_assets(items[0])
    collection.summaries = summaries(items[0], resolution)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / TERMS_FILE).write_text(terms_text(attrs))
    collection.add_link(pystac.Link("license", TERMS_FILE, media_type="text/plain",
                                    title="Terms of use (no licence has been set)"))
    collection.add_items(items)
    collection.normalize_hrefs(str(directory))
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    return directory / "collection.json"


def _tile_item(tile_id: str, geobox: GeoBox, paths: dict[str, Path], attrs: dict[str, Any], resolution: float,
               item_json: Path) -> pystac.Item:
    """The item of one tile on ``geobox``: its COGs (layer -> path) as assets, hrefs relative to ``item_json``."""
    start, end = date_range(attrs)
    item = pystac.Item(id=tile_id, geometry=geometry_4326(geobox), bbox=None, datetime=None, start_datetime=start,
                       end_datetime=end, properties=provenance(attrs) | {"miso:tile": tile_id})
    item.bbox = list(shapely.bounds(shapely.geometry.shape(item.geometry)).round(7))
    _proj(item, geobox)
    for spec in LAYER_SPECS:
        if spec.name in paths:
            item.add_asset(spec.name, _layer_asset(spec, _rel(paths[spec.name], item_json), spec.title, ["data"]))
            _describe_asset(item, spec.name, spec, resolution, decision_threshold(attrs))
            FileExtension.ext(item.assets[spec.name], add_if_missing=True).size = paths[spec.name].stat().st_size
    return item


def item_assets(item: pystac.Item) -> dict[str, dict[str, Any]]:
    """The collection's ``item_assets``: each of ``item``'s assets as every item has it (no href, no
    per-tile projection or file size)."""
    per_tile = ("href", "file:size", "proj:shape", "proj:transform", "proj:bbox")
    return {key: {k: v for k, v in asset.to_dict().items() if k not in per_tile} for key, asset in item.assets.items()}


def value_range(spec: LayerSpec) -> dict[str, float] | None:
    """Physical (minimum, maximum) a continuous layer can hold (stored 0..cap x scale); None for classes."""
    if spec.categorical:
        return None
    top = PROB_SCALE if spec.scale == 1.0 / PROB_SCALE else CAP  # probabilities are x250, the rest capped at 254
    return {"minimum": 0.0, "maximum": round(top * (spec.scale or 1.0), 6)}


def summaries(item: pystac.Item, resolution: float) -> pystac.Summaries:
    """The collection's summaries: layers, soil-order classes, each continuous layer's physical value range
    (``miso:<layer>``), the input imagery's platforms and instrument, gsd (m) and the grid CRS."""
    out: dict[str, Any] = {"miso:layers": [spec.name for spec in LAYER_SPECS], **INPUT_PLATFORMS,
                           "gsd": [resolution], "proj:code": [ProjectionExtension.ext(item).code],
                           "classification:classes": [Classification.create(
                               value=c.value, name=c.name, description=c.description,
                               color_hint=c.colour).to_dict() for c in SOIL_ORDER_CLASSES]}
    for spec in LAYER_SPECS:
        if (span := value_range(spec)) is not None:
            out[f"miso:{spec.name}"] = span
    return pystac.Summaries(out)


def terms_text(attrs: dict[str, Any]) -> str:
    """The terms file linked as the collection's ``license``: no licence is set for these products."""
    return ("MISO soil maps: terms of use\n\n"
            "No licence has been set for these products or the software that made them (STAC license: other).\n"
            "Ask the map's producer before redistributing them. They are model predictions, provided as is, "
            "without any warranty of accuracy.\n\n"
            f"store uuid: {attrs.get('store_uuid')}\nsoftware: miso-mapper {attrs.get('software_version')}\n")


def _collection_assets(collection: pystac.Collection, mosaics: dict[str, Path],
                       overviews: dict[str, tuple[GeoBox, Path]], collection_json: Path, threshold: float) -> None:
    """Add the VRT mosaics and the statewide overview COGs (on their grids) as the collection's assets
    (``threshold``: the store's permafrost decision threshold)."""
    for spec in LAYER_SPECS:
        if spec.name in mosaics:
            collection.add_asset(f"{spec.name}_mosaic", pystac.Asset(
                href=_rel(mosaics[spec.name], collection_json), media_type=VRT_MEDIA_TYPE,
                title=f"{spec.title}: GDAL VRT mosaic of all tiles", roles=["data", "mosaic"]))
        if spec.name in overviews:
            geobox, path = overviews[spec.name]
            key = f"{spec.name}_overview"
            collection.add_asset(key, _layer_asset(spec, _rel(path, collection_json),
                                                   f"{spec.title}: statewide overview", ["overview"]))
            _describe_asset(collection, key, spec, abs(geobox.resolution.x), threshold)
            _proj(collection.assets[key], geobox)
