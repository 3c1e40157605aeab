"""The interface every mapping model implements, so the production pipeline can map any of them.

A predictor gets the inputs of one processing chunk (:func:`miso_mapper.imagery.chunk.read_inputs` on the
chunk's *halo* grid) and the (row, col) slices of the chunk's interior within that grid, and returns
probabilities for the interior only:

* ``permafrost_probability`` (y, x) float32 in [0, 1]: probability of permafrost within 1 m;
* ``taxonomy_probability`` (class, y, x) float32 in [0, 1], ``class`` = the 7 names of
  :data:`miso_mapper.bands.SOIL_ORDERS`, summing to 1 over classes;

both NaN where the inputs are invalid (or where the predictor has no model for that task), with the
interior's ``y``/``x`` pixel-centre coordinates and georeferencing cut from the inputs'
(:func:`interior_coords`), so the prediction's ``.odc.geobox`` is the chunk's interior GeoBox. Scaling to
uint8 and writing are the store's job, which refuses a prediction on any other grid.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol, runtime_checkable

import numpy as np
import odc.geo.xr  # noqa: F401 - registers the .odc accessor
import xarray as xr
from odc.geo.xr import xr_coords

from miso_mapper.bands import SOIL_ORDERS


@runtime_checkable
class Predictor(Protocol):
    """Anything that maps a chunk: MISO, RF-11, ..."""

    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """Probabilities over ``inputs``'s pixels ``interior`` = (row slice, col slice); see the module doc."""
        ...


def interior_coords(inputs: xr.Dataset, interior: tuple[slice, slice]) -> dict[Hashable, xr.DataArray]:
    """``y``/``x`` and the georeferencing (``spatial_ref``) of ``inputs``' pixels ``interior``.

    A prediction built on them has ``.odc.geobox`` equal to the interior's GeoBox (``inputs.odc.geobox``
    sliced by ``interior``), and its ``spatial_ref`` (GeoTransform included) describes that slice, not the halo
    grid: slicing a Dataset keeps a scalar coordinate as it is. Inputs without georeferencing give a
    prediction without it, which the store refuses.
    """
    geobox = inputs.odc.geobox if "spatial_ref" in inputs.coords else None
    if geobox is not None:
        return dict(xr_coords(geobox[interior], crs_coord_name="spatial_ref"))
    part = inputs.coords.to_dataset().isel(y=interior[0], x=interior[1])
    return {name: coord for name, coord in part.coords.items() if set(coord.dims) <= {"y", "x"}}


def empty_prediction(inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
    """An all-NaN prediction over the interior of ``inputs`` (the shape and coordinates every predictor returns)."""
    coords = interior_coords(inputs, interior)
    shape = (coords["y"].size, coords["x"].size)
    return xr.Dataset(
        {
            "permafrost_probability": (("y", "x"), np.full(shape, np.nan, np.float32)),
            "taxonomy_probability": (("class", "y", "x"), np.full((len(SOIL_ORDERS), *shape), np.nan, np.float32)),
        },
        coords={"class": list(SOIL_ORDERS), **coords},
    )
