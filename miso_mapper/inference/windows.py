"""Where the model's windows go on a chunk's halo grid, which pixels each one answers for, and with what weight.

Pure geometry (numpy only), so it can be tested exhaustively without a network.

Two layouts, both on the halo grid of a chunk (``size`` rows or columns, interior ``[lo, hi)``):

* **fast** (:func:`fast_axis`, the default of :class:`~miso_mapper.inference.miso.MisoPredictor`): along each
  axis, ``K + 1`` windows centred on ``lo + round(k (hi - lo) / K)``, ``k = 0..K`` with
  ``K = ceil((hi - lo) / stride)``, so consecutive centres are at most ``stride`` pixels apart and the first
  and last windows are centred exactly **on the chunk edges**. Every interior pixel belongs to the *core* of
  the window whose centre is nearest (so it lies at most ``stride / 2`` px from that window's centre), and
  each window is queried only on its core widened by ``margin`` px towards its neighbours, where a raised
  cosine ramp hands the weight from one window to the next. Because the edge windows sit on the chunk
  edge (the halo of ``window / 2`` px makes them fit exactly), the two chunks that share an edge compute the
  *same* window there: no seam at chunk edges, and a ``2 margin`` px cross-fade at window edges.
  Interior pixels are queried ``((stride + 2 margin) / stride)**2`` times on average, plus the edge windows.
* **reference** (:func:`reference_axis`): windows at ``0, stride, 2 stride, ...`` of the halo grid while they
  fit (``(size - window) // stride + 1`` of them, as the reference's ``MISO/demo.py``), each queried on
  every pixel. If that leaves pixels at the far edge uncovered, one last window flush with the edge is
  added (the reference would leave them empty); with ``(size - window) % stride == 0`` nothing is added.

The weight of a window at one of its queried pixels is ``mask[row, col] * ramp_row * ramp_col``, where
``mask`` is the blending mask over the window (:func:`blend_mask`) and the ramps are 1 in reference mode.
The map is ``sum(weight * probability) / sum(weight)`` per pixel.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

BlendKind = Literal["hann", "cosine", "gaussian"]


@dataclass(frozen=True)
class AxisSpan:
    """One window's extent along one axis, in halo-grid pixel indices.

    ``start`` is the window's first pixel (the window is ``[start, start + window)``); the window answers for
    ``[q0, q1)`` (its queried pixels) and owns ``[core0, core1)`` (the pixels it is responsible for, each
    interior pixel in exactly one core). ``ramp`` is the weight ``(q1 - q0,)`` float64 along this axis.
    """

    start: int
    q0: int
    q1: int
    core0: int
    core1: int
    ramp: np.ndarray


def raised_cosine_ramp(pixels: np.ndarray, boundary: int, margin: int, rising: bool) -> np.ndarray:
    """Weight of a window at ``pixels`` near a core ``boundary`` (index of the first pixel after it).

    Over ``[boundary - margin, boundary + margin)`` the weight goes from 1 to 0 (``rising=False``, the
    window before the boundary) or 0 to 1 (``rising=True``, the window after it) as ``cos²``/``sin²`` of the
    pixel centre's position, so the two windows' ramps sum to exactly 1. ``margin = 0`` is a hard cut.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    if margin <= 0:
        up = (pixels >= boundary).astype(np.float64)
    else:
        t = np.clip((pixels + 0.5 - (boundary - margin)) / (2 * margin), 0.0, 1.0)
        up = np.sin(0.5 * np.pi * t) ** 2
    return up if rising else 1.0 - up


def fast_axis(size: int, lo: int, hi: int, window: int, stride: int, margin: int) -> list[AxisSpan]:
    """Fast layout along one axis (see the module docstring).

    Args:
        size: pixels of the halo grid along the axis (must be >= ``window``).
        lo, hi: interior ``[lo, hi)`` in halo-grid pixels.
        window: window side in pixels (250 for MISO).
        stride: largest distance between consecutive window centres = largest core, pixels.
        margin: half-width of the cross-fade at each core boundary, pixels (``2 margin <= stride / 2``
            keeps each ramp inside its neighbours' cores).
    """
    _check_axis(size, lo, hi, window)
    n = hi - lo
    k_steps = max(1, math.ceil(n / stride))
    centres = [lo + round(k * n / k_steps) for k in range(k_steps + 1)]
    bounds = [lo] + [round((a + b) / 2) for a, b in zip(centres[:-1], centres[1:], strict=True)] + [hi]
    spans: list[AxisSpan] = []
    half = window // 2
    for k, centre in enumerate(centres):
        core0, core1 = bounds[k], bounds[k + 1]
        if core1 <= core0:
            continue
        start = min(max(centre - half, 0), size - window)
        if core0 < start or core1 > start + window:
            raise ValueError(f"core [{core0}, {core1}) does not fit in the window at {start}: stride {stride} is "
                             f"too large for a {window} px window and this halo")
        q0 = max(lo, core0 - margin) if k > 0 else core0
        q1 = min(hi, core1 + margin) if k < k_steps else core1
        q0, q1 = max(q0, start), min(q1, start + window)
        pix = np.arange(q0, q1)
        ramp = np.ones(q1 - q0, dtype=np.float64)
        if k > 0:
            ramp *= raised_cosine_ramp(pix, core0, margin, rising=True)
        if k < k_steps:
            ramp *= raised_cosine_ramp(pix, core1, margin, rising=False)
        spans.append(AxisSpan(start, q0, q1, core0, core1, ramp))
    return spans


def reference_axis(size: int, lo: int, hi: int, window: int, stride: int) -> list[AxisSpan]:
    """Reference layout along one axis: windows at multiples of ``stride``, every pixel queried, ramp 1.

    Windows that do not reach the interior ``[lo, hi)`` are dropped (they cannot change it). ``core`` is
    the whole window clipped to the interior (reference windows overlap; cores are not a partition).
    """
    _check_axis(size, lo, hi, window)
    starts = list(range(0, (size - window) // stride * stride + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return [
        AxisSpan(s, s, s + window, max(s, lo), min(s + window, hi), np.ones(window, dtype=np.float64))
        for s in starts
        if s < hi and s + window > lo
    ]


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
        mask = gaussian_filter(delta, sigma=window * sigma_fraction)
        return mask / mask.max()
    s = np.sin(np.pi * (np.arange(window) + 0.5) / window)
    if kind == "hann":
        s = s**2
    elif kind != "cosine":
        raise ValueError(f"unknown blend {kind!r}; choose hann, cosine or gaussian")
    return np.outer(s, s)


@dataclass(frozen=True)
class Window:
    """One window of a layout: its upper-left pixel in the halo grid and the rectangle it is queried on.

    ``rows``/``cols`` are the :class:`AxisSpan` of the window along each axis. The query rectangle is
    ``[rows.q0, rows.q1) x [cols.q0, cols.q1)`` in halo-grid pixels.
    """

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
        """(rows, cols) of the query rectangle."""
        return self.rows.q1 - self.rows.q0, self.cols.q1 - self.cols.q0

    def local_slices(self) -> tuple[slice, slice]:
        """The query rectangle in window-relative pixel indices."""
        return (slice(self.rows.q0 - self.rows.start, self.rows.q1 - self.rows.start),
                slice(self.cols.q0 - self.cols.start, self.cols.q1 - self.cols.start))

    def weights(self, mask: np.ndarray) -> np.ndarray:
        """Weights ``(rows, cols)`` float64 of the query rectangle: ``mask`` there times both ramps."""
        return mask[self.local_slices()] * np.outer(self.rows.ramp, self.cols.ramp)


@dataclass(frozen=True)
class WindowLayout:
    """All windows for one chunk: the halo grid's shape, the interior and the windows.

    Build with :meth:`fast` or :meth:`reference`.
    """

    shape: tuple[int, int]
    interior: tuple[slice, slice]
    window: int
    windows: tuple[Window, ...]

    @classmethod
    def fast(cls, shape: tuple[int, int], interior: tuple[slice, slice], window: int, stride: int,
             margin: int) -> WindowLayout:
        """The fast layout (see the module docstring) on a halo grid of ``shape`` (rows, cols)."""
        (r0, r1), (c0, c1) = _bounds(shape, interior)
        rows = fast_axis(shape[0], r0, r1, window, stride, margin)
        cols = fast_axis(shape[1], c0, c1, window, stride, margin)
        return cls(shape, (slice(r0, r1), slice(c0, c1)), window, tuple(Window(r, c) for r in rows for c in cols))

    @classmethod
    def reference(cls, shape: tuple[int, int], interior: tuple[slice, slice], window: int,
                  stride: int) -> WindowLayout:
        """The reference layout (windows at multiples of ``stride``, every pixel queried)."""
        (r0, r1), (c0, c1) = _bounds(shape, interior)
        rows = reference_axis(shape[0], r0, r1, window, stride)
        cols = reference_axis(shape[1], c0, c1, window, stride)
        return cls(shape, (slice(r0, r1), slice(c0, c1)), window, tuple(Window(r, c) for r in rows for c in cols))

    @property
    def interior_shape(self) -> tuple[int, int]:
        """(rows, cols) of the interior."""
        return (self.interior[0].stop - self.interior[0].start, self.interior[1].stop - self.interior[1].start)

    def responsibility(self) -> np.ndarray:
        """How many window cores contain each interior pixel, ``(rows, cols)`` int32 (all 1 for ``fast``)."""
        out = np.zeros(self.interior_shape, dtype=np.int32)
        r_lo, c_lo = self.interior[0].start, self.interior[1].start
        for w in self.windows:
            out[w.rows.core0 - r_lo:w.rows.core1 - r_lo, w.cols.core0 - c_lo:w.cols.core1 - c_lo] += 1
        return out

    def weight_sum(self, mask: np.ndarray) -> np.ndarray:
        """Summed weights of all windows over the interior, ``(rows, cols)`` float64."""
        out = np.zeros(self.interior_shape, dtype=np.float64)
        for w, (dst, src) in zip(self.windows, self.interior_overlaps(), strict=True):
            out[dst] += w.weights(mask)[src]
        return out

    def queries_per_pixel(self) -> float:
        """Queried points of all windows divided by interior pixels."""
        total = sum(w.query_shape[0] * w.query_shape[1] for w in self.windows)
        rows, cols = self.interior_shape
        return total / (rows * cols)

    def interior_overlaps(self) -> Iterator[tuple[tuple[slice, slice], tuple[slice, slice]]]:
        """Per window: (slices into the interior, slices into its query rectangle) of their overlap."""
        ir, ic = self.interior
        for w in self.windows:
            r0, r1 = max(w.rows.q0, ir.start), min(w.rows.q1, ir.stop)
            c0, c1 = max(w.cols.q0, ic.start), min(w.cols.q1, ic.stop)
            yield ((slice(r0 - ir.start, r1 - ir.start), slice(c0 - ic.start, c1 - ic.start)),
                   (slice(r0 - w.rows.q0, r1 - w.rows.q0), slice(c0 - w.cols.q0, c1 - w.cols.q0)))


def _bounds(shape: tuple[int, int], interior: tuple[slice, slice]) -> tuple[tuple[int, int], tuple[int, int]]:
    out = []
    for n, s in zip(shape, interior, strict=True):
        start, stop, step = s.indices(n)
        if step != 1:
            raise ValueError("interior slices must have step 1")
        out.append((start, stop))
    return out[0], out[1]
