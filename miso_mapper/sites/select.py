"""Greedy choice of field sites: best score first, none closer than a minimum distance to one already chosen."""

from __future__ import annotations

import numpy as np

from miso_mapper.sites.candidates import Candidates


def greedy_sites(candidates: Candidates, n: int, min_distance_m: float) -> np.ndarray:
    """Indices into ``candidates`` of at most ``n`` sites, in the order chosen (rank 1 first).

    Candidates are taken in :meth:`Candidates.ranked` order; one is chosen unless it lies closer than
    ``min_distance_m`` (Euclidean, grid CRS metres) to a site already chosen. Fewer than ``n`` come back when
    the candidates run out.
    """
    chosen: list[int] = []
    for index in candidates.ranked():
        if len(chosen) == n:
            break
        if chosen:
            dx = candidates.x[chosen] - candidates.x[index]
            dy = candidates.y[chosen] - candidates.y[index]
            if np.min(np.hypot(dx, dy)) < min_distance_m:
                continue
        chosen.append(int(index))
    return np.asarray(chosen, dtype=np.int64)
