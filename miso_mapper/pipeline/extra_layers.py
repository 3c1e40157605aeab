"""The store's (y, x) uint8 layers beyond the probabilities: uncertainty, input quality, area of applicability
(AOA) and the conformal prediction set; what each means and how a float value is packed into a byte.

Every layer is uint8 with 255 = no data. A scaled layer stores ``round(value / scale)`` capped at 254 (CF
``scale_factor`` = ``scale``: physical = stored x scale); an unscaled one stores the value itself (a count
capped at 254, a 0/1 flag, a bitmask). The predictor gives each (except ``valid_observations`` and
``masked_fraction``, which the pipeline adds from the inputs, and the AOA masks, derived here) as float32 with
NaN = no data; a layer missing from a prediction (RF-11, synthetic, a network without AOA sidecar or
conformal calibration) is all no data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

#: No-data value of every layer (as in :mod:`miso_mapper.pipeline.store`).
NODATA = 255
#: Largest stored value of a data pixel (255 is no data).
CAP = 254


@dataclass(frozen=True)
class ExtraLayer:
    """One (y, x) uint8 layer: ``scale`` None = the value stored as is (rounded, capped at :data:`CAP`);
    ``flags`` the meanings of values 0, 1, ... of a mask; ``index`` the AOA index layer a mask is derived from
    (``DI <= threshold``), else None."""

    name: str
    long_name: str
    units: str
    scale: float | None = None
    flags: tuple[str, ...] = ()
    index: str | None = None

    def encode(self, value: np.ndarray) -> np.ndarray:
        """Float values (NaN = no data) -> uint8 as the module doc says."""
        v = np.asarray(value, dtype=np.float64)
        ok = np.isfinite(v)
        out = np.full(v.shape, NODATA, np.uint8)
        scaled = v[ok] / self.scale if self.scale is not None else v[ok]
        out[ok] = np.clip(np.rint(scaled), 0, CAP).astype(np.uint8)
        return out


EXTRA_LAYERS: tuple[ExtraLayer, ...] = (
    ExtraLayer("permafrost_spread", "weighted standard deviation of P(permafrost) across the ensemble's windows",
               "1", 0.002),
    ExtraLayer("taxonomy_entropy", "Shannon entropy of the soil-order probabilities / ln 7", "1", 0.004),
    ExtraLayer("taxonomy_spread", "weighted standard deviation across the ensemble's windows of the most probable "
               "order's probability", "1", 0.002),
    ExtraLayer("valid_observations", "Sentinel-2 observations that passed the SCL mask and went into the composite "
               "(capped at 254)", "1"),
    ExtraLayer("masked_fraction", "fraction of the observations with data that the SCL mask discarded "
               "(no data where none was observed)", "1", 0.004),
    ExtraLayer("permafrost_aoa_index", "dissimilarity index of the pixel to the permafrost network's training "
               "points (area of applicability, capped at 5.08)", "1", 0.02),
    ExtraLayer("taxonomy_aoa_index", "dissimilarity index of the pixel to the soil-order network's training "
               "points (area of applicability, capped at 5.08)", "1", 0.02),
    ExtraLayer("permafrost_aoa", "inside (1) or outside (0) the permafrost network's area of applicability", "1",
               flags=("outside", "inside"), index="permafrost_aoa_index"),
    ExtraLayer("taxonomy_aoa", "inside (1) or outside (0) the soil-order network's area of applicability", "1",
               flags=("outside", "inside"), index="taxonomy_aoa_index"),
    ExtraLayer("taxonomy_set", "conformal prediction set of soil orders at the model's coverage, bit i = order i "
               "of class", "1"),
)
EXTRA: dict[str, ExtraLayer] = {layer.name: layer for layer in EXTRA_LAYERS}
#: The AOA mask layers and the task whose network's threshold they use.
AOA_MASKS: dict[str, str] = {"permafrost_aoa": "permafrost", "taxonomy_aoa": "taxonomy"}


def aoa_mask(index: np.ndarray, threshold: float | None) -> np.ndarray:
    """uint8 1 where the float dissimilarity index ``index`` is <= ``threshold`` (inside the area of
    applicability), 0 above, 255 where the index is NaN or there is no threshold."""
    di = np.asarray(index, dtype=np.float64)
    if threshold is None:
        return np.full(di.shape, NODATA, np.uint8)
    return np.where(np.isfinite(di), di <= threshold, NODATA).astype(np.uint8)


def encode_extra(values: Mapping[str, np.ndarray], shape: tuple[int, int],
                 aoa_thresholds: Mapping[str, float | None]) -> dict[str, np.ndarray]:
    """Every :data:`EXTRA_LAYERS` layer as uint8 ``shape`` from float ``values`` (name -> (y, x), NaN = no data;
    missing names are all no data); the AOA masks from the index and ``aoa_thresholds`` (task -> threshold,
    None or missing = no mask)."""
    out: dict[str, np.ndarray] = {}
    for layer in EXTRA_LAYERS:
        if layer.index is not None:
            src = values.get(layer.index)
            threshold = aoa_thresholds.get(AOA_MASKS[layer.name])
            out[layer.name] = aoa_mask(src if src is not None else np.full(shape, np.nan), threshold)
        elif layer.name in values:
            out[layer.name] = layer.encode(values[layer.name])
        else:
            out[layer.name] = np.full(shape, NODATA, np.uint8)
    return out


def cf_attrs(layer: ExtraLayer) -> dict[str, object]:
    """The CF attributes of a layer's store array (``scale_factor`` goes into the encoding, not here)."""
    attrs: dict[str, object] = {"long_name": layer.long_name, "units": layer.units}
    if layer.flags:
        return attrs | {"flag_values": list(range(len(layer.flags))), "flag_meanings": " ".join(layer.flags)}
    return attrs | {"valid_range": [0, CAP]}
