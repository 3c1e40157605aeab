"""Labelled field points: read the points GeoJSON, keep those inside the planned region, encode labels.

Shared by training, evaluation and the run report (a neutral module, so none of them imports another for it).

A :class:`PointSet` holds parallel arrays (one entry per point) so splits, chips and features can index them
with the same integer positions. Labels: ``permafrost`` float32 0/1 with NaN = no label; ``soil_order`` int64
index into :data:`miso_mapper.bands.SOIL_ORDERS` with -1 = no label.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError

log = logging.getLogger(__name__)

TASKS = ("permafrost", "taxonomy")


@dataclass
class PointSet:
    """Field points in EPSG:3338 with their labels, all arrays of length ``n``."""

    ids: np.ndarray
    """(n,) str point ids, unique."""
    x: np.ndarray
    """(n,) float64 EPSG:3338 easting, metres."""
    y: np.ndarray
    """(n,) float64 EPSG:3338 northing, metres."""
    permafrost: np.ndarray
    """(n,) float32 0/1, NaN = unlabelled."""
    soil_order: np.ndarray
    """(n,) int64 index into SOIL_ORDERS, -1 = unlabelled."""
    source_hash: str = ""
    """SHA-256 of the points file's bytes (training-data provenance)."""

    def __len__(self) -> int:
        return int(self.ids.size)

    def labelled(self, task: str) -> np.ndarray:
        """(n,) bool: the point has a label for ``task`` ('permafrost' or 'taxonomy')."""
        if task == "permafrost":
            return np.isfinite(self.permafrost)
        if task == "taxonomy":
            return self.soil_order >= 0
        raise MisoError(f"unknown task {task!r}; choose permafrost or taxonomy")

    def labels(self, task: str) -> np.ndarray:
        """(n,) float32 labels of ``task`` as the losses expect them: 0/1 or class index, -999 = none."""
        if task == "permafrost":
            return np.where(np.isfinite(self.permafrost), self.permafrost, -999.0).astype(np.float32)
        return np.where(self.soil_order >= 0, self.soil_order, -999).astype(np.float32)

    def subset(self, index: np.ndarray) -> PointSet:
        """The points at ``index`` (int positions or a bool mask), same source hash."""
        return PointSet(self.ids[index], self.x[index], self.y[index], self.permafrost[index],
                        self.soil_order[index], self.source_hash)

    def content_hash(self) -> str:
        """SHA-256 over ids, coordinates (cm) and labels of these points: identifies a training set."""
        h = hashlib.sha256()
        for arr in (self.ids.astype(str), np.round(self.x * 100).astype(np.int64),
                    np.round(self.y * 100).astype(np.int64), np.nan_to_num(self.permafrost, nan=-1),
                    self.soil_order):
            h.update(np.ascontiguousarray(arr).tobytes() if arr.dtype.kind != "U" else "\0".join(arr).encode())
        return h.hexdigest()


def points_path(workflow: Workflow) -> Path:
    """The labelled-points file of a workflow: ``points.path`` or the demo world's points."""
    if workflow.points.path is not None:
        return workflow.points.path
    if workflow.world is not None:
        return workflow.world.directory / "points" / "points.geojson"
    raise MisoError("points.path is not set (the workflow needs a labelled-points GeoJSON to train or evaluate)")


def polygon_path(workflow: Workflow, kind: str) -> Path | None:
    """``points.permafrost_zones`` / ``points.mlra`` or the demo world's layer; None when neither exists."""
    given = workflow.points.permafrost_zones if kind == "zones" else workflow.points.mlra
    if given is not None:
        return given
    if workflow.world is not None:
        name = "permafrost_zones.geojson" if kind == "zones" else "mlra.geojson"
        return workflow.world.directory / "vectors" / name
    return None


def read_points(path: Path) -> PointSet:
    """All points of a GeoJSON file (see :class:`~miso_mapper.config.PointsConfig` for the properties).

    Raises :class:`MisoError` for a missing or malformed file, duplicate ids or unknown soil orders.
    """
    if not path.is_file():
        raise MisoError(f"points file not found: {path}")
    raw = path.read_bytes()
    try:
        doc = json.loads(raw)
        features = doc["features"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MisoError(f"points file {path} is not a GeoJSON FeatureCollection ({exc})") from None
    if not features:
        raise MisoError(f"points file {path} has no features")
    to_3338 = _transformer(doc)
    ids, xs, ys, pf, so = [], [], [], [], []
    order_index = {name.lower(): i for i, name in enumerate(SOIL_ORDERS)}
    for k, feat in enumerate(features):
        props: dict[str, Any] = feat.get("properties") or {}
        pid = props.get("id", feat.get("id"))
        if pid is None:
            raise MisoError(f"points file {path}: feature {k} has no 'id'")
        if "x_3338" in props and "y_3338" in props:
            x, y = float(props["x_3338"]), float(props["y_3338"])
        else:
            geom = feat.get("geometry") or {}
            if geom.get("type") != "Point":
                raise MisoError(f"points file {path}: feature {pid} is not a Point and has no x_3338/y_3338")
            x, y = to_3338.transform(*geom["coordinates"][:2])
        value = props.get("permafrost")
        if value not in (None, 0, 1, True, False):
            raise MisoError(f"points file {path}: point {pid} has permafrost {value!r} (expected 0, 1 or null)")
        order = props.get("soil_order")
        if order is not None and str(order).lower() not in order_index:
            raise MisoError(f"points file {path}: point {pid} has unknown soil_order {order!r} "
                            f"(expected one of {', '.join(SOIL_ORDERS)} or null)")
        ids.append(str(pid))
        xs.append(x)
        ys.append(y)
        pf.append(np.nan if value is None else float(value))
        so.append(-1 if order is None else order_index[str(order).lower()])
    ids_arr = np.asarray(ids)
    if np.unique(ids_arr).size != ids_arr.size:
        raise MisoError(f"points file {path} has duplicate point ids")
    return PointSet(ids_arr, np.asarray(xs, np.float64), np.asarray(ys, np.float64),
                    np.asarray(pf, np.float32), np.asarray(so, np.int64), hashlib.sha256(raw).hexdigest())


def _transformer(doc: dict[str, Any]) -> Transformer:
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name", "EPSG:4326")
    return Transformer.from_crs(CRS.from_user_input(name), "EPSG:3338", always_xy=True)


def load_points(workflow: Workflow, tasks: tuple[str, ...] | list[str] = TASKS,
                echo: Any = None) -> PointSet:
    """The workflow's points inside its region (and grid), labelled or not (unlabelled ones can feed the
    contrastive terms).

    Points outside are dropped and reported through ``echo`` (a print-like callable) and the log.
    Raises :class:`MisoError` when no labelled point is left.
    """
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.region import region_geometry

    path = points_path(workflow)
    points = read_points(path)
    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    shapely.prepare(region)
    inside = shapely.contains_xy(region, points.x, points.y) | shapely.intersects_xy(region, points.x, points.y)
    if not inside.all():
        shown = ", ".join(points.ids[~inside][:5])
        msg = (f"{int((~inside).sum())} of {len(points)} points lie outside the region and are dropped "
               f"(e.g. {shown})")
        log.warning(msg)
        if echo is not None:
            echo(f"[yellow]note:[/] {msg}")
    points = points.subset(inside)
    keep = np.zeros(len(points), bool)
    for task in tasks:
        keep |= points.labelled(task)
    if not keep.any():
        raise MisoError(f"no point of {path} inside the region has a {' or '.join(tasks)} label")
    return points
