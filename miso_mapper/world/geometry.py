"""Pure geometry of the demo world: pixel grids, Sentinel-2 tile layout, acquisition dates.

Nothing here touches the file system. Grids are odc-geo ``GeoBox`` es, north-up with square pixels in
metres: ``affine`` maps pixel (col, row) corners to CRS coordinates, ``crs.epsg`` names the CRS.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from shapely.geometry import Polygon, box
from shapely.ops import transform as shp_transform

from miso_mapper.world.spec import WorldSpec

#: CRS of covariates, truth and vectors (Alaska Albers).
ALBERS_EPSG = 3338
#: UTM zone of the demo area (zone 6N, where Fairbanks lies).
UTM_ZONE = 6
UTM_EPSG = 32600 + UTM_ZONE
#: Extra margin (m) around the world extent on which latent fields are simulated, so that every pixel of a
#: (rotated) UTM tile grid covering the world extent samples simulated ground.
SIM_BUFFER_M = 2000.0


def grid_from_bounds(epsg: int, bounds: tuple[float, float, float, float], res: float) -> GeoBox:
    """North-up grid of ``res`` m pixels in EPSG:``epsg`` exactly covering ``bounds`` (xmin, ymin, xmax, ymax;
    multiples of ``res``): upper-left corner (xmin, ymax)."""
    return GeoBox.from_bbox(bounds, f"EPSG:{epsg}", resolution=res, tight=True)


def pixel_centres(grid: GeoBox) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of a north-up ``grid``: (x of each column, shape (cols,)), (y of each row,
    shape (rows,)), float64 in the grid's CRS units."""
    coords = grid.coords
    return coords["x"].values, coords["y"].values


def window_of(outer: GeoBox, inner: GeoBox) -> tuple[slice, slice]:
    """(row slice, col slice) of ``inner`` inside ``outer``, such that ``outer[window] == inner``.

    Raises ``ValueError`` when ``inner`` is not such a sub-grid (other CRS, resolution or pixel alignment).
    """
    try:
        window = outer.overlap_roi(inner)
    except ValueError:  # odc-geo refuses grids whose pixels do not line up
        window = None
    if window is None or outer[window] != inner:
        raise ValueError(f"{inner} is not a sub-grid of {outer}")
    return window


def world_grid(spec: WorldSpec) -> GeoBox:
    """EPSG:3338 grid of the covariate and truth rasters (region + margin) at ``spec.resolution``."""
    return grid_from_bounds(ALBERS_EPSG, spec.world_bbox, spec.resolution)


def sim_grid(spec: WorldSpec) -> GeoBox:
    """EPSG:3338 grid on which latent fields are simulated: world extent + :data:`SIM_BUFFER_M`."""
    xmin, ymin, xmax, ymax = spec.world_bbox
    b = SIM_BUFFER_M
    return grid_from_bounds(ALBERS_EPSG, (xmin - b, ymin - b, xmax + b, ymax + b), spec.resolution)


def reproject_polygon(poly: Polygon, src_epsg: int, dst_epsg: int, densify: int = 20) -> Polygon:
    """``poly`` reprojected from ``src_epsg`` to ``dst_epsg`` (x/y order = easting/northing or lon/lat),
    its edges densified with ``densify`` points each so curved edges follow the projection."""
    ring = np.asarray(poly.exterior.coords)
    pts = []
    for a, b in zip(ring[:-1], ring[1:], strict=True):
        t = np.linspace(0, 1, densify, endpoint=False)[:, None]
        pts.append(a + t * (b - a))
    dense = Polygon(np.concatenate(pts))
    tr = Transformer.from_crs(src_epsg, dst_epsg, always_xy=True)
    return shp_transform(tr.transform, dense)


@dataclass(frozen=True)
class S2Tile:
    """A synthetic Sentinel-2 tile: MGRS-style id, UTM grids and the polygon that holds data.

    ``grid10``/``grid20`` are the 10 m and 20 m grids in EPSG:326xx; ``footprint`` is the data polygon in the
    same CRS (pixels outside it are no data, DN 0, SCL 0).
    """

    mgrs: str
    grid10: GeoBox
    grid20: GeoBox
    footprint: Polygon

    @property
    def utm_zone(self) -> int:
        """UTM zone number (e.g. 6)."""
        return int(self.mgrs[:2])

    @property
    def latitude_band(self) -> str:
        """MGRS latitude band letter (e.g. 'W')."""
        return self.mgrs[2]

    @property
    def grid_square(self) -> str:
        """MGRS 100 km grid square letters (e.g. 'VS')."""
        return self.mgrs[3:]


def tile_layout(spec: WorldSpec) -> list[S2Tile]:
    """Two overlapping UTM zone 6N tiles (``06WVS`` west, ``06WWS`` east) that together cover the world extent.

    The west tile spans the western 60 % of the UTM bounding box of the world extent, the east tile the
    eastern 60 %, so the middle ~20 % is seen by both. Tile edges are snapped outward to 60 m so the 10 m and
    20 m grids share corners, as in real tiles. The east tile has a triangular no-data wedge in its
    south-west corner (a swath edge) that lies wholly inside the west tile.
    """
    world = reproject_polygon(box(*spec.world_bbox), ALBERS_EPSG, UTM_EPSG)
    xmin, ymin, xmax, ymax = world.bounds

    def snap(v: float, up: bool) -> float:
        return (math.ceil(v / 60.0) if up else math.floor(v / 60.0)) * 60.0

    xmin, ymin, xmax, ymax = snap(xmin, False), snap(ymin, False), snap(xmax, True), snap(ymax, True)
    width = xmax - xmin
    w_end = snap(xmin + 0.6 * width, True)
    e_start = snap(xmax - 0.6 * width, False)
    tiles = []
    for mgrs, (x0, x1) in (("06WVS", (xmin, w_end)), ("06WWS", (e_start, xmax))):
        bounds = (x0, ymin, x1, ymax)
        fp = box(*bounds)
        if mgrs == "06WWS":
            wedge = 0.8 * (w_end - e_start)
            fp = Polygon([(x0, ymax), (x1, ymax), (x1, ymin), (x0 + wedge, ymin)])
        tiles.append(S2Tile(mgrs, grid_from_bounds(UTM_EPSG, bounds, 10.0),
                            grid_from_bounds(UTM_EPSG, bounds, 20.0), fp))
    return tiles


def footprint_mask(tile: S2Tile, grid: GeoBox) -> np.ndarray:
    """Boolean mask (rows, cols) of ``grid`` pixels whose centre lies inside ``tile.footprint``."""
    x, y = pixel_centres(grid)
    gx0, gy0, gx1, gy1 = tile.grid10.boundingbox
    coords = np.asarray(tile.footprint.exterior.coords)
    if len(coords) == 5 and tile.footprint.equals(box(*tile.footprint.bounds)):
        return np.ones(tuple(grid.shape), dtype=bool)
    # the only non-rectangular footprint: a wedge cut by the line from (gx0, gy1) to (gx0 + wedge, gy0)
    wedge = coords[3][0] - gx0
    xx, yy = np.meshgrid(x, y)
    return (xx - gx0) >= wedge * (gy1 - yy) / (gy1 - gy0)


def acquisition_dates(spec: WorldSpec, rng: np.random.Generator) -> list[dt.datetime]:
    """``spec.dates_per_year`` UTC acquisition times per year between 1 Jul and 31 Aug, sorted, distinct days,
    at ~21:10 UTC (the local morning overpass over interior Alaska)."""
    out = []
    season = (dt.date(2001, 8, 31) - dt.date(2001, 7, 1)).days + 1
    for year in spec.years:
        days = np.sort(rng.choice(season, size=spec.dates_per_year, replace=False))
        for d in days:
            day = dt.date(year, 7, 1) + dt.timedelta(days=int(d))
            out.append(dt.datetime(day.year, day.month, day.day, 21, 10, int(rng.integers(0, 60)),
                                   tzinfo=dt.UTC))
    return out


@dataclass(frozen=True)
class Sampler:
    """Precomputed resampling from a source grid to a destination grid in another CRS.

    ``index`` (k, N) int64 flat source indices and ``weight`` (k, N) float32 weights, N = destination pixels
    (row-major): k = 4 for bilinear, 1 for nearest. Destination pixels whose centre falls outside the source
    get weight 0 (value 0).
    """

    index: np.ndarray
    weight: np.ndarray
    shape: tuple[int, int]

    def __call__(self, src: np.ndarray) -> np.ndarray:
        """Resample ``src`` (source rows, cols) to an array of the destination shape and ``src``'s dtype."""
        flat = src.ravel()
        if len(self.index) == 1:
            out = flat[self.index[0]] * (self.weight[0] > 0).astype(src.dtype)
        else:
            out = sum(flat[i] * w for i, w in zip(self.index, self.weight, strict=True))
        return np.asarray(out, dtype=src.dtype).reshape(self.shape)


def make_sampler(src: GeoBox, dst: GeoBox, bilinear: bool, src_shift_px: float = 0.0) -> Sampler:
    """Sampler from ``src`` to ``dst`` at destination pixel centres (bilinear or nearest neighbour).

    ``src_shift_px`` is added to the source pixel coordinates (e.g. -0.5 when sampling a 2x2-block-averaged
    source whose value at (r, c) is centred on the corner (r + 1, c + 1)).
    """
    x, y = pixel_centres(dst)
    xx, yy = np.meshgrid(x, y)
    sx, sy = Transformer.from_crs(dst.crs.epsg, src.crs.epsg, always_xy=True).transform(xx.ravel(), yy.ravel())
    res = src.resolution.x
    col = (sx - src.affine.c) / res - 0.5 + src_shift_px
    row = (src.affine.f - sy) / res - 0.5 + src_shift_px
    h, w = src.shape
    if not bilinear:
        r, c = np.rint(row).astype(np.int64), np.rint(col).astype(np.int64)
        ok = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        idx = np.clip(r, 0, h - 1) * w + np.clip(c, 0, w - 1)
        return Sampler(idx[None], ok[None].astype(np.float32), tuple(dst.shape))
    r0, c0 = np.floor(row).astype(np.int64), np.floor(col).astype(np.int64)
    fr, fc = (row - r0).astype(np.float32), (col - c0).astype(np.float32)
    ok = (r0 >= 0) & (r0 < h - 1) & (c0 >= 0) & (c0 < w - 1)
    r0, c0 = np.clip(r0, 0, h - 2), np.clip(c0, 0, w - 2)
    base = r0 * w + c0
    idx = np.stack([base, base + 1, base + w, base + w + 1])
    wt = np.stack([(1 - fr) * (1 - fc), (1 - fr) * fc, fr * (1 - fc), fr * fc]) * ok
    return Sampler(idx, wt.astype(np.float32), tuple(dst.shape))
