"""The map against truth: every valid pixel of the mapped area, and the labelled points.

Truth rasters are the demo world's ``truth/permafrost.tif`` (0/1) and ``truth/soil_order.tif`` (index into
:data:`~miso_mapper.bands.SOIL_ORDERS`), uint8, 255 = no data, EPSG:3338; their paths come from the world's
``world.json`` when present. The map is read from the store one done chunk at a time.

* A pixel counts when both the map and the truth have data there. Permafrost is predicted where the stored
  probability x 0.004 is >= the store's ``decision_threshold`` (the permafrost model's; 0.5 for RF-11, the
  synthetic stand-in and older stores), exactly as the exported ``permafrost_class`` layer
  (:func:`~miso_mapper.pipeline.store.permafrost_class`); soil order is the stored ``taxonomy_class``.
* **Majority baseline:** a constant map of the majority class of the *labelled points* inside the region
  (what a model that knows only the training labels' distribution would draw), scored on the same pixels
  and points. ``truth_majority_accuracy`` adds the best constant map in hindsight (the truth's own majority
  over those pixels). When the workflow has no points file the truth's majority is the baseline.
* **Points:** every labelled point that falls in a done chunk where the map has data, scored against its
  field label (which may differ from the truth pixel: the demo world adds label noise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.store import NODATA, permafrost_class, read_decision_threshold
from miso_mapper.report.source import RunData, load_run

TRUTH_NAMES = {"permafrost": "truth/permafrost.tif", "soil_order": "truth/soil_order.tif"}


def truth_paths(workflow: Workflow) -> dict[str, Path] | None:
    """{'permafrost', 'soil_order'} -> truth raster of the workflow's demo world; None when not available."""
    if workflow.world is None:
        return None
    root = workflow.world.directory
    names = dict(TRUTH_NAMES)
    manifest = root / "world.json"
    if manifest.is_file():
        try:
            names.update(json.loads(manifest.read_text()).get("truth", {}))
        except (OSError, ValueError):
            pass
    paths = {k: root / names[k] for k in TRUTH_NAMES}
    return paths if all(p.is_file() for p in paths.values()) else None


class _Truth:
    """A truth raster read on map grids: aligned windows when the pixels coincide, else nearest warping."""

    def __init__(self, path: Path, crs: str, res: float) -> None:
        import rasterio
        from pyproj import CRS

        self.src = rasterio.open(path)
        t = self.src.transform
        self.aligned = (self.src.crs is not None and CRS.from_user_input(self.src.crs) == CRS.from_user_input(crs)
                        and abs(t.a - res) < 1e-9 and abs(t.e + res) < 1e-9 and t.b == 0 and t.d == 0)

    def read(self, geobox: GeoBox) -> np.ndarray:
        """uint8 truth on ``geobox`` (a grid in the map's CRS and pixel size), 255 outside the raster."""
        # the raster's (col, row) of the grid's upper-left corner: whole numbers when the pixels coincide
        col, row = ~self.src.transform * (geobox.affine.c, geobox.affine.f)
        if self.aligned and abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6:
            return self._window(round(row), round(col), geobox.height, geobox.width)
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        with WarpedVRT(self.src, crs=geobox.crs.to_wkt(), transform=geobox.affine, width=geobox.width,
                       height=geobox.height, resampling=Resampling.nearest, nodata=NODATA) as vrt:
            return vrt.read(1)

    def _window(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        from rasterio.windows import Window

        out = np.full((height, width), NODATA, np.uint8)
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + height, self.src.height), min(col + width, self.src.width)
        if r1 > r0 and c1 > c0:
            out[r0 - row:r1 - row, c0 - col:c1 - col] = self.src.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
        return out

    def close(self) -> None:
        self.src.close()


def _points(workflow: Workflow) -> tuple[Any | None, str | None]:
    """The workflow's points inside its region (a PointSet, labels of either task optional) and None, or None
    and why there are none to use (no points file, or one ``points`` cannot read)."""
    from miso_mapper.points import load_points, points_path

    try:
        path = points_path(workflow)
    except MisoError as exc:
        return None, str(exc)
    if not path.is_file():
        return None, f"no points file at {path}"
    try:
        return load_points(workflow, tasks=()), None
    except MisoError as exc:  # a bad file is the report's note, not its end: the truth's majority is the baseline
        return None, str(exc)


def _ratio(a: int, n: int) -> float | None:
    return a / n if n else None


def map_accuracy(workflow: Workflow, run: RunData | None = None) -> dict[str, Any]:
    """Accuracy of a run's map against the demo world's truth (see the module doc for the definitions).

    Returns ``{"chunks", "area_km2", "majority_source", "decision_threshold", "permafrost": {...},
    "soil_order": {...}}`` (``decision_threshold``: the store's, which decides mapped permafrost) where each
    task dict holds ``pixels``, ``accuracy``, ``majority_class``, ``majority_accuracy``,
    ``truth_majority_accuracy``, ``points``, ``points_accuracy``, ``points_majority_accuracy`` (fractions in
    [0, 1]; None where nothing was counted), ``labels`` (the points' :func:`~miso_mapper.points.label_counts`,
    None without points) and ``points_note`` (why no points were used, else None). Raises :class:`MisoError`
    when there is no truth or no store.
    """
    from miso_mapper.points import label_counts

    truth = truth_paths(workflow)
    if truth is None:
        raise MisoError("no truth rasters: map accuracy needs a demo workflow whose world has truth/*.tif")
    run = run or load_run(workflow)
    if run.store is None:
        raise MisoError(f"no store at {RunLayout.of(workflow).store}: nothing to score")
    g = run.grid.config
    cs = g.chunk_size
    threshold = read_decision_threshold(run.store["permafrost_probability"].attrs,
                                        f"{RunLayout.of(workflow).store}/permafrost_probability")
    points, points_note = _points(workflow)
    # majority classes: from the labelled points when there are any, else from the truth (filled in below)
    pf_major = so_major = None
    labels = None
    if points is not None:
        labels = label_counts(points)
        pf_lab = points.permafrost[np.isfinite(points.permafrost)].astype(int)
        so_lab = points.soil_order[points.soil_order >= 0]
        pf_major = int(np.bincount(pf_lab, minlength=2).argmax()) if pf_lab.size else None
        so_major = int(np.bincount(so_lab, minlength=len(SOIL_ORDERS)).argmax()) if so_lab.size else None
        prow = np.floor((g.origin_y - points.y) / g.resolution).astype(np.int64)
        pcol = np.floor((points.x - g.origin_x) / g.resolution).astype(np.int64)
    pf_hist, so_hist = np.zeros(2, np.int64), np.zeros(len(SOIL_ORDERS), np.int64)
    n_pf = ok_pf = n_so = ok_so = 0
    pt_pf_pred: list[np.ndarray] = []
    pt_pf_lab: list[np.ndarray] = []
    pt_so_pred: list[np.ndarray] = []
    pt_so_lab: list[np.ndarray] = []
    readers = {k: _Truth(p, g.crs, g.resolution) for k, p in truth.items()}
    try:
        for row in run.done():
            lr, lc = run.store_slices(row)
            pf = permafrost_class(run.store["permafrost_probability"][lr, lc], threshold)
            cls = np.asarray(run.store["taxonomy_class"][lr, lc])
            tp = readers["permafrost"].read(run.chunk_geobox(row))
            ts = readers["soil_order"].read(run.chunk_geobox(row))
            valid = (pf != NODATA) & (tp <= 1)
            n_pf += int(valid.sum())
            ok_pf += int((((pf == 1) == (tp == 1)) & valid).sum())
            pf_hist += np.bincount(tp[valid], minlength=2)[:2]
            valid = (cls != NODATA) & (ts < len(SOIL_ORDERS))
            n_so += int(valid.sum())
            ok_so += int(((cls == ts) & valid).sum())
            so_hist += np.bincount(ts[valid], minlength=len(SOIL_ORDERS))[: len(SOIL_ORDERS)]
            if points is not None:
                inside = (prow // cs == row.row) & (pcol // cs == row.col)
                r, c = prow[inside] - row.row * cs, pcol[inside] - row.col * cs
                lab_pf, lab_so = points.permafrost[inside], points.soil_order[inside]
                keep = np.isfinite(lab_pf) & (pf[r, c] != NODATA)
                pt_pf_pred.append(pf[r, c][keep] == 1)
                pt_pf_lab.append(lab_pf[keep].astype(int))
                keep = (lab_so >= 0) & (cls[r, c] != NODATA)
                pt_so_pred.append(cls[r, c][keep])
                pt_so_lab.append(lab_so[keep])
    finally:
        for reader in readers.values():
            reader.close()
    source = "points" if pf_major is not None and so_major is not None else "truth"
    if pf_major is None:
        pf_major = int(pf_hist.argmax())
    if so_major is None:
        so_major = int(so_hist.argmax())

    def task(n: int, ok: int, hist: np.ndarray, major: int, pred: list[np.ndarray], lab: list[np.ndarray],
             name: str | int) -> dict[str, Any]:
        p = np.concatenate(pred) if pred else np.zeros(0)
        t = np.concatenate(lab) if lab else np.zeros(0)
        return {"pixels": n, "accuracy": _ratio(ok, n), "majority_class": name,
                "majority_accuracy": _ratio(int(hist[major]), n),
                "truth_majority_accuracy": _ratio(int(hist.max()), n),
                "points": int(t.size), "points_accuracy": _ratio(int((p == t).sum()), int(t.size)),
                "points_majority_accuracy": _ratio(int((t == major).sum()), int(t.size))}

    return {
        "chunks": len(run.done()),
        "area_km2": round(sum(r.area_km2 for r in run.done()), 6),
        "majority_source": source,
        "labels": labels,
        "points_note": points_note,
        "decision_threshold": threshold,
        "permafrost": task(n_pf, ok_pf, pf_hist, pf_major, pt_pf_pred, pt_pf_lab, pf_major),
        "soil_order": task(n_so, ok_so, so_hist, so_major, pt_so_pred, pt_so_lab, SOIL_ORDERS[so_major]),
    }
