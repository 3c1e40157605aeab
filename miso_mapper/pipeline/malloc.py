"""glibc malloc tuning for worker processes: undo the trim threshold Dask's nanny sets for them."""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc mallopt parameters (malloc.h) and the values set on workers by :func:`relax_malloc_trim`.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES, MMAP_THRESHOLD_BYTES = 256 << 20, 64 << 20


def relax_malloc_trim() -> bool:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` for this process (glibc only; returns whether it applied).

    Dask's nanny starts workers with that variable (good for pandas-style workloads). It also pins glibc's
    mmap threshold, so every tensor temporary above 128 KiB is a fresh mmap whose pages fault in and are
    returned at free: on the demo machine a tiny-network chunk took 81-86 s instead of 26-28 s. Raising
    both thresholds with ``mallopt`` at run time restores normal reuse of freed memory.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                    and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to undo
        return False
