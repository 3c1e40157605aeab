"""The store layers field sites are scored from and reported with, and how their uint8 values decode.

Names and scalings are the store's (issue 15, "Shared design"): every layer is uint8 (y, x) with 255 = no
data; a layer whose source was absent at ``run`` (RF-11, the synthetic stand-in, a network without AOA
sidecar) is all no data. :data:`SCORE_LAYERS` must exist in the store; the others are reported when present.
"""

from __future__ import annotations

import numpy as np

from miso_mapper.pipeline.store import NODATA

#: Stored value -> physical value: multiply by the scale (None: the value itself, a count or a 0/1 flag).
SCALES: dict[str, float | None] = {
    "permafrost_probability": 0.004,
    "permafrost_spread": 0.002,
    "taxonomy_entropy": 0.004,
    "taxonomy_spread": 0.002,
    "permafrost_aoa_index": 0.02,
    "taxonomy_aoa_index": 0.02,
    "permafrost_aoa": None,
    "taxonomy_aoa": None,
    "valid_observations": None,
    "masked_fraction": 0.004,
}
#: Layers the score needs (see :func:`score`); a store without them is refused.
SCORE_LAYERS = ("permafrost_spread", "taxonomy_entropy", "permafrost_aoa", "taxonomy_aoa")
#: The class layer, reported as the order's name.
CLASS_LAYER = "taxonomy_class"
#: Largest possible standard deviation of a probability: divides the permafrost spread into [0, 1].
MAX_SPREAD = 0.5


def decode(name: str, stored: np.ndarray) -> np.ndarray:
    """Stored uint8 values of layer ``name`` -> float64 physical values, NaN where no data (255)."""
    stored = np.asarray(stored)
    scale = SCALES[name]
    values = stored.astype(np.float64) * (1.0 if scale is None else scale)
    return np.where(stored == NODATA, np.nan, values)


def uncertainty(pf_spread: np.ndarray, tx_entropy: np.ndarray) -> np.ndarray:
    """max(permafrost spread / 0.5, soil-order entropy), both in [0, 1], from *stored* uint8 values; a term
    that is no data counts 0 (float64, same shape)."""
    spread = np.nan_to_num(decode("permafrost_spread", pf_spread) / MAX_SPREAD)
    entropy = np.nan_to_num(decode("taxonomy_entropy", tx_entropy))
    return np.maximum(spread, entropy)


def outside_aoa(pf_aoa: np.ndarray, tx_aoa: np.ndarray) -> np.ndarray:
    """True where either task's area-of-applicability mask (stored 0/1, 255 no data) says 0: outside."""
    return (np.asarray(pf_aoa) == 0) | (np.asarray(tx_aoa) == 0)


def score(stored: dict[str, np.ndarray]) -> np.ndarray:
    """A candidate's score from stored values of :data:`SCORE_LAYERS`: :func:`uncertainty` + 1 if
    :func:`outside_aoa` (so any pixel outside the area of applicability outranks every pixel inside)."""
    return (uncertainty(stored["permafrost_spread"], stored["taxonomy_entropy"])
            + outside_aoa(stored["permafrost_aoa"], stored["taxonomy_aoa"]))
