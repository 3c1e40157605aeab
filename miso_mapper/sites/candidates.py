"""Candidate field sites: pixels of a lattice over the map store, scored, kept best-first.

The lattice is the full grid's (rows and columns ``k x lattice_px + lattice_px // 2``), so it does not move
with the store's extent. Only mapped pixels are candidates (permafrost probability or soil order has data).
The store is read one Zarr chunk at a time, skipping chunks never written, and only the best ``keep``
candidates are kept: :func:`exact_keep` says how many make the greedy choice of :mod:`.select` exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from miso_mapper.pipeline.store import NODATA, MapStore
from miso_mapper.sites.layers import CLASS_LAYER, SCALES, score

#: Called with (x, y) pixel-centre arrays (grid CRS metres); returns which candidates the constraints allow.
Accept = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: Called with a block's (xmin, ymin, xmax, ymax); False skips the block unread.
BlockFilter = Callable[[tuple[float, float, float, float]], bool]


@dataclass
class Candidates:
    """Scored candidate pixels: store row/col (int64), pixel-centre x/y (grid CRS metres), score (float64)
    and the stored uint8 value of every layer read (name -> array), all of one length."""

    rows: np.ndarray
    cols: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.score)

    def take(self, index: np.ndarray) -> Candidates:
        """The candidates at ``index`` (integer or boolean array), in its order."""
        return Candidates(self.rows[index], self.cols[index], self.x[index], self.y[index], self.score[index],
                          {k: v[index] for k, v in self.values.items()})

    def ranked(self) -> np.ndarray:
        """Indices from best to worst: score descending, ties by row then column (deterministic)."""
        return np.lexsort((self.cols, self.rows, -self.score))

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        """One set of the candidates of ``parts`` (which read the same layers)."""
        names = parts[0].values.keys()
        fields = ("rows", "cols", "x", "y", "score")
        return Candidates(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields),
                          values={k: np.concatenate([p.values[k] for p in parts]) for k in names})


def exact_keep(n: int, min_distance_m: float, spacing_m: float) -> int:
    """How many best candidates to keep so that greedy selection of ``n`` sites among them equals greedy
    selection among all.

    Every candidate ranked above the j-th site chosen was either chosen or lies within ``min_distance_m`` of
    an earlier site; one site excludes at most ``m = (2 floor(d / s) + 1)^2`` lattice points (those in the
    square around its disc), so the j-th site ranks at most ``n (m + 1)``.
    """
    half = math.floor(min_distance_m / spacing_m)
    return n * ((2 * half + 1) ** 2 + 1)


def scan_store(store: MapStore, lattice_px: int, keep: int, accept: Accept | None = None,
               block_filter: BlockFilter | None = None,
               progress: Callable[[int, int], None] | None = None) -> Candidates:
    """The ``keep`` best candidates of the store's written Zarr chunks (see the module doc).

    ``accept`` drops candidates the constraints forbid; ``block_filter`` skips blocks no candidate of which
    could be accepted; ``progress(done, total)`` is called after each block.
    """
    names = [name for name in (*SCALES, CLASS_LAYER) if name in store.group]
    z = store.grid.config.zarr_chunk
    ny, nx = store.geobox.shape
    blocks = [(i, j) for i in range(-(-ny // z)) for j in range(-(-nx // z))]
    best: Candidates | None = None
    for done, (i, j) in enumerate(blocks, 1):
        rows, cols = slice(i * z, min((i + 1) * z, ny)), slice(j * z, min((j + 1) * z, nx))
        if _written(store, (i, j)) and (block_filter is None or block_filter(_bounds(store, rows, cols))):
            found = _block(store, names, rows, cols, lattice_px, accept)
            if len(found):
                merged = found if best is None else Candidates.concat([best, found])
                best = merged.take(merged.ranked()[:keep])
        if progress is not None:
            progress(done, len(blocks))
    return _empty(names) if best is None else best


def _written(store: MapStore, index: tuple[int, int]) -> bool:
    """Whether the Zarr chunk ``index`` of the permafrost or the class layer has a file (was written)."""
    for name in ("permafrost_probability", CLASS_LAYER):
        key = store.group[name].metadata.encode_chunk_key(index)
        if (store.path / name / key).is_file():
            return True
    return False


def _bounds(store: MapStore, rows: slice, cols: slice) -> tuple[float, float, float, float]:
    box = store.geobox[rows, cols].boundingbox
    return box.left, box.bottom, box.right, box.top


def _lattice(start: int, stop: int, offset: int, step: int) -> np.ndarray:
    """Store indices in [start, stop) whose full-grid index (``offset`` + index) is ``step // 2`` mod ``step``."""
    first = start + (step // 2 - (offset + start)) % step
    return np.arange(first, stop, step)


def _block(store: MapStore, names: list[str], rows: slice, cols: slice, step: int,
           accept: Accept | None) -> Candidates:
    r = _lattice(rows.start, rows.stop, store.offset[0], step)
    c = _lattice(cols.start, cols.stop, store.offset[1], step)
    rr, cc = (a.ravel() for a in np.meshgrid(r, c, indexing="ij"))
    if not len(rr):
        return _empty(names)
    sl = (slice(int(r[0]), int(r[-1]) + 1, step), slice(int(c[0]), int(c[-1]) + 1, step))
    values = {name: np.asarray(store.group[name][sl]).ravel() for name in names}
    mapped = (values["permafrost_probability"] != NODATA) | (values[CLASS_LAYER] != NODATA)
    x, y = store.geobox.affine * (cc + 0.5, rr + 0.5)
    ok = mapped if accept is None else mapped & accept(np.asarray(x), np.asarray(y))
    values = {k: v[ok] for k, v in values.items()}
    return Candidates(rr[ok], cc[ok], np.asarray(x)[ok], np.asarray(y)[ok], score(values), values)


def _empty(names: list[str]) -> Candidates:
    return Candidates(*(np.zeros(0, t) for t in (np.int64, np.int64, float, float, float)),
                      values={k: np.zeros(0, np.uint8) for k in names})
