"""Where sites may lie: inside the polygons of a mask, within a distance of access lines (roads, rivers).

Both are vector files GDAL reads (GeoJSON, GeoPackage, ...) in any CRS (none declared: EPSG:4326, as
GeoJSON says); they are reprojected to the grid CRS once. Each constraint gives a per-candidate test and a
per-block test, so blocks no candidate of which could pass are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from miso_mapper.errors import MisoError

_KINDS = {"polygon": ("Polygon", "MultiPolygon"), "line": ("LineString", "MultiLineString", "LinearRing")}


def read_union(path: Path, kind: str, grid_crs: str, what: str) -> BaseGeometry:
    """The union of every ``kind`` ('polygon' or 'line') feature of a vector file, in ``grid_crs``.

    Raises :class:`MisoError` naming ``what`` (e.g. 'sample_sites.mask') when the file is missing, unreadable,
    or has no such feature.
    """
    import pyogrio
    from pyproj import CRS, Transformer

    if not Path(path).is_file():
        raise MisoError(f"{what}: file not found: {path}")
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several DataSource/Field errors
        raise MisoError(f"{what}: cannot read {path}: {exc}") from None
    geoms = [g for g in shapely.from_wkb(wkb) if g is not None and not g.is_empty and g.geom_type in _KINDS[kind]]
    if not geoms:
        raise MisoError(f"{what}: {path} has no {kind} features")
    union = shapely.union_all(geoms)
    src, dst = CRS.from_user_input(meta.get("crs") or "EPSG:4326"), CRS.from_user_input(grid_crs)
    if src != dst:
        to_grid = Transformer.from_crs(src, dst, always_xy=True)
        union = shapely.transform(union, lambda xy: np.column_stack(to_grid.transform(xy[:, 0], xy[:, 1])))
    return union


@dataclass
class Constraints:
    """The allowed area: inside ``mask`` (if any) and within ``max_distance`` metres of ``access`` (if any),
    geometries in the grid CRS."""

    mask: BaseGeometry | None = None
    access: BaseGeometry | None = None
    max_distance: float = 0.0

    def __post_init__(self) -> None:
        for geom in (self.mask, self.access):
            if geom is not None:
                shapely.prepare(geom)
        self._reach = None if self.access is None else self.access.buffer(self.max_distance)

    @property
    def active(self) -> bool:
        """Whether any constraint is set."""
        return self.mask is not None or self.access is not None

    def accept(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Which points (grid CRS metres) lie inside the mask and within the distance of the access lines."""
        ok = np.ones(len(x), bool)
        if self.mask is not None:
            ok &= shapely.intersects_xy(self.mask, x, y)  # the boundary counts as inside
        if self.access is not None and ok.any():
            points = shapely.points(x[ok], y[ok])
            ok[ok] = shapely.dwithin(points, self.access, self.max_distance)
        return ok

    def may_hold(self, bounds: tuple[float, float, float, float]) -> bool:
        """False when no point of the box ``bounds`` (xmin, ymin, xmax, ymax) can pass :meth:`accept`."""
        box = shapely.box(*bounds)
        return ((self.mask is None or self.mask.intersects(box))
                and (self._reach is None or self._reach.intersects(box)))

    def access_distance(self, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
        """Distance (metres) of each point to the access lines; None without access lines."""
        if self.access is None:
            return None
        return shapely.distance(shapely.points(x, y), self.access)
