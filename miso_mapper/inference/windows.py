"""Where the model's windows go on a chunk's halo grid, which points each one answers for, and with what weight.

Pure geometry (numpy only), so it can be tested exhaustively without a network.

A layout answers on an **output lattice**: along each axis the points ``lo + k * step`` (``k = 0..K``) of the
halo grid, where ``[lo, hi)`` is the chunk's interior. With ``step = 1`` the lattice is the interior itself
(``K = hi - lo - 1``); with ``step > 1`` it runs one point past the interior when needed
(``K = ceil((hi - lo - 1) / step)``, so ``lo + K * step >= hi - 1``) and the map between lattice points is
bilinear (:func:`interpolate_lattice`). When ``step`` divides the chunk size, the last lattice point of one
chunk is the first of the next and both compute it from the same windows: no seam at chunk edges.

Two layouts:

* **ensemble** (:meth:`WindowLayout.ensemble`, the default of :class:`~miso_mapper.inference.miso.MisoPredictor`):
  windows centred on the lattice ``lo + j * stride`` (all integers ``j``), the same window positions as the
  reference's demo loop when the halo is ``window / 2`` modulo ``stride``. Each window answers for the
  lattice points within ``support`` px of its centre along both axes, with the reference's mask times a
  **taper** that is 1 up to ``support - ramp`` px from the centre and falls to exactly 0 at ``support`` as a
  raised cosine (:func:`taper`). So a point is the weighted mean of about ``(2 support / stride)**2`` windows,
  like the reference's ``(window / stride)**2 = 25`` but with the far windows (the least weighted there)
  left out, and every weight goes to zero continuously: no seam where a window starts or stops counting.
  Queries per interior pixel: about ``(2 support / (stride * step))**2``.
* **reference** (:meth:`WindowLayout.reference`): windows at ``0, stride, 2 stride, ...`` of the halo grid
  while they fit (``(size - window) // stride + 1`` of them, as the reference's ``MISO/demo.py``), each queried
  on every pixel, weight = the mask. If that leaves pixels at the far edge uncovered, one last window flush
  with the edge is added (the reference would leave them empty); with ``(size - window) % stride == 0``
  nothing is added. Windows that do not reach the interior are dropped (they cannot change it).

Multi-rate queries: a stage evaluated every ``s`` px (``s`` a divisor of the stride) uses the chunk's
**stage lattice** ``lo + m * s``; each window evaluates it at the stage points from the last one at or before
its first queried pixel to the first at or after its last (:class:`StageAxis`, :meth:`Window.stage_grid`), and
its queried points interpolate between them. Neighbouring chunks (origins a multiple of the stride apart)
share these points too.

The weight of a window at one of its queried points is ``mask[row, col] * taper_row * taper_col``
(:meth:`Window.weights`; the tapers are 1 in reference mode). The map at a lattice point is
``sum(weight * probability) / sum(weight)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

BlendKind = Literal["hann", "cosine", "gaussian"]


@dataclass(frozen=True)
class AxisSpan:
    """One window's extent along one axis, in halo-grid pixel indices.

    The window covers ``[start, start + window)`` and is queried at ``count`` pixels ``q0, q0 + step, ...``
    (all on the output lattice); ``taper`` ``(count,)`` float64 is its weight factor at each of them.
    """

    start: int
    q0: int
    count: int
    step: int
    taper: np.ndarray

    @property
    def q_last(self) -> int:
        """The last queried pixel."""
        return self.q0 + (self.count - 1) * self.step

    def local(self) -> slice:
        """The queried pixels as window-relative indices."""
        return slice(self.q0 - self.start, self.q_last - self.start + 1, self.step)


def taper(distance: np.ndarray, support: float, ramp: float) -> np.ndarray:
    """Weight factor of a window at ``distance`` px from its centre, float64 in ``[0, 1]``.

    1 up to ``support - ramp``, then ``cos²`` falling to exactly 0 at ``support`` and beyond, so a window's
    weight reaches 0 continuously and no step shows where it stops counting. ``ramp = 0`` is a hard cut
    (steps in the map).
    """
    d = np.abs(np.asarray(distance, dtype=np.float64))
    if ramp <= 0:
        return (d < support).astype(np.float64)
    t = np.clip((d - (support - ramp)) / ramp, 0.0, 1.0)
    return np.where(t >= 1.0, 0.0, np.cos(0.5 * np.pi * t) ** 2)


@dataclass(frozen=True)
class LatticeAxis:
    """The output lattice along one axis: points ``lo + k * step``, ``k = 0..n_points - 1``, covering
    ``[lo, hi)`` (see the module docstring)."""

    lo: int
    hi: int
    step: int

    @property
    def n_points(self) -> int:
        """Number of lattice points."""
        return math.ceil((self.hi - self.lo - 1) / self.step) + 1

    @property
    def last(self) -> int:
        """The last lattice point (``>= hi - 1``)."""
        return self.lo + (self.n_points - 1) * self.step

    def index_range(self, first: int, last: int) -> tuple[int, int]:
        """Lattice indices ``[k0, k1)`` of the points in the pixel range ``[first, last]`` (clipped)."""
        k0 = max(0, -(-(first - self.lo) // self.step))
        k1 = min(self.n_points, (last - self.lo) // self.step + 1)
        return k0, max(k0, k1)


def ensemble_axis(size: int, lattice: LatticeAxis, window: int, stride: int, support: int,
                  ramp: int) -> list[AxisSpan]:
    """Ensemble layout along one axis (see the module docstring).

    Windows are centred on ``lattice.lo + j * stride`` for every ``j`` whose window answers for at least one
    lattice point (``|point - centre| < support``); a window's first pixel is ``centre - window // 2`` (the
    peak of the reference's Gaussian mask sits on the centre). Raises ``ValueError`` naming the halo needed
    when a window does not fit in the halo grid of ``size`` px.
    """
    _check_axis(size, lattice.lo, lattice.hi, window)
    first, last = lattice.lo, lattice.last
    j_lo = math.floor((first - support - lattice.lo) / stride) + 1
    j_hi = math.ceil((last + support - lattice.lo) / stride) - 1
    spans: list[AxisSpan] = []
    for j in range(j_lo, j_hi + 1):
        centre = lattice.lo + j * stride
        k0, k1 = lattice.index_range(centre - support + 1, centre + support - 1)
        if k1 <= k0:
            continue
        points = lattice.lo + lattice.step * np.arange(k0, k1)
        weight = taper(points - centre, support, ramp)
        keep = np.nonzero(weight > 0)[0]
        if keep.size == 0:
            continue
        points, weight = points[keep[0]:keep[-1] + 1], weight[keep[0]:keep[-1] + 1]
        spans.append(AxisSpan(centre - window // 2, int(points[0]), len(points), lattice.step, weight))
    need = max(lattice.lo - spans[0].start, spans[-1].start + window - lattice.hi)
    if need > min(lattice.lo, size - lattice.hi):
        raise ValueError(f"the windows do not fit in the halo: this layout (window {window}, stride {stride}, "
                         f"support {support}) needs a halo of at least {need} px for a {lattice.hi - lattice.lo} "
                         f"px chunk ({required_halo(window, stride, support)} px when the chunk is a multiple "
                         f"of the stride)")
    return spans


def required_halo(window: int, stride: int, support: int) -> int:
    """Halo in px that :func:`ensemble_axis` needs on every side of a chunk whose size is a multiple of
    ``stride``: the farthest window centre outside the chunk that still answers for it (``stride`` times
    ``ceil(support / stride) - 1``) plus the ``window - window // 2`` px from a window's centre to its far edge."""
    return window - window // 2 + stride * (math.ceil(support / stride) - 1)


def reference_axis(size: int, lo: int, hi: int, window: int, stride: int) -> list[AxisSpan]:
    """Reference layout along one axis: windows at multiples of ``stride``, every pixel queried, taper 1.

    Windows that do not reach the interior ``[lo, hi)`` are dropped (they cannot change it).
    """
    _check_axis(size, lo, hi, window)
    starts = list(range(0, (size - window) // stride * stride + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return [AxisSpan(s, s, window, 1, np.ones(window, dtype=np.float64)) for s in starts if s < hi and s + window > lo]


def _check_axis(size: int, lo: int, hi: int, window: int) -> None:
    if not 0 <= lo < hi <= size:
        raise ValueError(f"interior [{lo}, {hi}) is empty or outside the grid of {size} px")
    if size < window:
        raise ValueError(f"the halo grid ({size} px) is smaller than one window ({window} px)")


def blend_mask(window: int, kind: BlendKind, sigma_fraction: float = 0.25) -> np.ndarray:
    """Blending mask over a ``(window, window)`` window, float64, maximum 1.

    * ``gaussian``: the reference's mask, a unit impulse at pixel ``(window // 2, window // 2)`` smoothed by
      :func:`scipy.ndimage.gaussian_filter` with ``sigma = sigma_fraction * window`` (as ``MISO/demo.py``),
      rescaled to maximum 1 (the scale cancels in the weighted mean).
    * ``hann``: separable ``sin²(pi (i + 0.5) / window)`` (never exactly 0 on a pixel).
    * ``cosine``: separable ``sin(pi (i + 0.5) / window)``.
    """
    if kind == "gaussian":
        delta = np.zeros((window, window))
        delta[window // 2, window // 2] = 1.0
        from scipy.ndimage import gaussian_filter  # here: loading the workflow config needs no scipy

        mask = gaussian_filter(delta, sigma=window * sigma_fraction)
        return mask / mask.max()
    s = np.sin(np.pi * (np.arange(window) + 0.5) / window)
    if kind == "hann":
        s = s**2
    elif kind != "cosine":
        raise ValueError(f"unknown blend {kind!r}; choose hann, cosine or gaussian")
    return np.outer(s, s)


@dataclass(frozen=True)
class StageAxis:
    """Where one encoder stage is evaluated along one axis of a window (multi-rate queries), and how its values
    reach the window's queried points.

    The stage is evaluated at ``count`` pixels ``g0, g0 + spacing, ...`` of the halo grid: the points of the
    chunk's stage lattice ``lo + m * spacing`` from the last one at or before the window's first queried pixel
    to the first one at or after its last. The window's ``n`` queried pixels are ``g0 + offset + k * step``.
    """

    g0: int
    count: int
    spacing: int
    offset: int
    step: int
    n: int

    def interpolation(self) -> tuple[np.ndarray, np.ndarray]:
        """Per queried pixel ``k``: the stage point ``index[k]`` at or before it ``(n,)`` int64 and the linear
        weight ``frac[k]`` ``(n,)`` float64 of point ``index[k] + 1`` (``1 - frac`` of ``index``); ``frac`` is 0
        on stage points, where ``index + 1`` is clipped to the last point."""
        off = self.offset + self.step * np.arange(self.n)
        return np.minimum(off // self.spacing, self.count - 1), (off % self.spacing) / self.spacing

    def neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 2)`` int64 stage-point indices ``[index, index + 1]`` (clipped) and ``(n, 2)`` float64 weights
        ``[1 - frac, frac]`` of each queried pixel."""
        index, frac = self.interpolation()
        return (np.stack([index, np.minimum(index + 1, self.count - 1)], axis=1),
                np.stack([1 - frac, frac], axis=1))


def stage_axis(span: AxisSpan, lo: int, spacing: int) -> StageAxis:
    """The stage lattice of ``spacing`` px (anchored at the interior's first pixel ``lo``, so a neighbouring
    chunk whose origin is a multiple of ``spacing`` away uses the same points) that covers ``span``'s queried
    pixels (see :class:`StageAxis`)."""
    if spacing < 1:
        raise ValueError(f"a stage spacing must be >= 1 px, got {spacing}")
    g0 = lo + math.floor((span.q0 - lo) / spacing) * spacing
    last = lo + math.ceil((span.q_last - lo) / spacing) * spacing
    return StageAxis(g0, (last - g0) // spacing + 1, spacing, span.q0 - g0, span.step, span.count)


@dataclass(frozen=True)
class Window:
    """One window of a layout: :class:`AxisSpan` ``rows`` and ``cols``. Its queried points are the grid
    ``rows.q0 + i * step`` x ``cols.q0 + j * step`` of the halo grid."""

    rows: AxisSpan
    cols: AxisSpan

    @property
    def row0(self) -> int:
        """First row of the window in the halo grid."""
        return self.rows.start

    @property
    def col0(self) -> int:
        """First column of the window in the halo grid."""
        return self.cols.start

    @property
    def query_shape(self) -> tuple[int, int]:
        """(rows, cols) of queried points."""
        return self.rows.count, self.cols.count

    def local_slices(self) -> tuple[slice, slice]:
        """The queried points in window-relative pixel indices (strided when the lattice step is > 1)."""
        return self.rows.local(), self.cols.local()

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """Weights ``(rows, cols)`` float64 of the queried points: ``mask`` there times both tapers."""
        return mask[self.local_slices()] * np.outer(self.rows.taper, self.cols.taper)

    def stage_grid(self, lattice: tuple[LatticeAxis, LatticeAxis], spacing: int) -> tuple[StageAxis, StageAxis]:
        """(rows, cols) :class:`StageAxis` of a stage evaluated every ``spacing`` px for this window, on the
        stage lattice anchored at the output ``lattice``'s first points."""
        return stage_axis(self.rows, lattice[0].lo, spacing), stage_axis(self.cols, lattice[1].lo, spacing)


@dataclass(frozen=True)
class WindowLayout:
    """All windows for one chunk: the halo grid's shape, the interior, the output lattice and the windows.

    Build with :meth:`ensemble` or :meth:`reference`.
    """

    shape: tuple[int, int]
    interior: tuple[slice, slice]
    window: int
    lattice: tuple[LatticeAxis, LatticeAxis]
    windows: tuple[Window, ...]

    @classmethod
    def ensemble(cls, shape: tuple[int, int], interior: tuple[slice, slice], window: int, stride: int,
                 support: int, ramp: int, step: int = 1) -> WindowLayout:
        """The ensemble layout (see the module docstring) on a halo grid of ``shape`` (rows, cols)."""
        if step < 1:
            raise ValueError(f"the lattice step must be >= 1 px, got {step}")
        (r0, r1), (c0, c1) = _bounds(shape, interior)
        lat = (LatticeAxis(r0, r1, step), LatticeAxis(c0, c1, step))
        rows = ensemble_axis(shape[0], lat[0], window, stride, support, ramp)
        cols = ensemble_axis(shape[1], lat[1], window, stride, support, ramp)
        return cls(shape, (slice(r0, r1), slice(c0, c1)), window, lat, tuple(Window(r, c) for r in rows for c in cols))

    @classmethod
    def reference(cls, shape: tuple[int, int], interior: tuple[slice, slice], window: int,
                  stride: int) -> WindowLayout:
        """The reference layout (windows at multiples of ``stride``, every pixel queried)."""
        (r0, r1), (c0, c1) = _bounds(shape, interior)
        rows = reference_axis(shape[0], r0, r1, window, stride)
        cols = reference_axis(shape[1], c0, c1, window, stride)
        lat = (LatticeAxis(r0, r1, 1), LatticeAxis(c0, c1, 1))
        return cls(shape, (slice(r0, r1), slice(c0, c1)), window, lat, tuple(Window(r, c) for r in rows for c in cols))

    @property
    def interior_shape(self) -> tuple[int, int]:
        """(rows, cols) of the interior."""
        return (self.interior[0].stop - self.interior[0].start, self.interior[1].stop - self.interior[1].start)

    @property
    def lattice_shape(self) -> tuple[int, int]:
        """(rows, cols) of the output lattice (the interior's shape when the step is 1)."""
        return self.lattice[0].n_points, self.lattice[1].n_points

    def weight_sum(self, mask: np.ndarray) -> np.ndarray:
        """Summed weights of all windows on the output lattice, ``lattice_shape`` float64."""
        out = np.zeros(self.lattice_shape, dtype=np.float64)
        for w, (dst, src) in zip(self.windows, self.lattice_overlaps(), strict=True):
            out[dst] += w.weights(mask)[src]
        return out

    def queries_per_pixel(self) -> float:
        """Queried points of all windows divided by interior pixels."""
        total = sum(w.query_shape[0] * w.query_shape[1] for w in self.windows)
        rows, cols = self.interior_shape
        return total / (rows * cols)

    def stage_points(self, spacing: int) -> int:
        """Points at which all windows together evaluate a stage queried every ``spacing`` px: the queried
        points themselves when ``spacing`` is not coarser than the lattice step, else each window's stage
        lattice (:meth:`Window.stage_grid`)."""
        if spacing <= self.lattice[0].step:
            return sum(w.query_shape[0] * w.query_shape[1] for w in self.windows)
        total = 0
        for w in self.windows:
            rows, cols = w.stage_grid(self.lattice, spacing)
            total += rows.count * cols.count
        return total

    def lattice_overlaps(self) -> Iterator[tuple[tuple[slice, slice], tuple[slice, slice]]]:
        """Per window: (slices into the output lattice, slices into its queried points) of their overlap."""
        for w in self.windows:
            pair = [_overlap(span, lat) for span, lat in zip((w.rows, w.cols), self.lattice, strict=True)]
            yield (pair[0][0], pair[1][0]), (pair[0][1], pair[1][1])

    def reach(self, w: Window) -> tuple[slice, slice]:
        """Interior pixels (slices into the interior) whose value can depend on window ``w``: its queried
        points widened by one lattice step less one pixel (bilinear reach), clipped to the interior."""
        out = []
        for span, lat in zip((w.rows, w.cols), self.lattice, strict=True):
            a = max(span.q0 - lat.step + 1, lat.lo)
            b = min(span.q_last + lat.step, lat.hi)
            out.append(slice(a - lat.lo, max(a, b) - lat.lo))
        return out[0], out[1]


def _overlap(span: AxisSpan, lat: LatticeAxis) -> tuple[slice, slice]:
    """(lattice indices, query indices) where ``span``'s points fall on the lattice ``lat``."""
    if span.step != lat.step or (span.q0 - lat.lo) % lat.step:
        raise ValueError("a window's queried points are not on the output lattice")
    k_first = (span.q0 - lat.lo) // lat.step
    k0, k1 = max(0, k_first), min(lat.n_points, k_first + span.count)
    k1 = max(k0, k1)
    return slice(k0, k1), slice(k0 - k_first, k1 - k_first)


def interpolation_weights(lat: LatticeAxis) -> tuple[np.ndarray, np.ndarray]:
    """For each interior pixel ``lo..hi-1``: the lattice index ``k`` at or before it ``(n,)`` int64 and the
    linear weight ``f`` ``(n,)`` float64 of point ``k + 1`` (``1 - f`` of point ``k``); ``f = 0`` on lattice
    points, where ``k + 1`` may be one past the lattice (callers clip it)."""
    off = np.arange(lat.hi - lat.lo)
    k = off // lat.step
    f = (off % lat.step) / lat.step
    return k, f


def interpolate_lattice(values: np.ndarray, layout: WindowLayout) -> np.ndarray:
    """Bilinear map ``(C, rows, cols)`` over the interior from ``values`` ``(C, *layout.lattice_shape)``.

    Exact on lattice points; NaN at a lattice point spreads to the pixels that use it.
    """
    out = values
    for axis, lat in ((1, layout.lattice[0]), (2, layout.lattice[1])):
        if lat.step == 1:
            continue
        k, f = interpolation_weights(lat)
        k1 = np.minimum(k + 1, lat.n_points - 1)
        a, b = np.take(out, k, axis=axis), np.take(out, k1, axis=axis)
        shape = [1, 1, 1]
        shape[axis] = -1
        f = f.reshape(shape).astype(out.dtype)
        out = a * (1 - f) + np.where(f > 0, b, 0) * f
    return out


def _bounds(shape: tuple[int, int], interior: tuple[slice, slice]) -> tuple[tuple[int, int], tuple[int, int]]:
    out = []
    for n, s in zip(shape, interior, strict=True):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("interior slices must have step 1")
        out.append((start, stop))
    return out[0], out[1]
