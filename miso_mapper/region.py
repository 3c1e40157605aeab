"""The region of interest as one geometry in the grid's CRS, from a bbox, a vector file or tile ids.

Pitfall: a bbox in degrees given without ``bbox_crs: EPSG:4326`` is *inside* the Alaska Albers grid (near
its false origin), so it would silently plan a few metres of ocean. Such a bbox is refused with a hint.
"""

from __future__ import annotations

from pathlib import Path

import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry
from shapely.ops import transform as shapely_transform

from miso_mapper.config import RegionConfig
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid


def _crs(text: str, what: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except CRSError:
        raise MisoError(f"{what}: {text!r} is not a CRS pyproj knows") from None


def _reproject(geom: BaseGeometry, src: CRS, dst: CRS) -> BaseGeometry:
    if src == dst:
        return geom
    # densify first so that straight bbox edges in one CRS follow the curve they make in the other
    geom = shapely.segmentize(geom, max_segment_length=_segment_length(geom))
    to_dst = Transformer.from_crs(src, dst, always_xy=True)
    return shapely_transform(to_dst.transform, geom)


def _segment_length(geom: BaseGeometry) -> float:
    xmin, ymin, xmax, ymax = geom.bounds
    return max(xmax - xmin, ymax - ymin, 1e-9) / 32


def bbox_geometry(bbox: tuple[float, float, float, float], bbox_crs: str, grid_crs: str) -> BaseGeometry:
    """The polygon of a bbox given in ``bbox_crs``, in ``grid_crs``. Refuses degree-like projected bboxes."""
    src = _crs(bbox_crs, "region.bbox_crs")
    if src.is_geographic:
        lon_ok = all(-180 <= v <= 180 for v in bbox[0::2])
        lat_ok = all(-90 <= v <= 90 for v in bbox[1::2])
        if not (lon_ok and lat_ok):
            raise MisoError(
                f"region.bbox {list(bbox)} is not in degrees but bbox_crs is {bbox_crs}; "
                "set bbox_crs to the CRS of the numbers (e.g. EPSG:3338)"
            )
    elif all(abs(v) <= 360 for v in bbox):
        raise MisoError(
            f"region.bbox {list(bbox)} looks like longitude/latitude degrees but bbox_crs is {bbox_crs}; "
            "set bbox_crs: EPSG:4326"
        )
    return _reproject(box(*bbox), src, _crs(grid_crs, "grid.crs"))


def vector_geometry(path: Path, layer: str | None, grid_crs: str) -> BaseGeometry:
    """Union of all (multi)polygons in a vector file, in ``grid_crs``."""
    if not path.exists():
        raise MisoError(f"region vector file not found: {path}")
    try:  # imported here: only vector regions need it (the GPU check's image carries no pyogrio)
        import pyogrio
    except ImportError:
        raise MisoError("pyogrio is not installed (pip install pyogrio); it reads region vector files") from None
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, layer=layer, read_geometry=True)
    except Exception as exc:  # pyogrio raises several DataSource/Field errors
        raise MisoError(f"cannot read region vector file {path}: {exc}") from None
    polygons = [
        g for g in shapely.from_wkb(wkb) if g is not None and g.geom_type in ("Polygon", "MultiPolygon")
    ]
    if not polygons:
        raise MisoError(f"region vector file {path} has no polygon features")
    src_crs = meta.get("crs") or "EPSG:4326"
    return _reproject(shapely.union_all(polygons), _crs(str(src_crs), f"CRS of {path}"), _crs(grid_crs, "grid.crs"))


def region_geometry(config: RegionConfig, grid: AlaskaGrid) -> BaseGeometry:
    """The region to map, in the grid's CRS, clipped to the grid. Raises :class:`MisoError` if empty."""
    if config.bbox is not None:
        geom = bbox_geometry(config.bbox, config.bbox_crs, grid.config.crs)
        what = f"region.bbox {list(config.bbox)} ({config.bbox_crs})"
    elif config.vector is not None:
        geom = vector_geometry(config.vector, config.layer, grid.config.crs)
        what = f"region.vector {config.vector}"
    else:
        assert config.tiles is not None
        geom = shapely.union_all([box(*grid.tile_geobox(t).boundingbox) for t in config.tiles])
        what = f"region.tiles {config.tiles}"
    clipped = geom.intersection(box(*grid.geobox.boundingbox))
    if clipped.is_empty or clipped.area == 0:
        raise MisoError(f"{what} lies outside the grid ({grid.geobox.boundingbox}, {grid.config.crs})")
    return clipped
