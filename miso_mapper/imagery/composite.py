"""Cloud-masked mid-summer composites: SCL masking, then a per-pixel median over the valid observations.

Pitfalls this module exists to avoid:

* A pixel with no valid observation is *no data* (NaN in the composite, False in ``valid``), never zero
  reflectance: a zero would look like a perfectly dark lake to the model.
* The median must see only valid observations. Masking with NaN and using ``nanmedian`` does that; a
  masked-array median of integers would silently round.
* Memory: every observation of a pixel is needed at once for an exact median, so a chunk is composited in
  row blocks whose height shrinks as the number of scenes grows, keeping peak memory flat in the number of
  items (``max_block_bytes``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import numpy as np

#: SCL classes kept by default: vegetation, not vegetated (bare soil), water, snow and ice.
DEFAULT_SCL_KEEP: tuple[int, ...] = (4, 5, 6, 11)

CompositeMethod = Literal["median", "geomedian"]


def valid_observations(scl: np.ndarray, keep: Iterable[int] = DEFAULT_SCL_KEEP) -> np.ndarray:
    """Boolean mask, same shape as ``scl``: True where the SCL class is one of ``keep``."""
    return np.isin(scl, np.asarray(list(keep), dtype=scl.dtype if scl.dtype.kind in "iu" else None))


def composite_array(
    values: np.ndarray, ok: np.ndarray, method: CompositeMethod = "median"
) -> tuple[np.ndarray, np.ndarray]:
    """Composite a (time, band, y, x) block of harmonised DN over the observations where ``ok`` (time, y, x).

    Returns ``(composite, count)``: float32 (band, y, x) with NaN where no observation is valid, and uint16
    (y, x) number of valid observations. ``median`` is the per-band median (the mean of the two middle
    values for an even count); ``geomedian`` is the multivariate (geometric) median across bands.
    """
    if values.ndim != 4 or ok.shape != (values.shape[0], *values.shape[2:]):
        raise ValueError(f"values (t, b, y, x) {values.shape} and ok (t, y, x) {ok.shape} do not match")
    count = ok.sum(axis=0).astype(np.uint16)
    # float32 holds every DN exactly, and the mean of two middle DNs too (< 2**24), so the median is exact
    masked = np.where(ok[:, None], values, np.float32(np.nan)).astype(np.float32, copy=False)
    if values.shape[0] == 0:
        return np.full(values.shape[1:], np.nan, np.float32), count
    median = _median_where_observed(masked)
    if method == "geomedian":
        with np.errstate(all="ignore"):
            median = _geometric_median(masked.astype(np.float64), median.astype(np.float64))
    return median.astype(np.float32), count


def _median_where_observed(masked: np.ndarray) -> np.ndarray:
    """Per-band median over time of a (t, b, y, x) float32 block, NaN where a pixel has no observation.

    ``nanmedian`` warns "All-NaN slice encountered" for such pixels (cloudy everywhere is common), so it only
    sees the observed ones. Silencing the warning instead is no option: ``warnings.catch_warnings`` is not
    thread-safe, and Dask runs composites in threads, so one thread's exit re-enabled warnings under another.
    """
    out = np.full(masked.shape[1:], np.nan, np.float32)
    observed = np.isfinite(masked).any(axis=0)  # (b, y, x)
    for band in range(masked.shape[1]):
        seen = observed[band]
        if seen.any():
            out[band, seen] = np.nanmedian(masked[:, band, seen], axis=0)
    return out


def _geometric_median(
    masked: np.ndarray, start: np.ndarray, iterations: int = 50, tolerance: float = 1e-3
) -> np.ndarray:
    """Weiszfeld iterations per pixel over the band vector; NaN observations are ignored.

    ``masked`` is (t, b, y, x) float64 with NaN for invalid observations; ``start`` (b, y, x) is the
    starting estimate (the per-band median). Stops when no pixel moves more than ``tolerance`` DN.
    """
    valid = ~np.isnan(masked[:, 0])  # (t, y, x)
    x = np.nan_to_num(masked)
    estimate = np.nan_to_num(start)
    for _ in range(iterations):
        distance = np.sqrt(((x - estimate[None]) ** 2).sum(axis=1))  # (t, y, x)
        weight = np.where(valid, 1.0 / np.maximum(distance, 1e-6), 0.0)
        total = weight.sum(axis=0)
        new = (weight[:, None] * x).sum(axis=0) / np.where(total > 0, total, 1.0)
        step = np.abs(new - estimate).max(initial=0.0)
        estimate = new
        if step < tolerance:
            break
    return np.where(np.isnan(start), np.nan, estimate)


def block_rows(n_items: int, n_bands: int, width: int, height: int, max_block_bytes: int) -> int:
    """Rows per block so compositing one block stays under ``max_block_bytes``.

    Per observation and band a block holds the raw uint16 value and three float32 arrays (harmonised values,
    the NaN-masked copy, and the copy ``nanmedian`` partitions), plus the mask and SCL bytes.
    """
    per_row = max(1, n_items) * (n_bands * (2 + 3 * 4) + 4) * width
    return int(max(1, min(height, max_block_bytes // per_row)))


def composite_blocks(
    read_block: Callable[[slice], tuple[np.ndarray, np.ndarray]],
    n_items: int,
    n_bands: int,
    shape: tuple[int, int],
    keep: Iterable[int] = DEFAULT_SCL_KEEP,
    method: CompositeMethod = "median",
    max_block_bytes: int = 256 * 2**20,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite a whole chunk block by block.

    ``read_block(rows)`` returns ``(values, scl)`` for those rows: harmonised DN (time, band, rows, x), float32
    with NaN for no data, and
    SCL codes (time, rows, x). Returns float32 (band, y, x) composite (NaN = no data), uint16 (y, x) count of
    the valid observations that went into it and uint16 (y, x) count of the *observed* ones (every band has
    data, whatever the SCL class; so ``count <= observed``, and ``1 - count / observed`` is the fraction the
    SCL mask discarded). Peak memory is bounded by ``max_block_bytes`` whatever ``n_items`` is.
    """
    height, width = shape
    keep = tuple(keep)
    out = np.full((n_bands, height, width), np.nan, np.float32)
    count = np.zeros((height, width), np.uint16)
    observed = np.zeros((height, width), np.uint16)
    step = block_rows(n_items, n_bands, width, height, max_block_bytes)
    for start in range(0, height, step):
        rows = slice(start, min(height, start + step))
        values, scl = read_block(rows)
        has_data = np.isfinite(values).all(axis=1)
        observed[rows] = has_data.sum(axis=0)
        out[:, rows], count[rows] = composite_array(values, valid_observations(scl, keep) & has_data, method)
    return out, count, observed

