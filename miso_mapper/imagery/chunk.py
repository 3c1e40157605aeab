"""Exactly the model's input for one chunk (or any grid): composite, covariates, masks, normalised stacks.

This is the one place where imagery becomes model input. Production mapping, training chips and Random
Forest point features all go through :func:`read_inputs`, so they can never disagree about inputs.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.config import ImageryConfig
from miso_mapper.errors import MisoError
from miso_mapper.imagery.composite import composite_blocks
from miso_mapper.imagery.covariates import load_covariates
from miso_mapper.imagery.load import read_item, stack_items
from miso_mapper.imagery.normalize import normalize_covariate_array, normalize_s2_array
from miso_mapper.imagery.profiles import get_profile


def composite_items(items: list[dict[str, Any]], geobox: GeoBox, config: ImageryConfig) -> xr.Dataset:
    """Cloud-masked composite of ``items`` on ``geobox``, harmonised to the baseline-03 DN scale.

    Returns a Dataset with ``reflectance`` (band, y, x) float32 DN (NaN = no valid observation), ``valid``
    (y, x) bool, ``count`` (y, x) uint16 valid observations and ``observed`` (y, x) uint16 observations with
    data whatever their SCL class (:func:`~miso_mapper.imagery.composite.composite_blocks`), bands in
    :data:`~miso_mapper.bands.S2_BANDS` order, georeferenced by a ``spatial_ref`` coordinate
    (``ds.odc.geobox == geobox``).
    With no items at all every pixel is no data.
    Raises :class:`MisoError` for a ``geobox`` without a CRS.
    """
    if geobox.crs is None:
        raise MisoError("a grid without a CRS cannot be read")
    height, width = geobox.shape
    bands = list(S2_BANDS)
    if not items:
        composite = np.full((len(bands), height, width), np.nan, np.float32)
        count = np.zeros((height, width), np.uint16)
        observed = count.copy()
    else:
        profile = get_profile(config.profile)
        assets = [profile.asset_key(b) for b in bands] + [profile.asset_key("scl")]
        stack = stack_items(profile.signed(items, assets), assets, geobox, loader=config.loader)
        by_id = {item["id"]: item for item in items}
        offsets = np.array(
            [profile.dn_offset(by_id[i].get("properties", {})) for i in stack["id"].values], np.float32
        )
        budget = config.max_block_mb * 2**20
        observations = _ObservationSpool(stack.shape, budget)
        try:
            for t in range(len(items)):  # one item at a time: peak memory is one item, not all of them
                observations.write(t, read_item(stack, t))

            def read(rows: slice) -> tuple[np.ndarray, np.ndarray]:
                raw = observations.rows(rows)
                dn = raw[:, : len(bands)]
                values = np.where(dn == 0, np.float32(np.nan), dn.astype(np.float32) + offsets[:, None, None, None])
                return values, raw[:, len(bands)]

            composite, count, observed = composite_blocks(
                read, len(items), len(bands), (height, width), config.scl_keep, config.composite, budget
            )
        finally:
            observations.close()
    return xr.Dataset(
        {
            "reflectance": (("band", "y", "x"), composite),
            "valid": (("y", "x"), np.isfinite(composite).all(axis=0)),
            "count": (("y", "x"), count),
            "observed": (("y", "x"), observed),
        },
        coords={"band": bands, **xr_coords(geobox, crs_coord_name="spatial_ref")},
    )


def read_inputs(
    geobox: GeoBox,
    items: list[dict[str, Any]],
    covariate_sources: dict[str, list[str]],
    config: ImageryConfig,
) -> xr.Dataset:
    """Everything the model and the Random Forest need for ``geobox`` (usually a chunk's halo grid).

    Variables, all on ``geobox``'s y/x pixel-centre coordinates with its CRS and transform in the
    ``spatial_ref`` coordinate, so ``ds.odc.geobox == geobox``:

    * ``reflectance`` (s2_band, y, x) float32 harmonised DN, NaN = no data
    * ``covariates`` (cov_band, y, x) float32 physical units, NaN = no data
    * ``s2`` (s2_band, y, x) / ``cov`` (cov_band, y, x) float32 normalised as the reference, 0 where invalid
    * ``s2_valid``, ``cov_valid``, ``valid`` (y, x) bool; ``count`` (y, x) uint16 valid observations (that
      passed the SCL mask and went into the composite), ``observed`` (y, x) uint16 observations with data
    """
    comp = composite_items(items, geobox, config)
    cov = load_covariates(covariate_sources, geobox)
    s2_valid = comp["valid"].values
    cov_valid = cov["valid"].values
    ds = xr.Dataset(
        {
            "reflectance": (("s2_band", "y", "x"), comp["reflectance"].values),
            "covariates": (("cov_band", "y", "x"), cov["covariates"].values),
            "s2": (("s2_band", "y", "x"), normalize_s2_array(comp["reflectance"].values, s2_valid)),
            "cov": (("cov_band", "y", "x"), normalize_covariate_array(cov["covariates"].values, cov_valid)),
            "s2_valid": (("y", "x"), s2_valid),
            "cov_valid": (("y", "x"), cov_valid),
            "valid": (("y", "x"), s2_valid & cov_valid),
            "count": (("y", "x"), comp["count"].values),
            "observed": (("y", "x"), comp["observed"].values),
        },
        coords={"s2_band": list(S2_BANDS), "cov_band": list(COVARIATES),
                **xr_coords(geobox, crs_coord_name="spatial_ref")},
        attrs={"items": [item["id"] for item in items]},
    )
    return ds


class _ObservationSpool:
    """Raw observations (time, band, y, x) uint16 of one chunk: in memory when they fit the budget, else in
    a scratch file read back in row blocks with ``pread``. Not a memory map: mapped pages count towards the
    process's resident memory and would make peak memory grow with the number of items again."""

    def __init__(self, shape: tuple[int, int, int, int], budget_bytes: int) -> None:
        self.shape = shape
        self._array: np.ndarray | None = None
        self._file: Any = None
        if int(np.prod(shape)) * 2 <= budget_bytes:
            self._array = np.zeros(shape, np.uint16)
        else:
            self._file = tempfile.TemporaryFile(prefix="miso-observations-")

    def write(self, t: int, planes: np.ndarray) -> None:
        """Store item ``t``: (band, y, x) uint16."""
        if self._array is not None:
            self._array[t] = planes
            return
        _, n_bands, height, width = self.shape
        data = np.ascontiguousarray(planes, np.uint16).tobytes()
        os.pwrite(self._file.fileno(), data, t * n_bands * height * width * 2)

    def rows(self, rows: slice) -> np.ndarray:
        """(time, band, rows, x) uint16."""
        if self._array is not None:
            return self._array[:, :, rows]
        n_items, n_bands, height, width = self.shape
        out = np.empty((n_items, n_bands, rows.stop - rows.start, width), np.uint16)
        for t in range(n_items):
            for b in range(n_bands):
                offset = ((t * n_bands + b) * height + rows.start) * width * 2
                buf = os.pread(self._file.fileno(), out[t, b].nbytes, offset)
                out[t, b] = np.frombuffer(buf, np.uint16).reshape(out[t, b].shape)
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

