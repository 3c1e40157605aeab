"""What a report reads: the run manifest, the store (read-only) and decimated previews of its layers.

Pixel indices are (row, col) of the *full* grid (:class:`~miso_mapper.grid.AlaskaGrid`); coordinates are in
the grid CRS (EPSG:3338 by default), metres. The previews cover the bounding box of the chunks listed in the
manifest (any status), not the store's extent, which is snapped out to whole tiles and mostly no data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import ChunkRow, Manifest
from miso_mapper.pipeline.store import NODATA, PROB_SCALE

#: Longest side of a preview, pixels (the decimation factor is the smallest allowed one that fits).
MAX_PREVIEW_PX = 1200


@dataclass(frozen=True)
class PixelBox:
    """A box of whole chunks in full-grid pixels: rows ``row0:row1``, cols ``col0:col1``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols), pixels."""
        return self.row1 - self.row0, self.col1 - self.col0


@dataclass
class RunData:
    """A run as the report sees it: workflow, grid, manifest rows and meta, the store group (or None)."""

    workflow: Workflow
    grid: AlaskaGrid
    rows: list[ChunkRow]
    meta: dict[str, str]
    store: Any | None
    """The ``maps.zarr`` zarr group opened read-only, None when the store does not exist."""

    @property
    def chunk_size(self) -> int:
        """Processing chunk edge, pixels."""
        return self.grid.config.chunk_size

    def done(self) -> list[ChunkRow]:
        """Rows of the chunks whose write completed."""
        return [r for r in self.rows if r.status == "done"]

    def box(self) -> PixelBox:
        """Bounding box of every manifest chunk, full-grid pixels."""
        cs = self.chunk_size
        return PixelBox(min(r.row for r in self.rows) * cs, (max(r.row for r in self.rows) + 1) * cs,
                        min(r.col for r in self.rows) * cs, (max(r.col for r in self.rows) + 1) * cs)

    def chunk_bounds(self, row: ChunkRow) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a manifest chunk, grid CRS metres."""
        g = self.grid.config
        size = g.chunk_size * g.resolution
        xmin = g.origin_x + row.col * size
        ymax = g.origin_y - row.row * size
        return xmin, ymax - size, xmin + size, ymax

    def store_slices(self, row: ChunkRow) -> tuple[slice, slice]:
        """Slices of the store arrays holding a manifest chunk's interior."""
        assert self.store is not None
        cs = self.chunk_size
        r0 = row.row * cs - int(self.store.attrs["grid_row0"])
        c0 = row.col * cs - int(self.store.attrs["grid_col0"])
        return slice(r0, r0 + cs), slice(c0, c0 + cs)


def load_run(workflow: Workflow) -> RunData:
    """The manifest rows and meta and the store of a workflow's run.

    Raises :class:`MisoError` when there is no manifest (the workflow has not been run) or it has no chunk.
    """
    import zarr

    layout = RunLayout.of(workflow)
    path = layout.manifest
    if not path.is_file():
        raise MisoError(f"no run manifest at {path}: the workflow has not been run (miso-mapper run)")
    with Manifest(path) as manifest:
        rows = manifest.rows()
        meta = dict(manifest.db.execute("SELECT key, value FROM meta").fetchall())
    if not rows:
        raise MisoError(f"run manifest {path} lists no chunk")
    store = None
    if layout.store.exists():
        try:
            store = zarr.open_group(str(layout.store), mode="r")
        except Exception as exc:  # noqa: BLE001 - any zarr/IO error: not a readable store
            raise MisoError(f"{layout.store} is not a readable Zarr store ({exc})") from None
    return RunData(workflow, AlaskaGrid(workflow.grid), rows, meta, store)


def decimation_factor(shape: tuple[int, int], chunk_size: int, max_px: int = MAX_PREVIEW_PX) -> int:
    """Full-grid pixels per preview pixel (each axis): the smallest divisor or multiple of ``chunk_size`` that
    brings the longer side of ``shape`` (pixels) to at most ``max_px``.

    A divisor lets every chunk reduce on its own to whole preview pixels; a multiple adds whole chunks.
    """
    need = -(-max(shape) // max_px)
    divisors = [d for d in range(1, chunk_size + 1) if chunk_size % d == 0 and d >= need]
    return divisors[0] if divisors else -(-need // chunk_size) * chunk_size


@dataclass
class Preview:
    """Decimated layers of a run (block means / block modes over ``factor`` x ``factor`` pixels)."""

    permafrost: np.ndarray
    """(h, w) float32 mean permafrost probability in [0, 1], NaN = no data."""
    soil_order: np.ndarray
    """(h, w) uint8 most frequent soil order (index into SOIL_ORDERS), 255 = no data."""
    max_order_probability: np.ndarray
    """(h, w) float32 mean of the per-pixel largest order probability in [0, 1], NaN = no data."""
    factor: int
    """Full-grid pixels per preview pixel along each axis."""
    extent: tuple[float, float, float, float]
    """(xmin, xmax, ymin, ymax) of the preview in grid CRS metres (matplotlib ``imshow`` order)."""


def _block_sum(a: np.ndarray, b: int) -> np.ndarray:
    """Sum of ``b`` x ``b`` blocks of a square 2-D array whose side is a multiple of ``b``."""
    n = a.shape[0] // b
    return a.reshape(n, b, n, b).sum(axis=(1, 3), dtype=np.int64)  # no full-size int64 temporary


def _reduce_chunk(run: RunData, row: ChunkRow, b: int) -> tuple[np.ndarray, ...]:
    """Block sums over ``b`` x ``b`` pixels of one done chunk: permafrost sum and count, per-order class
    counts (7, n, n), largest-order-probability sum and count; stored uint8 units."""
    g = run.store
    assert g is not None
    lr, lc = run.store_slices(row)
    pf = np.asarray(g["permafrost_probability"][lr, lc])
    ok = pf != NODATA
    pf_sum, pf_n = _block_sum(np.where(ok, pf, 0), b), _block_sum(ok, b)
    cls = np.asarray(g["taxonomy_class"][lr, lc])
    counts = np.stack([_block_sum(cls == k, b) for k in range(len(SOIL_ORDERS))])
    tx_max = np.asarray(g["taxonomy_probability"][:, lr, lc]).max(axis=0)
    ok = tx_max != NODATA
    mp_sum, mp_n = _block_sum(np.where(ok, tx_max, 0), b), _block_sum(ok, b)
    return pf_sum, pf_n, counts, mp_sum, mp_n


def read_preview(run: RunData, max_px: int = MAX_PREVIEW_PX, threads: int | None = None) -> Preview:
    """Block-reduce the done chunks of a run into a preview of at most ~``max_px`` pixels on the long side.

    Chunks are read whole, one per thread (``threads``, default up to 4; Zarr decompression releases the
    GIL), so memory is a few chunks' layers plus the preview accumulators.
    Raises :class:`MisoError` when the run has no store.
    """
    from concurrent.futures import ThreadPoolExecutor

    if run.store is None:
        raise MisoError(f"no store at {RunLayout.of(run.workflow).store}: nothing to preview")
    box = run.box()
    cs = run.chunk_size
    f = decimation_factor(box.shape, cs, max_px)
    h, w = -(-box.shape[0] // f), -(-box.shape[1] // f)
    b = min(f, cs)  # block reduced inside one chunk
    n = cs // b
    pf_sum, pf_n = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    mp_sum, mp_n = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    counts = np.zeros((len(SOIL_ORDERS), h, w), np.int64)
    done = run.done()
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for row, sums in zip(done, pool.map(lambda r: _reduce_chunk(run, r, b), done), strict=True):
            i0, j0 = (row.row * cs - box.row0) // f, (row.col * cs - box.col0) // f
            win = (slice(i0, i0 + n), slice(j0, j0 + n))
            for acc, part in zip((pf_sum, pf_n), sums[:2], strict=True):
                acc[win] += part
            counts[:, win[0], win[1]] += sums[2]
            for acc, part in zip((mp_sum, mp_n), sums[3:], strict=True):
                acc[win] += part
    with np.errstate(invalid="ignore", divide="ignore"):
        pf_mean = np.where(pf_n > 0, pf_sum / pf_n / PROB_SCALE, np.nan).astype(np.float32)
        mp_mean = np.where(mp_n > 0, mp_sum / mp_n / PROB_SCALE, np.nan).astype(np.float32)
    mode = np.where(counts.sum(axis=0) > 0, counts.argmax(axis=0), NODATA).astype(np.uint8)
    gc = run.grid.config
    xmin = gc.origin_x + box.col0 * gc.resolution
    ymax = gc.origin_y - box.row0 * gc.resolution
    extent = (xmin, xmin + w * f * gc.resolution, ymax - h * f * gc.resolution, ymax)
    return Preview(pf_mean, mode, mp_mean, f, extent)
