"""The interface every map predictor implements (MISO, the RF-11 baseline), so the pipeline maps either.

A predictor takes the inputs of one chunk *with its halo* (:func:`miso_mapper.imagery.chunk.read_inputs` on
``chunk.halo_geobox``) and returns probabilities for the chunk's *interior* only. The halo exists so that
every interior pixel can be predicted with full model context; it is never written.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import xarray as xr

from miso_mapper.bands import SOIL_ORDERS


@runtime_checkable
class Predictor(Protocol):
    """Maps chunk inputs to probability layers."""

    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """Probabilities over ``inputs.isel(y=interior[0], x=interior[1])``.

        Returns a Dataset on the interior's y/x coordinates with
        ``permafrost_probability`` (y, x) float32 in [0, 1] and ``taxonomy_probability`` (class, y, x)
        float32 summing to 1 over ``class`` (coordinate = :data:`~miso_mapper.bands.SOIL_ORDERS`); both are
        NaN where ``inputs['valid']`` is False.
        """
        ...


def interior_of(inputs: xr.Dataset, halo: int) -> tuple[slice, slice]:
    """(row, col) slices of the interior of a halo grid padded by ``halo`` pixels on every side."""
    ny, nx = inputs.sizes["y"], inputs.sizes["x"]
    return slice(halo, ny - halo), slice(halo, nx - halo)


CLASS_COORD = list(SOIL_ORDERS)
