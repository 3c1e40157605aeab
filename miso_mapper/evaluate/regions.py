"""Which permafrost zone and which MLRA each point lies in (point-in-polygon)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import shapely
from pyproj import CRS, Transformer

from miso_mapper.errors import MisoError

#: Region name of points inside no polygon of a layer.
OUTSIDE = "(none)"


def assign_regions(x: np.ndarray, y: np.ndarray, path: Path, field: str, crs: str = "EPSG:3338") -> np.ndarray:
    """(n,) object array: the ``field`` value of the polygon of ``path`` containing each point (x, y in
    ``crs``); points on a shared edge take the first polygon in file order; :data:`OUTSIDE` where none.

    Raises :class:`MisoError` for a missing or unreadable file or an unknown field.
    """
    if not Path(path).is_file():
        raise MisoError(f"polygon file not found: {path}")
    try:
        meta, _, wkb, fields = pyogrio.raw.read(path, read_geometry=True)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several error types
        raise MisoError(f"cannot read polygon file {path}: {exc}") from None
    names = list(meta["fields"])
    if field not in names:
        raise MisoError(f"polygon file {path} has no field {field!r} (fields: {', '.join(names)})")
    values = fields[names.index(field)]
    geoms = shapely.from_wkb(wkb)
    src = CRS.from_user_input(meta.get("crs") or "EPSG:4326")
    px, py = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if src != CRS.from_user_input(crs):
        px, py = Transformer.from_crs(crs, src, always_xy=True).transform(px, py)
    out = np.full(px.size, OUTSIDE, dtype=object)
    done = np.zeros(px.size, bool)
    for geom, value in zip(geoms, values, strict=True):
        if geom is None or geom.is_empty:
            continue
        shapely.prepare(geom)
        hit = ~done & shapely.intersects_xy(geom, px, py)
        out[hit] = str(value)
        done |= hit
    return out
