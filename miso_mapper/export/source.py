"""Read-only access to ``maps.zarr`` for the export: its grid, its tiles, which of them hold data, block reads.

The store's georeferencing is its own ``spatial_ref`` variable (``crs_wkt`` and GDAL's ``GeoTransform``): the
store's GeoBox comes from it and every tile's GeoBox is a slice of that, so the products are georeferenced
exactly as the store is. The workflow's grid names the tiles and decides whether the store can be exported:

* a store on the workflow grid's pixel lattice (same CRS and pixel size, upper-left corner a whole number of
  tiles from the grid origin, inside the grid) is *followed* wherever it lies: tile ids come from its place in
  the grid, the products' georeferencing from its ``spatial_ref``;
* any other store (another CRS or pixel size, a fraction-of-a-pixel shift, not whole tiles) is *refused* with
  a :class:`MisoError` naming both grids: its pixels are not the grid's pixels, so no tile id would be true.

The store is opened read-only (``zarr.open_group(mode="r")``), so an export never changes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr
from odc.geo.geobox import GeoBox

from miso_mapper.config import GridConfig
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid, describe_geobox, geobox_from_spatial_ref
from miso_mapper.pipeline.store import CORE_LAYERS, NODATA, read_decision_threshold
from miso_mapper.pipeline.store import LAYERS as STORE_LAYERS


def open_group(path: Path) -> Any:
    """The store's Zarr group, read-only; :class:`MisoError` if it is missing, unreadable or not ours."""
    if not path.exists():
        raise MisoError(f"no map store at {path}: run `miso-mapper run` first")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        shapes = {name: group[name].shape for name in STORE_LAYERS if name in CORE_LAYERS or name in group}
        has_spatial_ref = "spatial_ref" in group
    except Exception as exc:  # noqa: BLE001 - any zarr/JSON/IO error means the store is unusable
        raise MisoError(f"{path} is not a readable map store ({type(exc).__name__}: {exc})") from None
    if "store_uuid" not in attrs or not has_spatial_ref:
        raise MisoError(f"{path} was not made by miso-mapper (no store_uuid attribute or spatial_ref variable)")
    pf, tx, cls = (shapes[name] for name in CORE_LAYERS)
    if len(pf) != 2 or cls != pf or len(tx) != 3 or tx[1:] != pf or any(
            shapes[name] != pf for name in shapes if name not in CORE_LAYERS):
        raise MisoError(f"{path}: inconsistent layer shapes {shapes}")
    return group


def store_geobox(group: Any, path: Path) -> GeoBox:
    """The grid of a store's layers, from its ``spatial_ref``; :class:`MisoError` when that is unreadable."""
    try:
        return geobox_from_spatial_ref(group["spatial_ref"].attrs, group["permafrost_probability"].shape)
    except MisoError as exc:
        raise MisoError(f"{path}: {exc}") from None


class StoreReader:
    """A map store opened for export: attributes, GeoBox, tiles (id -> GeoBox) and block reads."""

    def __init__(self, path: Path, grid: GridConfig) -> None:
        self.path = Path(path)
        self.grid = AlaskaGrid(grid)
        self.group = open_group(self.path)
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        self.geobox: GeoBox = store_geobox(self.group, self.path)
        """The store's grid, from its ``spatial_ref``."""
        try:
            self.origin = self._place_in_grid()
            """(row, col) of the store's upper-left pixel in the workflow's full grid."""
            self.tiles: dict[str, GeoBox] = dict(self.grid.tile_ids(self.geobox))
            """Every tile of the store, row-major (north to south, west to east): id -> the tile's grid."""
        except MisoError as exc:
            raise MisoError(f"{self.path}: the store's grid ({describe_geobox(self.geobox)}) is not on the workflow's "
                            f"grid ({describe_geobox(self.grid.geobox)}): {exc}; export it with the workflow that "
                            "made it") from None
        self.decision_threshold = read_decision_threshold(self.group["permafrost_probability"].attrs,
                                                          f"{self.path}/permafrost_probability")
        """P(permafrost) from which the map's class is permafrost (the attribute ``run`` recorded; 0.5 if none)."""
        if int(self.attrs.get("zarr_chunk", -1)) != grid.zarr_chunk:
            raise MisoError(f"{self.path} uses {self.attrs.get('zarr_chunk')} px Zarr chunks, the grid "
                            f"{grid.zarr_chunk} px: export it with the workflow that made it")

    def _place_in_grid(self) -> tuple[int, int]:
        """The store's offset in the full grid; :class:`MisoError` when off its lattice or past its edges."""
        row0, col0 = self.grid.offset(self.geobox)
        (height, width), (rows, cols) = self.geobox.shape, self.grid.shape
        if row0 < 0 or col0 < 0 or row0 + height > rows or col0 + width > cols:
            raise MisoError(f"it reaches past the grid's {rows} x {cols} px")
        return row0, col0

    @property
    def uuid(self) -> str:
        """The store's random id (fixed at creation)."""
        return str(self.attrs["store_uuid"])

    def slices(self, geobox: GeoBox) -> tuple[slice, slice]:
        """(rows, cols) of the store arrays under ``geobox``, a sub-grid of the store (e.g. a tile's)."""
        row, col = self.grid.offset(geobox)
        r0, c0 = row - self.origin[0], col - self.origin[1]
        (height, width), (rows, cols) = geobox.shape, self.geobox.shape
        if r0 < 0 or c0 < 0 or r0 + height > rows or c0 + width > cols:
            raise MisoError(f"a {height} x {width} px grid at ({row}, {col}) lies outside the store {self.path}")
        return slice(r0, r0 + height), slice(c0, c0 + width)

    def cover(self, geoboxes: list[GeoBox]) -> GeoBox:
        """The smallest sub-grid of the store that holds every one of ``geoboxes`` (sub-grids of the store)."""
        windows = [self.slices(g) for g in geoboxes]
        r0, r1 = min(r.start for r, _ in windows), max(r.stop for r, _ in windows)
        c0, c1 = min(c.start for _, c in windows), max(c.stop for _, c in windows)
        return self.geobox[r0:r1, c0:c1]

    def has_data(self, geobox: GeoBox) -> bool:
        """Whether any Zarr chunk under ``geobox`` was written, in any layer (unwritten chunks are absent files).

        ``geobox`` must be whole Zarr chunks of the store (a tile is).
        """
        z = self.grid.config.zarr_chunk
        rows, cols = self.slices(geobox)
        for name in [n for n in STORE_LAYERS if n in self.group]:
            arr = self.group[name]
            lead = (0,) * (arr.ndim - 2)
            for i in range(rows.start // z, rows.stop // z):
                for j in range(cols.start // z, cols.stop // z):
                    if (self.path / name / arr.metadata.encode_chunk_key((*lead, i, j))).exists():
                        return True
        return False

    def read(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        """uint8 block of layer ``name`` at store rows/cols: (y, x), or (class, y, x) for taxonomy_probability; all
        no data for an extra layer the store lacks (made before it existed)."""
        if name not in CORE_LAYERS and name not in self.group:
            return np.full((rows.stop - rows.start, cols.stop - cols.start), NODATA, np.uint8)
        arr = self.group[name]
        try:
            block = arr[:, rows, cols] if arr.ndim == 3 else arr[rows, cols]
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk must name where it is
            raise MisoError(f"{self.path}/{name}: cannot read rows {rows.start}:{rows.stop} cols "
                            f"{cols.start}:{cols.stop} ({type(exc).__name__}: {exc})") from None
        return np.asarray(block, dtype=np.uint8)
