"""Read-only access to ``maps.zarr`` for the export: extent, tiles that hold data, Zarr-chunk-aligned blocks.

The store is opened read-only (``zarr.open_group(mode="r")``), so an export never changes it. Pixel indices
here are store-local (row, col) unless named ``grid_*``; tiles are whole by construction of the store extent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from affine import Affine

from miso_mapper.config import GridConfig
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.pipeline.store import LAYERS as STORE_LAYERS
from miso_mapper.pipeline.store import StoreExtent


@dataclass(frozen=True)
class TileWindow:
    """A tile's place in the store: store-local upper-left (row, col) and edge ``size`` px."""

    tile: str
    row: int
    col: int
    size: int


def open_group(path: Path) -> Any:
    """The store's Zarr group, read-only; :class:`MisoError` if it is missing, unreadable or not ours."""
    if not path.exists():
        raise MisoError(f"no map store at {path}: run `miso-mapper run` first")
    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
        shapes = {name: group[name].shape for name in STORE_LAYERS}
    except Exception as exc:  # noqa: BLE001 - any zarr/JSON/IO error means the store is unusable
        raise MisoError(f"{path} is not a readable map store ({type(exc).__name__}: {exc})") from None
    if "store_uuid" not in attrs or "grid_row0" not in attrs:
        raise MisoError(f"{path} was not made by miso-mapper (no store_uuid / grid_row0 attributes)")
    pf, tx, cls = (shapes[name] for name in STORE_LAYERS)
    if len(pf) != 2 or cls != pf or len(tx) != 3 or tx[1:] != pf:
        raise MisoError(f"{path}: inconsistent layer shapes {pf}, {tx}, {cls}")
    return group


class StoreReader:
    """A map store opened for export: its attributes, extent, tiles and block reads."""

    def __init__(self, path: Path, grid: GridConfig) -> None:
        self.path = Path(path)
        self.grid = AlaskaGrid(grid)
        self.group = open_group(self.path)
        self.attrs: dict[str, Any] = dict(self.group.attrs)
        height, width = self.group["permafrost_probability"].shape
        self.extent = StoreExtent(int(self.attrs["grid_row0"]), int(self.attrs["grid_col0"]), height, width)
        t = grid.tile_size
        if self.extent.row0 % t or self.extent.col0 % t or height % t or width % t:
            raise MisoError(f"{self.path}: extent {self.extent} is not whole {t} px tiles of this grid")
        if int(self.attrs.get("zarr_chunk", -1)) != grid.zarr_chunk:
            raise MisoError(f"{self.path} uses {self.attrs.get('zarr_chunk')} px Zarr chunks, the grid "
                            f"{grid.zarr_chunk} px: export it with the workflow that made it")

    @property
    def uuid(self) -> str:
        """The store's random id (fixed at creation)."""
        return str(self.attrs["store_uuid"])

    def transform(self, row: int = 0, col: int = 0) -> Affine:
        """Affine of the store-local pixel (row, col)'s upper-left corner, grid CRS (metres)."""
        return self.grid.transform * Affine.translation(self.extent.col0 + col, self.extent.row0 + row)

    def tiles(self) -> list[TileWindow]:
        """Every tile of the store extent, row-major (north to south, west to east)."""
        c = self.grid.config
        t = c.tile_size
        out = []
        for r in range(0, self.extent.height, t):
            for k in range(0, self.extent.width, t):
                h = (self.extent.col0 + k) // t + c.index_base
                v = (self.extent.row0 + r) // t + c.index_base
                out.append(TileWindow(self.grid.tile_id(h, v), r, k, t))
        return out

    def has_data(self, tile: TileWindow) -> bool:
        """Whether any Zarr chunk of the tile was written, in any layer (unwritten chunks are absent files)."""
        z = self.grid.config.zarr_chunk
        for name in STORE_LAYERS:
            arr = self.group[name]
            lead = (0,) * (arr.ndim - 2)
            for i in range(tile.row // z, (tile.row + tile.size) // z):
                for j in range(tile.col // z, (tile.col + tile.size) // z):
                    if (self.path / name / arr.metadata.encode_chunk_key((*lead, i, j))).exists():
                        return True
        return False

    def read(self, name: str, rows: slice, cols: slice) -> np.ndarray:
        """uint8 block of layer ``name``: (y, x), or (class, y, x) for taxonomy_probability."""
        arr = self.group[name]
        try:
            block = arr[:, rows, cols] if arr.ndim == 3 else arr[rows, cols]
        except Exception as exc:  # noqa: BLE001 - a corrupt chunk must name where it is
            raise MisoError(f"{self.path}/{name}: cannot read rows {rows.start}:{rows.stop} cols "
                            f"{cols.start}:{cols.stop} ({type(exc).__name__}: {exc})") from None
        return np.asarray(block, dtype=np.uint8)
