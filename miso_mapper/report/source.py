"""What a report reads: the run manifest, the store (read-only) and decimated previews of its layers.

Every georeferenced thing is a GeoBox: a manifest chunk's grid is the workflow grid's chunk, the store's grid
comes from its own ``spatial_ref``, and a chunk is read from the store at its place there (offsets in the full
grid, :meth:`~miso_mapper.grid.AlaskaGrid.offset`). Coordinates are in the grid CRS (EPSG:3338 by default),
metres. The previews cover the bounding box of the chunks listed in the manifest (any status), not the
store's extent, which is snapped out to whole tiles and mostly no data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from odc.geo.geobox import GeoBox

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid, geobox_from_spatial_ref
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import ChunkRow, Manifest
from miso_mapper.pipeline.store import NODATA, PROB_SCALE

#: Longest side of a preview, pixels (the decimation factor is the smallest allowed one that fits).
MAX_PREVIEW_PX = 1200


@dataclass
class RunData:
    """A run as the report sees it: workflow, grid, manifest rows and meta, the store group (or None)."""

    workflow: Workflow
    grid: AlaskaGrid
    rows: list[ChunkRow]
    meta: dict[str, str]
    store: Any | None
    """The ``maps.zarr`` zarr group opened read-only, None when the store does not exist."""
    store_geobox: GeoBox | None = None
    """The store's grid, from its ``spatial_ref``; None without a store."""

    @property
    def chunk_size(self) -> int:
        """Processing chunk edge, pixels."""
        return self.grid.config.chunk_size

    def done(self) -> list[ChunkRow]:
        """Rows of the chunks whose write completed."""
        return [r for r in self.rows if r.status == "done"]

    def box(self) -> GeoBox:
        """The bounding grid of every manifest chunk: a slice of the full grid."""
        cs = self.chunk_size
        rows, cols = [r.row for r in self.rows], [r.col for r in self.rows]
        return self.grid.geobox[min(rows) * cs:(max(rows) + 1) * cs, min(cols) * cs:(max(cols) + 1) * cs]

    def chunk_geobox(self, row: ChunkRow) -> GeoBox:
        """The grid of a manifest chunk's interior."""
        return self.grid.chunk(row.row, row.col).geobox

    def chunk_bounds(self, row: ChunkRow) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of a manifest chunk, grid CRS metres."""
        box = self.chunk_geobox(row).boundingbox
        return box.left, box.bottom, box.right, box.top

    def store_slices(self, row: ChunkRow) -> tuple[slice, slice]:
        """Slices of the store arrays holding a manifest chunk's interior; :class:`MisoError` when the store's
        grid does not hold it (another grid, or the chunk lies outside)."""
        assert self.store_geobox is not None
        chunk = self.chunk_geobox(row)
        (r, c), (r0, c0) = self.grid.offset(chunk), self.grid.offset(self.store_geobox)
        (h, w), (height, width) = chunk.shape, self.store_geobox.shape
        if not (0 <= r - r0 <= height - h and 0 <= c - c0 <= width - w):
            raise MisoError(f"chunk {row.id} lies outside the store {RunLayout.of(self.workflow).store}")
        return slice(r - r0, r - r0 + h), slice(c - c0, c - c0 + w)


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
    store = geobox = None
    if layout.store.exists():
        try:
            store = zarr.open_group(str(layout.store), mode="r")
            attrs, shape = store["spatial_ref"].attrs, store["permafrost_probability"].shape
        except Exception as exc:  # noqa: BLE001 - any zarr/IO error: not a readable store
            raise MisoError(f"{layout.store} is not a readable Zarr store ({exc})") from None
        geobox = geobox_from_spatial_ref(attrs, shape)
    return RunData(workflow, AlaskaGrid(workflow.grid), rows, meta, store, geobox)


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
    geobox: GeoBox
    """The preview's grid: the manifest chunks' bounding grid zoomed out by ``factor``."""

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the preview in grid CRS metres (matplotlib ``imshow`` order)."""
        box = self.geobox.boundingbox
        return box.left, box.right, box.bottom, box.top


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
    grid = box.zoom_out(f)  # ceil(box / f) preview pixels: the last ones may reach past the box
    h, w = grid.shape
    row0, col0 = run.grid.offset(box)
    b = min(f, cs)  # block reduced inside one chunk
    n = cs // b
    pf_sum, pf_n = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    mp_sum, mp_n = np.zeros((h, w), np.int64), np.zeros((h, w), np.int64)
    counts = np.zeros((len(SOIL_ORDERS), h, w), np.int64)
    done = run.done()
    workers = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for row, sums in zip(done, pool.map(lambda r: _reduce_chunk(run, r, b), done), strict=True):
            r, c = run.grid.offset(run.chunk_geobox(row))
            i0, j0 = (r - row0) // f, (c - col0) // f
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
    return Preview(pf_mean, mode, mp_mean, f, grid)
