"""Per-pixel input quality of a chunk's Sentinel-2 composite: observations used and the fraction masked.

ESA WorldCover ships the same kind of layer. From :func:`~miso_mapper.imagery.chunk.read_inputs`' ``count``
(observations that passed the SCL mask and went into the composite) and ``observed`` (observations with data
at the pixel, whatever their SCL class).
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def input_quality(inputs: xr.Dataset, interior: tuple[slice, slice]) -> dict[str, np.ndarray]:
    """``valid_observations`` and ``masked_fraction`` over ``inputs``' pixels ``interior``, float32 (y, x).

    ``valid_observations`` = ``count``; ``masked_fraction`` = ``1 - count / observed``, NaN where nothing was
    observed. Inputs without ``count``/``observed`` (synthetic inputs) give all-NaN layers (no data).
    """
    shape = (inputs.sizes["y"], inputs.sizes["x"])
    if "count" not in inputs or "observed" not in inputs:
        nan = np.full(shape, np.nan, np.float32)[interior]
        return {"valid_observations": nan, "masked_fraction": nan.copy()}
    count = np.asarray(inputs["count"].transpose("y", "x").values, np.float32)[interior]
    observed = np.asarray(inputs["observed"].transpose("y", "x").values, np.float32)[interior]
    with np.errstate(divide="ignore", invalid="ignore"):
        masked = np.where(observed > 0, 1 - count / observed, np.float32(np.nan)).astype(np.float32)
    return {"valid_observations": count, "masked_fraction": masked}


def with_input_quality(prediction: xr.Dataset, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
    """``prediction`` (on the interior's grid) with :func:`input_quality`'s layers added as (y, x) variables."""
    layers = input_quality(inputs, interior)
    return prediction.assign({name: (("y", "x"), a) for name, a in layers.items()})
