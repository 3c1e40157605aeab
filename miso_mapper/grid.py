"""The output grid: tiles, processing chunks with their halo, and Zarr alignment. Pure geometry, no I/O.

Everything georeferenced here is an :class:`odc.geo.geobox.GeoBox`, so it carries its CRS, affine transform
and shape. Pixel indices are (row, col) into the *full* grid, whose pixel (0, 0) has its upper-left corner
at ``(origin_x, origin_y)``; rows grow southwards.

Tile ids follow AKVEG's 50 km naming, ``AK050H50V15``: H counts columns eastwards and V counts rows
southwards from the grid origin. The indices are 1-based by default (``index_base: 1``) because that is the
only choice under which Fairbanks (x 297,506, y 1,667,290) lands in the reference's demo tile AK050H50V15:
H = floor((x - origin_x) / 50 km) + 1 = 50 and V = floor((origin_y - y) / 50 km) + 1 = 15.

A *processing chunk* is ``chunk_size`` pixels square and a whole number of Zarr chunks, so chunk writes are
Zarr-aligned by construction and no two chunks ever touch the same Zarr chunk. It is read with a ``halo`` of
extra pixels on every side so that every output pixel has full model context; the halo is always full width,
even at region and grid edges (pixels outside the imagery are simply no data), so every chunk's input has the
same shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import shapely
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import CRS
from pyproj.exceptions import CRSError
from shapely.geometry.base import BaseGeometry

from miso_mapper.config import GridConfig
from miso_mapper.errors import MisoError


@dataclass(frozen=True)
class Chunk:
    """One processing chunk: its index in the chunk lattice and its interior and halo grids."""

    row: int
    col: int
    geobox: GeoBox
    """The interior written to the store: ``chunk_size`` x ``chunk_size`` px."""
    halo_geobox: GeoBox
    """The interior padded by ``halo`` px on every side: what the chunk reads."""
    tile: str
    """Id of the tile that contains the chunk."""

    @property
    def id(self) -> str:
        """Stable text id, e.g. ``r0292c0492`` (chunk row and column in the full grid)."""
        return f"r{self.row:04d}c{self.col:04d}"

    @property
    def area_km2(self) -> float:
        """Interior area in km² (CRS units are metres)."""
        res = abs(self.geobox.resolution.x)
        return self.geobox.shape.y * self.geobox.shape.x * res * res / 1e6


class AlaskaGrid:
    """The tiling of a :class:`~miso_mapper.config.GridConfig`: tiles, chunks, Zarr alignment."""

    _TILE_RE = re.compile(r"^(?P<prefix>.+)H(?P<h>\d{2,})V(?P<v>\d{2,})$")

    def __init__(self, config: GridConfig) -> None:
        self.config = config

    # ---- the whole grid --------------------------------------------------------------------------------
    @cached_property
    def transform(self) -> Affine:
        """Affine of the full grid (north-up, square pixels)."""
        c = self.config
        return Affine(c.resolution, 0.0, c.origin_x, 0.0, -c.resolution, c.origin_y)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the full grid in pixels."""
        c = self.config
        return (c.tiles_y * c.tile_size, c.tiles_x * c.tile_size)

    @cached_property
    def geobox(self) -> GeoBox:
        """The full grid."""
        return GeoBox(self.shape, self.transform, self.config.crs)

    @property
    def chunk_shape(self) -> tuple[int, int]:
        """(rows, cols) of the chunk lattice over the full grid."""
        rows, cols = self.shape
        return (rows // self.config.chunk_size, cols // self.config.chunk_size)

    def pixel_geobox(self, row: int, col: int, height: int, width: int) -> GeoBox:
        """The sub-grid whose upper-left pixel is (row, col) of the full grid. May extend past the grid."""
        return GeoBox((height, width), self.transform @ Affine.translation(col, row), self.config.crs)

    def offset(self, geobox: GeoBox) -> tuple[int, int]:
        """(row, col) of ``geobox``'s upper-left pixel in the full grid.

        Raises :class:`MisoError` when ``geobox`` is not a sub-grid of this grid: another CRS, another
        resolution or rotation, or an origin off the pixel lattice (misregistered by a fraction of a pixel).
        """
        c = self.config
        a = geobox.affine
        if geobox.crs is None or CRS.from_user_input(geobox.crs) != CRS.from_user_input(c.crs):
            raise MisoError(f"a grid in {geobox.crs} is not on the {c.crs} output grid")
        if (a.a, a.b, a.d, a.e) != (c.resolution, 0.0, 0.0, -c.resolution):
            raise MisoError(f"a grid with pixels ({a.a}, {a.e}) is not on the {c.resolution} m output grid")
        col, row = (a.c - c.origin_x) / c.resolution, (c.origin_y - a.f) / c.resolution
        if not (float(col).is_integer() and float(row).is_integer()):
            raise MisoError(f"a grid with origin ({a.c}, {a.f}) is off the output grid's pixel lattice "
                            f"by ({col % 1:.3f}, {row % 1:.3f}) px")
        return int(row), int(col)

    # ---- tiles -----------------------------------------------------------------------------------------
    def tile_id(self, h: int, v: int) -> str:
        """Tile id for column ``h`` and row ``v`` (in the configured index base)."""
        return f"{self.config.tile_prefix}H{h:02d}V{v:02d}"

    def parse_tile_id(self, tile_id: str) -> tuple[int, int]:
        """(h, v) of a tile id; raises :class:`MisoError` if it is malformed or off the grid."""
        m = self._TILE_RE.match(tile_id)
        if not m or m["prefix"] != self.config.tile_prefix:
            raise MisoError(f"{tile_id!r} is not a tile id of this grid (expected e.g. {self.tile_id(50, 15)})")
        h, v = int(m["h"]), int(m["v"])
        base = self.config.index_base
        if not (base <= h < base + self.config.tiles_x and base <= v < base + self.config.tiles_y):
            raise MisoError(f"tile {tile_id} is outside the grid ({self.config.tiles_x} x {self.config.tiles_y})")
        return h, v

    def tile_at(self, x: float, y: float) -> str:
        """Id of the tile containing the point (x, y), in grid CRS units."""
        c = self.config
        size_m = c.tile_size * c.resolution
        h = math.floor((x - c.origin_x) / size_m)
        v = math.floor((c.origin_y - y) / size_m)
        if not (0 <= h < c.tiles_x and 0 <= v < c.tiles_y):
            raise MisoError(f"point ({x:.1f}, {y:.1f}) is outside the grid")
        return self.tile_id(h + c.index_base, v + c.index_base)

    def tile_geobox(self, tile_id: str) -> GeoBox:
        """The grid of one tile: ``tile_size`` x ``tile_size`` px."""
        h, v = self.parse_tile_id(tile_id)
        c = self.config
        return self.pixel_geobox(
            (v - c.index_base) * c.tile_size, (h - c.index_base) * c.tile_size, c.tile_size, c.tile_size
        )

    # ---- chunks ----------------------------------------------------------------------------------------
    def chunk(self, row: int, col: int) -> Chunk:
        """The chunk at lattice position (row, col)."""
        c = self.config
        n_rows, n_cols = self.chunk_shape
        if not (0 <= row < n_rows and 0 <= col < n_cols):
            raise MisoError(f"chunk ({row}, {col}) is outside the chunk lattice ({n_rows} x {n_cols})")
        r0, c0 = row * c.chunk_size, col * c.chunk_size
        per_tile = c.tile_size // c.chunk_size
        tile = self.tile_id(col // per_tile + c.index_base, row // per_tile + c.index_base)
        return Chunk(
            row=row,
            col=col,
            geobox=self.pixel_geobox(r0, c0, c.chunk_size, c.chunk_size),
            halo_geobox=self.pixel_geobox(
                r0 - c.halo, c0 - c.halo, c.chunk_size + 2 * c.halo, c.chunk_size + 2 * c.halo
            ),
            tile=tile,
        )

    def chunk_by_id(self, chunk_id: str) -> Chunk:
        """The chunk with text id ``rNNNNcNNNN``."""
        m = re.fullmatch(r"r(\d+)c(\d+)", chunk_id)
        if not m:
            raise MisoError(f"{chunk_id!r} is not a chunk id (expected e.g. r0292c0492)")
        return self.chunk(int(m[1]), int(m[2]))

    def chunks_in(self, region: BaseGeometry) -> list[Chunk]:
        """Chunks whose interior intersects ``region`` (a geometry in grid CRS), in row-major order."""
        rows, cols = self._cells_in(region, self.config.chunk_size, self.chunk_shape)
        return [self.chunk(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]

    def iter_chunks(self, chunks: list[Chunk]) -> Iterator[Chunk]:
        """Iterate chunks tile by tile (all chunks of one tile before the next): keeps exports streaming."""
        yield from sorted(chunks, key=lambda ch: (self.parse_tile_id(ch.tile)[::-1], ch.row, ch.col))

    def tiles_geobox(self, chunks: list[Chunk]) -> GeoBox:
        """The union of ``chunks``' interiors snapped outwards to whole tiles: the extent of a map store."""
        if not chunks:
            raise MisoError("no chunks to make a store for")
        t, s = self.config.tile_size, self.config.chunk_size
        r0 = min(ch.row for ch in chunks) * s // t * t
        c0 = min(ch.col for ch in chunks) * s // t * t
        r1 = -(-(max(ch.row for ch in chunks) + 1) * s // t) * t
        c1 = -(-(max(ch.col for ch in chunks) + 1) * s // t) * t
        return self.geobox[r0:r1, c0:c1]

    def tile_ids(self, geobox: GeoBox) -> list[tuple[str, GeoBox]]:
        """(tile id, tile grid) of every tile of a whole-tile ``geobox`` (e.g. a store's), row-major.

        Raises :class:`MisoError` when ``geobox`` is not made of whole tiles of this grid.
        """
        c = self.config
        t = c.tile_size
        row0, col0 = self.offset(geobox)
        height, width = geobox.shape
        if row0 % t or col0 % t or height % t or width % t:
            raise MisoError(f"a {height} x {width} px grid at ({row0}, {col0}) is not whole {t} px tiles")
        return [
            (self.tile_id((col0 + k) // t + c.index_base, (row0 + r) // t + c.index_base), geobox[r:r + t, k:k + t])
            for r in range(0, height, t)
            for k in range(0, width, t)
        ]

    # ---- Zarr alignment --------------------------------------------------------------------------------
    def check_aligned(self, rows: slice, cols: slice) -> None:
        """Refuse a write region that is not a whole number of Zarr chunks of the full grid.

        Raises :class:`MisoError`: an unaligned write could overwrite pixels of a neighbouring task's chunk.
        """
        z = self.config.zarr_chunk
        n_rows, n_cols = self.shape
        for name, sl, limit in (("rows", rows, n_rows), ("cols", cols, n_cols)):
            start, stop = sl.start or 0, sl.stop if sl.stop is not None else limit
            if sl.step not in (None, 1) or start % z or (stop % z and stop != limit) or start >= stop:
                raise MisoError(
                    f"refusing an unaligned write: {name} {start}:{stop} is not a whole number of "
                    f"{z}-pixel Zarr chunks"
                )

    # ---- helpers ---------------------------------------------------------------------------------------
    def _cells_in(
        self, region: BaseGeometry, cell_px: int, lattice: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of the cells of a square lattice (``cell_px`` px) whose box intersects ``region``."""
        c = self.config
        size_m = cell_px * c.resolution
        xmin, ymin, xmax, ymax = region.bounds
        col0 = max(0, math.floor((xmin - c.origin_x) / size_m))
        col1 = min(lattice[1] - 1, math.floor((xmax - c.origin_x) / size_m))
        row0 = max(0, math.floor((c.origin_y - ymax) / size_m))
        row1 = min(lattice[0] - 1, math.floor((c.origin_y - ymin) / size_m))
        if col0 > col1 or row0 > row1:
            return np.empty(0, int), np.empty(0, int)
        rr, cc = np.meshgrid(np.arange(row0, row1 + 1), np.arange(col0, col1 + 1), indexing="ij")
        rr, cc = rr.ravel(), cc.ravel()
        x0 = c.origin_x + cc * size_m
        y0 = c.origin_y - rr * size_m
        boxes = shapely.box(x0, y0 - size_m, x0 + size_m, y0)
        shapely.prepare(region)
        # intersects() would also keep cells that only share an edge with the region; those have no pixel
        # in it, so require a positive-area overlap for polygons.
        hit = shapely.intersects(region, boxes) & ~shapely.touches(region, boxes)
        return rr[hit], cc[hit]


# ---- georeferencing as stored: the CF grid-mapping variable ``spatial_ref`` ---------------------------------
def spatial_ref_attrs(geobox: GeoBox) -> dict[str, Any]:
    """CF / GDAL attributes of the ``spatial_ref`` grid-mapping variable describing ``geobox``.

    ``crs_wkt`` and ``spatial_ref`` (WKT2), the CF projection parameters, and ``GeoTransform`` (GDAL's six
    numbers of the upper-left corner: x0, pixel width, 0, y0, 0, -pixel height) that
    :func:`geobox_from_spatial_ref` reads back exactly.
    """
    crs = CRS.from_user_input(geobox.crs)
    a = geobox.affine
    attrs: dict[str, Any] = {k: v for k, v in crs.to_cf().items() if isinstance(v, (str, int, float))}
    wkt = crs.to_wkt()
    attrs.update({"crs_wkt": wkt, "spatial_ref": wkt,
                  "GeoTransform": f"{a.c!r} {a.a!r} {a.b!r} {a.f!r} {a.d!r} {a.e!r}"})
    return attrs


def geobox_from_spatial_ref(attrs: Mapping[str, Any], shape: tuple[int, int]) -> GeoBox:
    """The GeoBox of a ``shape`` (rows, cols) array georeferenced by ``spatial_ref`` attributes.

    Raises :class:`MisoError` when the CRS or the ``GeoTransform`` is missing or unreadable.
    """
    try:
        crs = CRS.from_wkt(attrs.get("crs_wkt") or attrs["spatial_ref"])
        numbers = [float(v) for v in str(attrs["GeoTransform"]).split()]
        transform = Affine.from_gdal(*numbers)
    except (KeyError, TypeError, ValueError, CRSError) as exc:
        raise MisoError(f"the spatial_ref variable has no readable CRS and GeoTransform ({exc})") from None
    return GeoBox(shape, transform, crs)


def describe_geobox(geobox: GeoBox | None) -> str:
    """One line naming a grid: shape, upper-left corner, pixel size and CRS (or its absence)."""
    if geobox is None:
        return "no georeferencing"
    a = geobox.affine
    crs = geobox.crs
    name = "no CRS" if crs is None else f"EPSG:{crs.epsg}" if crs.epsg else crs.proj.name
    return (f"{geobox.shape.y} x {geobox.shape.x} px from x {a.c:.10g}, y {a.f:.10g}, "
            f"pixels {a.a:.10g} x {a.e:.10g}, {name}")
