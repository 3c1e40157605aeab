"""Labelled field points: read the points GeoJSON, keep those inside the planned region, encode labels.

Shared by training, evaluation and the run report (a neutral module, so none of them imports another for it).

Which properties hold the id and the labels, and how label values are spelt, are the workflow's ``points``
settings (:class:`~miso_mapper.config.PointsConfig`, read through :mod:`miso_mapper.labels`). A command asks
for the tasks it runs: their label fields must exist and their values be understood; the label counts of those
tasks are printed (:func:`describe_label_counts`).

A :class:`PointSet` holds parallel arrays (one entry per point) so splits, chips and features can index them
with the same integer positions. Labels: ``permafrost`` float32 0/1 with NaN = no label; ``soil_order`` int64
index into :data:`miso_mapper.bands.SOIL_ORDERS` with -1 = no label.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import PointsConfig, Workflow
from miso_mapper.errors import MisoError
from miso_mapper.labels import UNKNOWN, LabelSpelling

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


TASK_FIELDS: dict[str, str] = {"permafrost": "permafrost_field", "taxonomy": "soil_order_field"}
"""task -> the PointsConfig setting naming the property that holds its label."""


def read_points(path: Path, cfg: PointsConfig | None = None, tasks: Sequence[str] = TASKS) -> PointSet:
    """All points of a GeoJSON file, labels read as ``cfg`` (:class:`~miso_mapper.config.PointsConfig`) says.

    Raises :class:`MisoError` for a missing or malformed file, a missing or duplicate id, a label field of
    ``tasks`` that no point has, or label values of ``tasks`` that are no accepted spelling. A task not in
    ``tasks`` may lack its field; its values that are no accepted spelling count as unlabelled (logged).
    """
    cfg = cfg or PointsConfig()
    features, raw, to_3338 = _features(path)
    present = sorted({key for feat in features for key in (feat.get("properties") or {})})
    for task in tasks:
        name = getattr(cfg, TASK_FIELDS[task])
        if name not in present:
            raise MisoError(f"points file {path}: no point has property {name!r} (points.{TASK_FIELDS[task]}); "
                            f"the points have: {', '.join(present) or 'no properties'}")
    ids, xs, ys = [], [], []
    for k, feat in enumerate(features):
        props: dict[str, Any] = feat.get("properties") or {}
        pid = props.get(cfg.id_field, feat.get("id"))
        if pid is None:
            raise MisoError(f"points file {path}: feature {k} has no {cfg.id_field!r} (points.id_field) and no "
                            f"feature id; the points have: {', '.join(present)}")
        if "x_3338" in props and "y_3338" in props:
            x, y = float(props["x_3338"]), float(props["y_3338"])
        else:
            geom = feat.get("geometry") or {}
            if geom.get("type") != "Point":
                raise MisoError(f"points file {path}: feature {pid} is not a Point and has no x_3338/y_3338")
            x, y = to_3338.transform(*geom["coordinates"][:2])
        ids.append(str(pid))
        xs.append(x)
        ys.append(y)
    ids_arr = np.asarray(ids)
    if np.unique(ids_arr).size != ids_arr.size:
        raise MisoError(f"points file {path} has duplicate point ids ({cfg.id_field!r}, points.id_field)")
    spelling = LabelSpelling.of(cfg)
    pf = _labels(path, features, cfg, spelling, "permafrost", "permafrost" in tasks)
    so = _labels(path, features, cfg, spelling, "taxonomy", "taxonomy" in tasks)
    return PointSet(ids_arr, np.asarray(xs, np.float64), np.asarray(ys, np.float64),
                    pf.astype(np.float32), so.astype(np.int64), hashlib.sha256(raw).hexdigest())


def _features(path: Path) -> tuple[list[dict[str, Any]], bytes, Transformer]:
    """The features of a GeoJSON FeatureCollection, the file's bytes and its coordinates' way to EPSG:3338."""
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
    return features, raw, _transformer(doc)


def _labels(path: Path, features: list[dict[str, Any]], cfg: PointsConfig, spelling: LabelSpelling, task: str,
            strict: bool) -> np.ndarray:
    """(n,) codes of ``task`` (permafrost 1/0/NaN, soil order index/-1); values no spelling accepts raise
    MisoError listing them with counts when ``strict``, else count as unlabelled."""
    name = getattr(cfg, TASK_FIELDS[task])
    parse = spelling.permafrost if task == "permafrost" else spelling.soil_order
    none = np.nan if task == "permafrost" else -1
    codes: list[Any] = []
    unknown: Counter[str] = Counter()
    for feat in features:
        value = (feat.get("properties") or {}).get(name)
        code = parse(value)
        if code is UNKNOWN:
            unknown[repr(value)] += 1
            code = none
        codes.append(code)
    if unknown:
        listed = ", ".join(f"{v} ({n})" for v, n in unknown.most_common())
        msg = (f"points file {path}: {sum(unknown.values())} value(s) of {name!r} (points.{TASK_FIELDS[task]}) are "
               f"not a {'permafrost label' if task == 'permafrost' else 'soil order'}: {listed}; "
               f"{spelling.accepted(task)}")
        if strict:
            raise MisoError(msg)
        log.warning("%s (read as no label: %s is not trained or evaluated here)", msg, task)
    return np.asarray(codes, np.float64)


def _transformer(doc: dict[str, Any]) -> Transformer:
    name = ((doc.get("crs") or {}).get("properties") or {}).get("name", "EPSG:4326")
    return Transformer.from_crs(CRS.from_user_input(name), "EPSG:3338", always_xy=True)


def load_points(workflow: Workflow, tasks: Sequence[str] = TASKS, echo: Callable[..., Any] | None = None
                ) -> PointSet:
    """The workflow's points inside its region (and grid), labelled or not (unlabelled ones can feed the
    contrastive terms), read with its ``points`` settings.

    Points outside are dropped and reported; the label counts of ``tasks`` are reported too (both through
    ``echo``, a print-like callable, and the log). Raises :class:`MisoError` when a task of ``tasks`` has no
    label left (see :func:`read_points` for the file's own errors).
    """
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.region import region_geometry

    path = points_path(workflow)
    points = read_points(path, workflow.points, tasks)
    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    shapely.prepare(region)
    inside = shapely.contains_xy(region, points.x, points.y) | shapely.intersects_xy(region, points.x, points.y)
    if not inside.all():
        shown = ", ".join(points.ids[~inside][:5])
        _say(f"[yellow]note:[/] {int((~inside).sum())} of {len(points)} points lie outside the region and are "
             f"dropped (e.g. {shown})", echo, logging.WARNING)
    in_file = {task: int(points.labelled(task).sum()) for task in tasks}
    points = points.subset(inside)
    for task in tasks:
        if not points.labelled(task).any():
            setting = TASK_FIELDS[task]
            name = getattr(workflow.points, setting)
            raise MisoError(f"no point of {path} inside the region has a {task} label (property {name!r}, "
                            f"points.{setting}; {in_file[task]} labelled in the whole file)")
    if tasks:
        _say(f"labels: {describe_label_counts(label_counts(points, tasks))}", echo)
    return points


def label_counts(points: PointSet, tasks: Sequence[str] = TASKS) -> dict[str, dict[str, int]]:
    """Labelled points per class of each task: ``{"permafrost": {"yes": n, "no": n}, "taxonomy": {order: n
    for all 7 SOIL_ORDERS}}`` (only the tasks in ``tasks``)."""
    counts: dict[str, dict[str, int]] = {}
    if "permafrost" in tasks:
        pf = points.permafrost[np.isfinite(points.permafrost)]
        counts["permafrost"] = {"yes": int((pf == 1).sum()), "no": int((pf == 0).sum())}
    if "taxonomy" in tasks:
        per = np.bincount(points.soil_order[points.soil_order >= 0], minlength=len(SOIL_ORDERS))
        counts["taxonomy"] = {name: int(n) for name, n in zip(SOIL_ORDERS, per, strict=True)}
    return counts


def describe_label_counts(counts: dict[str, dict[str, int]]) -> str:
    """One line: ``permafrost: 702 labelled (312 yes / 390 no); soil order: 650 labelled (Gelisols 310, ...)``
    (orders by count, those without a label left out)."""
    parts = []
    if "permafrost" in counts:
        c = counts["permafrost"]
        parts.append(f"permafrost: {c['yes'] + c['no']} labelled ({c['yes']} yes / {c['no']} no)")
    if "taxonomy" in counts:
        c = counts["taxonomy"]
        shown = ", ".join(f"{name} {n}" for name, n in sorted(c.items(), key=lambda kv: -kv[1]) if n)
        parts.append(f"soil order: {sum(c.values())} labelled ({shown or 'none'})")
    return "; ".join(parts) or "no task"


def label_count_rows(counts: dict[str, dict[str, int]]) -> list[tuple[str, str, str]]:
    """``(task, class, labelled points)`` rows of :func:`label_counts`, every class, for a report's table."""
    return [(task, name, f"{n:,}") for task, per in counts.items() for name, n in per.items()]


def _say(message: str, echo: Callable[..., Any] | None, level: int = logging.INFO) -> None:
    """``message`` to the log (without rich markup) and to ``echo`` when given (then the log's stream handler
    leaves it out: ``shown``, :mod:`miso_mapper.logs`)."""
    log.log(level, message.replace("[yellow]note:[/] ", ""), extra={"shown": echo is not None})
    if echo is not None:
        echo(message)
