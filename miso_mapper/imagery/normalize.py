"""The reference model's input normalisation, so checkpoints trained by the reference code see the same numbers.

Inputs are harmonised Sentinel-2 L2A reflectance in DN (reflectance x 10000, processing-baseline-03 scale:
no +1000 offset) and covariates in their physical units. Outputs are float32 in [0, 1] for every band:

* red, green, blue: clipped to [0, 10000], then stretched linearly between per-band 2nd/98th percentiles
  (the constants below) and clipped to [0, 1];
* the other six bands: divided by 8160 and clipped to [0, 1];
* covariates: clipped to a per-layer range, standardised by a mean and standard deviation, then rescaled
  by the min/max of the standardised range.

No-data pixels (flagged in the mask) become exactly 0 after normalisation, as in the reference.
The constants are the reference's published statistics (MISO ``datasets/buildin.py`` and
``datasets/data_utils.py``), written out here as data.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from miso_mapper.bands import COVARIATES, S2_BANDS

#: (low, high) DN of the linear stretch of each visible band.
RGB_STRETCH: Final[dict[str, tuple[float, float]]] = {
    "red": (78.0, 3318.0),
    "green": (158.0, 3411.0),
    "blue": (167.0, 3335.0),
}
#: Divisor of the six non-visible bands.
NON_RGB_DIVISOR: Final[float] = 8160.0
#: DN ceiling applied to the visible bands before stretching.
RGB_CLIP: Final[float] = 10000.0


#: Per-covariate (clip_min, clip_max, mean, std, norm_min, norm_max).
COVARIATE_STATS: Final[dict[str, tuple[float, float, float, float, float, float]]] = {
    "aspct_4": (-30.5223, 390.849, 193.7841109083502, 99.9743370804324, -2.2436398925845222, 1.9711547467737154),
    "elevation": (-18.2, 6161.18, 479.10458654439685, 531.0453285390807, -0.9364635367615312, 10.6997936110033),
    "maxc_4": (-0.0614807, 0.195017, 0.0006547736503785512, 0.0024848455333962823, -25.00576909722509,
               78.21903765743036),
    "sl_4": (-0.279193, 84.0483, 8.482833047778524, 11.039025897782452, -0.7937318137407995, 6.84530208117378),
    "spi": (-2328630.0, 36558200.0, -9185.947467117088, 27830.70205413299, -83.34119807762573,
            1313.922511776403),
    "swi_10": (0.336838, 26.324, 11.09144007025345, 5.1556415209994775, -2.085987170839712, 2.954542100668309),
    "tpi_4": (-151.879, 135.04, -0.3061414258129327, 1.0643270282705934, -142.41192279075648,
              127.16593474632936),
    "ppt_annual": (101.981, 10187.9, 817.3367823763526, 916.9429292330911, -0.780153005787022,
                   10.219352719651766),
    "tmean_swi": (-121.997, 67.3781, 22.76688079414464, 22.00039864850591, -6.580057166553927,
                  2.0277459476346804),
    "tmin_january": (-39.7864, 1.4687, -18.97214206973718, 7.9326849850380174, -2.6238603914716103,
                     2.576787318328035),
}


def normalize_s2_array(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Normalise a (9, y, x) harmonised-DN array in :data:`~miso_mapper.bands.S2_BANDS` order.

    ``valid`` is a (y, x) bool mask; invalid pixels are 0 in every band. Returns float32 (9, y, x).
    """
    if values.shape[0] != len(S2_BANDS):
        raise ValueError(f"expected {len(S2_BANDS)} bands, got {values.shape[0]}")
    out = np.empty(values.shape, dtype=np.float32)
    for i, band in enumerate(S2_BANDS):
        v = values[i].astype(np.float32)
        if band in RGB_STRETCH:
            low, high = RGB_STRETCH[band]
            v = np.clip(v, 0.0, RGB_CLIP)
            out[i] = np.clip((v - low) / (high - low), 0.0, 1.0)
        else:
            out[i] = np.clip(v / NON_RGB_DIVISOR, 0.0, 1.0)
    out[:, ~valid] = 0.0
    return out


def normalize_covariate_array(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Normalise a (10, y, x) covariate array in :data:`~miso_mapper.bands.COVARIATES` order.

    ``valid`` is a (y, x) bool mask; invalid pixels are 0 in every layer. Returns float32 (10, y, x).
    The result is not clipped to [0, 1]: the reference's norm_min/norm_max span the clipped range exactly.
    """
    if values.shape[0] != len(COVARIATES):
        raise ValueError(f"expected {len(COVARIATES)} covariates, got {values.shape[0]}")
    out = np.empty(values.shape, dtype=np.float32)
    for i, name in enumerate(COVARIATES):
        clip_min, clip_max, mean, std, norm_min, norm_max = COVARIATE_STATS[name]
        # float32 with Python-float constants, in the reference's order of operations, so the numbers match
        v = np.clip(values[i].astype(np.float32), clip_min, clip_max)
        out[i] = ((v - mean) / std - norm_min) / (norm_max - norm_min)
    out[:, ~valid] = 0.0
    return out

