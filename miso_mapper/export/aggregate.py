"""Exact block aggregation of uint8 layers for the statewide overviews (numpy; no GDAL resampling).

A coarse pixel covers ``factor x factor`` fine pixels. Both functions ignore no data (255) and give 255
where a coarse pixel has no valid fine pixel.

* :func:`block_average`: mean of the valid values rounded half up, ``floor(sum / n + 0.5)`` (GDAL's
  AVERAGE rounds integer data the same way).
* :func:`block_mode`: most frequent valid class of ``0 .. n_classes - 1``; ties go to the lowest class.
"""

from __future__ import annotations

import numpy as np

from miso_mapper.pipeline.store import NODATA


def _blocks(a: np.ndarray, factor: int) -> np.ndarray:
    """(..., y, x) -> (..., y/f, x/f, f*f); ``y`` and ``x`` must be multiples of ``factor``."""
    *lead, h, w = a.shape
    if h % factor or w % factor:
        raise ValueError(f"block of {h} x {w} px is not a multiple of the overview factor {factor}")
    b = a.reshape(*lead, h // factor, factor, w // factor, factor)
    b = np.moveaxis(b, -3, -2)
    return b.reshape(*lead, h // factor, w // factor, factor * factor)


def block_average(a: np.ndarray, factor: int) -> np.ndarray:
    """uint8 (..., y, x) -> uint8 (..., y/factor, x/factor): mean of valid values, rounded half up."""
    b = _blocks(a, factor)
    valid = b != NODATA
    n = valid.sum(axis=-1, dtype=np.int64)
    total = np.where(valid, b, 0).sum(axis=-1, dtype=np.int64)
    out = np.full(n.shape, NODATA, np.uint8)
    ok = n > 0
    # integer form of floor(total / n + 0.5): no float rounding at exact halves
    out[ok] = ((2 * total[ok] + n[ok]) // (2 * n[ok])).astype(np.uint8)
    return out


def block_mode(a: np.ndarray, factor: int, n_classes: int) -> np.ndarray:
    """uint8 (y, x) classes -> uint8 (y/factor, x/factor): most frequent valid class, ties to the lowest."""
    b = _blocks(a, factor)
    counts = np.stack([(b == k).sum(axis=-1) for k in range(n_classes)])
    out = counts.argmax(axis=0).astype(np.uint8)  # argmax returns the first (lowest) class of a tie
    out[counts.max(axis=0) == 0] = NODATA
    return out
