"""Field points and polygon layers of the demo world (pure functions returning GeoJSON dicts; no I/O)."""

from __future__ import annotations

from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import Polygon, box, mapping

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.world.fields import Latents
from miso_mapper.world.geometry import ALBERS_EPSG, pixel_centres, window_of

#: GeoJSON (2008) named-CRS member for EPSG:3338 layers.
CRS_3338 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}}
ZONES = (("continuous", "C", "90-100%"), ("discontinuous", "D", "50-90%"), ("sporadic", "S", "10-50%"))
MLRAS = (("229", "Interior Alaska Lowlands"), ("231", "Yukon-Tanana Uplands"),
         ("232", "Interior Alaska Highlands"))


def _rounded(geom: Polygon) -> dict[str, Any]:
    g = mapping(geom.buffer(0))
    return _round_coords(g)


def _round_coords(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 2)
    if isinstance(obj, (list, tuple)):
        return [_round_coords(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _round_coords(v) for k, v in obj.items()}
    return obj


def _bands_between(lines: list[np.ndarray], extent: Polygon, horizontal: bool) -> list[Polygon]:
    """Split ``extent`` by roughly horizontal (y = f(x), north to south) or vertical (x = f(y), west to
    east) polylines into len(lines)+1 polygons, in that order."""
    xmin, ymin, xmax, ymax = extent.bounds
    big = 1e5
    halves = []
    for line in lines:
        pts = [tuple(p) for p in line]
        if horizontal:  # polygon north of the line
            poly = Polygon(pts + [(pts[-1][0], ymax + big), (pts[0][0], ymax + big)])
        else:  # polygon west of the line
            poly = Polygon(pts + [(xmin - big, pts[-1][1]), (xmin - big, pts[0][1])])
        halves.append(poly.buffer(0).intersection(extent))
    out, taken = [], Polygon()
    for h in halves:
        out.append(h.difference(taken))
        taken = taken.union(h)
    out.append(extent.difference(taken))
    return out


def zone_features(lat: Latents, world_bbox: tuple[float, float, float, float]) -> dict[str, Any]:
    """Permafrost-zone polygons (continuous / discontinuous / sporadic) tiling ``world_bbox``, EPSG:3338 m.

    Properties: ``zone`` (name), ``code`` (C/D/S), ``extent`` (nominal areal permafrost percentage)."""
    polys = _bands_between(lat.zone_lines, box(*world_bbox), horizontal=True)
    feats = [{"type": "Feature", "properties": {"zone": z, "code": c, "extent": e}, "geometry": _rounded(p)}
             for (z, c, e), p in zip(ZONES, polys, strict=True)]
    return {"type": "FeatureCollection", "name": "permafrost_zones", "crs": CRS_3338, "features": feats}


def mlra_features(lat: Latents, world_bbox: tuple[float, float, float, float]) -> dict[str, Any]:
    """Major Land Resource Area polygons (3, west to east) tiling ``world_bbox``, EPSG:3338 m.

    Properties: ``mlra_id`` (string), ``name``."""
    polys = _bands_between(lat.mlra_lines, box(*world_bbox), horizontal=False)
    feats = [{"type": "Feature", "properties": {"mlra_id": i, "name": n}, "geometry": _rounded(p)}
             for (i, n), p in zip(MLRAS, polys, strict=True)]
    return {"type": "FeatureCollection", "name": "mlra", "crs": CRS_3338, "features": feats}


def sample_points(lat: Latents, region_grid: GeoBox, n: int, unlabelled: float, noise: float,
                  rng: np.random.Generator) -> dict[str, Any]:
    """``n`` field points inside the region, clustered like field data, as a GeoJSON FeatureCollection.

    Sites are drawn without replacement from region pixels with weights 45 % near roads (~400 m), 30 % near
    the river (~500 m), 15 % around 6 field camps, 10 % uniform; each point lies within 3 m of its pixel
    centre. Geometry: EPSG:4326 [lon, lat] (7 decimals); properties: ``id`` ('P00001'), ``x_3338``,
    ``y_3338`` (m, 2 decimals), ``permafrost`` (0/1 or null), ``soil_order`` (name or null). Labels are the
    truth pixel's, flipped / replaced by another order with probability ``noise``, each missing with
    probability ``unlabelled``.
    """
    win = window_of(lat.grid, region_grid)
    d_road, d_river = lat.d_road[win], lat.d_river[win]
    xs, ys = pixel_centres(region_grid)
    X, Y = np.meshgrid(xs, ys)
    camps = rng.uniform([xs[0], ys[-1]], [xs[-1], ys[0]], size=(6, 2))
    w_camp = np.zeros(tuple(region_grid.shape))
    for cx, cy in camps:
        w_camp += np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2 * 300.0**2))
    parts = [np.exp(-((d_road / 400.0) ** 2)), np.exp(-((d_river / 500.0) ** 2)), w_camp,
             np.ones(tuple(region_grid.shape))]
    w = sum(f * p / p.sum() for f, p in zip((0.45, 0.30, 0.15, 0.10), parts, strict=True))
    w = w.ravel() / w.sum()
    idx = np.sort(rng.choice(w.size, size=n, replace=False, p=w))
    r, c = np.unravel_index(idx, tuple(region_grid.shape))
    px = xs[c] + rng.uniform(-3, 3, n)
    py = ys[r] + rng.uniform(-3, 3, n)
    pf = lat.permafrost[win][r, c].astype(int)
    so = lat.soil_order[win][r, c].astype(int)
    flip = rng.uniform(size=n) < noise
    pf = np.where(flip, 1 - pf, pf)
    swap = rng.uniform(size=n) < noise
    so = np.where(swap, (so + rng.integers(1, len(SOIL_ORDERS), n)) % len(SOIL_ORDERS), so)
    miss_pf = rng.uniform(size=n) < unlabelled
    miss_so = rng.uniform(size=n) < unlabelled
    lon, latd = Transformer.from_crs(ALBERS_EPSG, 4326, always_xy=True).transform(px, py)
    feats = []
    for i in range(n):
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(float(lon[i]), 7), round(float(latd[i]), 7)]},
            "properties": {
                "id": f"P{i + 1:05d}",
                "x_3338": round(float(px[i]), 2),
                "y_3338": round(float(py[i]), 2),
                "permafrost": None if miss_pf[i] else int(pf[i]),
                "soil_order": None if miss_so[i] else SOIL_ORDERS[so[i]],
            },
        })
    return {"type": "FeatureCollection", "name": "points", "features": feats}
