"""The output store ``maps.zarr``: creation, chunk-aligned region writes, checksums, compatibility checks.

Layout (DESIGN.md, "Output store"), CF / GeoZarr-style georeferencing in the grid CRS (EPSG:3338 by default):

* ``permafrost_probability`` (y, x) uint8: probability x 250 (CF ``scale_factor`` 0.004), 255 = no data;
  its attribute ``decision_threshold`` is the permafrost network's threshold (:func:`read_decision_threshold`)
* ``taxonomy_probability`` (class, y, x) uint8, same scaling; ``class`` = :data:`~miso_mapper.bands.SOIL_ORDERS`
* ``taxonomy_class`` (y, x) uint8: index into ``class`` of the most probable order, 255 = no data
* uncertainty, input quality, area of applicability and conformal layers, (y, x) uint8, 255 = no data
  (:mod:`miso_mapper.pipeline.extra_layers`; physical = stored x ``scale_factor``):

  ======================== ============================================================ ==================
  layer                    meaning                                                      stored value
  ======================== ============================================================ ==================
  ``permafrost_spread``    weighted std of P(permafrost) across the ensemble's windows  std x 500 (0.002)
  ``taxonomy_entropy``     Shannon entropy of the 7 order probabilities / ln 7          x 250 (0.004)
  ``taxonomy_spread``      weighted std across windows of the top order's probability   x 500 (0.002)
  ``valid_observations``   S2 observations that passed the SCL mask, in the composite   count, capped 254
  ``masked_fraction``      1 - valid / observed (observed: with data, any SCL class)    x 250; 255 if none
  ``*_aoa_index``          dissimilarity index DI to the network's training points      DI x 50 (0.02), cap
  ``*_aoa``                1 inside the area of applicability (DI <= threshold), 0 out  0/1
  ``taxonomy_set``         conformal prediction set, bit i = order i of ``class``       0..127
  ======================== ============================================================ ==================

  ``permafrost_aoa`` / ``taxonomy_aoa`` are derived at the write from the float index and the network's
  threshold, recorded as their attribute ``aoa_threshold`` (absent: no AOA, the mask is no data). A layer
  whose source is absent (RF-11, synthetic, no AOA sidecar, no conformal calibration) is all no data.
* ``spatial_ref``: the CF grid-mapping variable (``crs_wkt``, ``spatial_ref``, ``GeoTransform``), named by
  every data variable's ``grid_mapping`` attribute; ``x``/``y`` are pixel-centre coordinates in metres
* GeoZarr-style ``proj:`` / ``spatial:`` convention attributes on the group (``zarr_conventions``,
  ``proj:code``, ``proj:wkt2``, ``spatial:transform`` ...; :mod:`miso_mapper.pipeline.geozarr`), the same grid
  as ``spatial_ref`` for tools that read those conventions
* provenance attributes on the group: software version, model kind and checkpoint sha256(s), the full
  ``Workflow.config_hash()``, the ``map_config_hash`` (below), imagery date range, created, store uuid

The extent is the union of the planned chunks snapped outwards to whole tiles, so per-tile exports are plain
slices and the store's Zarr chunks coincide with the grid's Zarr-chunk lattice (``zarr_chunk`` px; the class
axis is one chunk). The array fill value is 255, so chunks never written (ocean, not yet run) stay absent
on disk and read as no data.

Georeferencing: the store's extent is a GeoBox (:attr:`MapStore.geobox`), made by
:meth:`~miso_mapper.grid.AlaskaGrid.tiles_geobox` at creation and read back from the store's own
``spatial_ref`` when opened; its place in the full grid is :meth:`~miso_mapper.grid.AlaskaGrid.offset`, and
a chunk's region in the store is the difference of the two offsets.

Writes: :meth:`MapStore.write_chunk` takes a predictor's output (float probabilities on the interior's
coordinates, see :mod:`miso_mapper.inference.predictor`) and refuses it unless its GeoBox is exactly the
chunk's interior, so a prediction shifted by a pixel or half a pixel, on another CRS or shape, or without
georeferencing never reaches the map. It encodes to uint8 here (:func:`encode_prediction`) and writes
straight into the chunk's Zarr chunks with zarr-python (never through a graph), refusing any region that is
not a whole number of Zarr chunks of the full grid (:meth:`~miso_mapper.grid.AlaskaGrid.check_aligned`)
*and* of the store, then re-reads what it wrote and returns the sha256 of those bytes (permafrost, taxonomy,
class, then the extra layers in :data:`~miso_mapper.pipeline.extra_layers.EXTRA_LAYERS` order, C order) for
the manifest. No two chunks share a Zarr chunk, so concurrent writers
never race.

Compatibility: a store remembers ``map_config_hash``, a hash of the settings that decide its pixels (grid,
region, imagery and covariate selection without server URLs, the model kind, checkpoint *contents* and
predictor settings). Cluster size, window, output folder or a demo server's random port do not change it;
a different model or region does, and ``run`` then stops before any work.

**Zarr format and GDAL (decision, measured).** zarr-python 3 writes v3 arrays with the ``bytes`` codec, which
GDAL's Zarr driver only understands from 3.11 (OSGeo/gdal PR #11787). Measured on this project's machines:
Debian bookworm's ``gdalinfo`` 3.6.2 and rasterio 1.4.4's bundled GDAL 3.10.3 both read a v2 store (CRS,
origin, no data, scale; 3.6 also prints a harmless "unsupported dtype |O" error for the string ``class``
coordinate) and neither reads a v3 one (3.10: "Unsupported codec: bytes"; 3.6: not recognised). The GDALs
users have today (Debian 12, Ubuntu 24.04, QGIS 3.34/3.40 LTR, rasterio wheels) are all older than 3.11, so
``output.zarr_format`` defaults to ``2``; ``3`` stays available for GDAL >= 3.11 and pure-Python readers.
Both carry the same CF attributes plus GDAL's own ``_CRS`` attribute on every data variable, so
``xarray.open_zarr`` + rioxarray and GDAL (``ZARR:"maps.zarr":/permafrost_probability``) see the CRS and
transform. The tests open the v2 store with GDAL and skip the v3 GDAL check, naming the reason, when the
GDAL at hand is older than 3.11.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import odc.geo.xr  # noqa: F401 - registers the .odc accessor that reads a prediction's GeoBox
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from miso_mapper import __version__
from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.filekind import file_sha256
from miso_mapper.grid import AlaskaGrid, Chunk, describe_geobox, geobox_from_spatial_ref, spatial_ref_attrs
from miso_mapper.pipeline.extra_layers import AOA_MASKS, EXTRA, EXTRA_LAYERS, cf_attrs, encode_extra
from miso_mapper.pipeline.geozarr import geozarr_attrs

#: Scale of the uint8 probabilities: stored = round(p x 250).
PROB_SCALE = 250
#: No-data value of every layer (also the Zarr fill value: unwritten chunks read as no data).
NODATA = 255
#: The probability and class layers (every store has them).
CORE_LAYERS = ("permafrost_probability", "taxonomy_probability", "taxonomy_class")
#: Every layer of a new store: the core ones, then the (y, x) extra layers.
LAYERS = CORE_LAYERS + tuple(layer.name for layer in EXTRA_LAYERS)
#: P(permafrost) from which a pixel is permafrost when the model names no threshold (RF-11, synthetic, old stores).
DEFAULT_THRESHOLD = 0.5
#: Files of a Zarr array's folder that are not chunks (v3, then v2).
_METADATA_FILES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zmetadata"})


sha256_file = file_sha256  # the run's checkpoint hashes; one implementation in miso_mapper.filekind


def map_config_hash(workflow: Workflow, checkpoint_hashes: dict[str, str]) -> str:
    """Hash of everything that decides the stored pixels (see the module doc); hex sha256.

    ``checkpoint_hashes`` maps a model file role (``permafrost``, ``taxonomy``, ``rf``) to its sha256.
    """
    imagery = workflow.imagery.model_dump(mode="json", exclude={"stac_url", "catalog"})
    covariates = workflow.covariates.model_dump(mode="json", exclude={"stac_url", "catalog", "path"})
    model = workflow.model.model_dump(
        mode="json", exclude={"permafrost_checkpoint", "taxonomy_checkpoint", "rf_model"}
    )
    key = {
        "grid": workflow.grid.model_dump(mode="json"),
        "region": workflow.region.model_dump(mode="json"),
        "imagery": imagery,
        "covariates": covariates,
        "model": model,
        "checkpoints": dict(sorted(checkpoint_hashes.items())),
        "world_seed": workflow.world.seed if workflow.world is not None else None,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def to_uint8(prob: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] (NaN = no data) -> uint8 ``round(p x 250)``, 255 where NaN."""
    p = np.asarray(prob, dtype=np.float32)
    ok = np.isfinite(p)
    out = np.full(p.shape, NODATA, np.uint8)
    out[ok] = np.rint(np.clip(p[ok], 0.0, 1.0) * PROB_SCALE).astype(np.uint8)
    return out


def threshold_code(threshold: float) -> int:
    """The smallest stored permafrost value (``round(p x 250)``) that is permafrost under ``threshold``:
    ``ceil(threshold x 250)``, so a pixel is permafrost when its *stored* probability (stored x 0.004) is
    >= ``threshold``. 0.5 -> 125, 0.3 -> 75. Against the float probability this is ``p >= threshold``
    except for p within 0.002 of the threshold (the store keeps p to 0.004)."""
    return int(np.ceil(round(float(threshold) * PROB_SCALE, 6)))


def permafrost_class(stored: np.ndarray, threshold: float) -> np.ndarray:
    """Stored uint8 permafrost probabilities (any shape) -> uint8 class: 1 permafrost, 0 not (see
    :func:`threshold_code`), 255 where the probability is no data."""
    stored = np.asarray(stored, dtype=np.uint8)
    return np.where(stored == NODATA, NODATA, stored >= threshold_code(threshold)).astype(np.uint8)


def checked_threshold(value: Any, where: str) -> float:
    """``value`` as a decision threshold in [0, 1]; :class:`MisoError` naming ``where`` otherwise."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise MisoError(f"{where}: decision threshold {value!r} is not a probability in [0, 1]")
    return threshold


def read_decision_threshold(array_attrs: Mapping[str, Any], where: str) -> float:
    """The permafrost decision threshold recorded on a store's ``permafrost_probability`` (its attributes
    ``array_attrs``); :data:`DEFAULT_THRESHOLD` for a store made before thresholds were recorded."""
    return checked_threshold(array_attrs.get("decision_threshold", DEFAULT_THRESHOLD), where)


def encode_prediction(pred: xr.Dataset, aoa_thresholds: Mapping[str, float | None] | None = None) -> xr.Dataset:
    """A predictor's output -> every stored uint8 layer (:data:`LAYERS`), on the prediction's own coordinates.

    Returns ``permafrost_probability`` (y, x) and ``taxonomy_probability`` (class, y, x) as :func:`to_uint8`,
    and ``taxonomy_class`` (y, x): the argmax over the orders of the float probabilities, 255 where any order
    probability is NaN; the extra layers as :func:`~miso_mapper.pipeline.extra_layers.encode_extra` (a
    variable the prediction lacks is all no data; ``aoa_thresholds`` task -> the AOA threshold of its network).
    ``y``, ``x`` and ``spatial_ref`` are the prediction's, so is its GeoBox.
    """
    pf = to_uint8(pred["permafrost_probability"].transpose("y", "x").values)
    tx_f = np.asarray(pred["taxonomy_probability"].sel({"class": list(SOIL_ORDERS)})
                      .transpose("class", "y", "x").values, dtype=np.float32)
    tx = to_uint8(tx_f)
    ok = np.isfinite(tx_f).all(axis=0)
    cls = np.full(ok.shape, NODATA, np.uint8)
    if ok.any():
        cls[ok] = np.argmax(tx_f[:, ok], axis=0).astype(np.uint8)
    values = {name: pred[name].transpose("y", "x").values for name in EXTRA if name in pred}
    extra = encode_extra(values, cls.shape, aoa_thresholds or {})
    coords = {name: c for name, c in pred.coords.items() if set(c.dims) <= {"y", "x"}}
    return _layers(pf, tx, cls, coords, extra)


def stored_layers(geobox: GeoBox, pf: np.ndarray, tx: np.ndarray, cls: np.ndarray,
                  extra: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """Already encoded uint8 layers (shapes (y, x), (7, y, x), (y, x), extra name -> (y, x)) on ``geobox``, for
    :meth:`MapStore.write_layers` (tests and benchmarks that write chosen bytes; extra layers not given are
    written as no data)."""
    return _layers(pf, tx, cls, xr_coords(geobox, crs_coord_name="spatial_ref"), extra or {})


def _layers(pf: np.ndarray, tx: np.ndarray, cls: np.ndarray, coords: Mapping[Hashable, Any],
            extra: Mapping[str, np.ndarray]) -> xr.Dataset:
    return xr.Dataset(
        {"permafrost_probability": (("y", "x"), pf), "taxonomy_probability": (("class", "y", "x"), tx),
         "taxonomy_class": (("y", "x"), cls), **{name: (("y", "x"), a) for name, a in extra.items()}},
        coords={"class": list(SOIL_ORDERS), **coords},
    )


def checksum_arrays(pf: np.ndarray, tx: np.ndarray, cls: np.ndarray, *extra: np.ndarray) -> str:
    """sha256 of one chunk's layers' bytes (C order, in that order: the core three, then the extra layers)."""
    h = hashlib.sha256()
    for a in (pf, tx, cls, *extra):
        h.update(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _check_aoa_thresholds(thresholds: Mapping[str, float | None], where: str) -> dict[str, float]:
    """The given AOA thresholds (task -> DI), None dropped; :class:`MisoError` for a negative or non-finite one."""
    out = {}
    for task, value in thresholds.items():
        if value is None:
            continue
        if task not in AOA_MASKS.values() or not np.isfinite(float(value)) or float(value) < 0:
            raise MisoError(f"{where}: area-of-applicability threshold {value!r} for {task!r} is not a finite DI >= 0")
        out[task] = float(value)
    return out


def create_store(path: Path, workflow: Workflow, chunks: list[Chunk], provenance: dict[str, Any],
                 decision_threshold: float = DEFAULT_THRESHOLD,
                 aoa_thresholds: Mapping[str, float | None] | None = None) -> MapStore:
    """Create an empty ``maps.zarr`` for ``chunks`` (metadata and coordinates only; no data chunk is written).

    ``provenance`` is merged into the group attributes (checkpoint hashes, map_config_hash, config_hash ...);
    ``decision_threshold`` (P(permafrost) from which a pixel is permafrost, the permafrost model's) becomes the
    ``decision_threshold`` attribute of ``permafrost_probability``; ``aoa_thresholds`` (task -> the AOA threshold of
    its network; None or missing: none) become the ``aoa_threshold`` attribute of ``permafrost_aoa`` /
    ``taxonomy_aoa``. Raises :class:`MisoError` if ``path`` exists or a threshold is invalid.
    """
    import dask.array as da

    if path.exists():
        raise MisoError(f"{path} already exists (use --resume to continue it or --overwrite to replace it)")
    aoa = _check_aoa_thresholds(aoa_thresholds or {}, str(path))
    grid = AlaskaGrid(workflow.grid)
    geobox = grid.tiles_geobox(chunks)
    row0, col0 = grid.offset(geobox)
    z = workflow.grid.zarr_chunk
    (ny, nx), nc = geobox.shape, len(SOIL_ORDERS)
    gm = spatial_ref_attrs(geobox)
    gdal_crs = {"wkt": gm["crs_wkt"]}
    common = {"grid_mapping": "spatial_ref", "_CRS": gdal_crs}
    prob_attrs = common | {"units": "1", "scale_factor": np.float32(1.0 / PROB_SCALE), "add_offset": np.float32(0.0),
                           "valid_range": [0, PROB_SCALE]}
    ds = xr.Dataset(
        {
            "permafrost_probability": (("y", "x"), da.full((ny, nx), np.nan, np.float32, chunks=(z, z)),
                                       prob_attrs | {"long_name": "probability of permafrost within 1 m",
                                                     "decision_threshold": checked_threshold(
                                                         decision_threshold, str(path))}),
            "taxonomy_probability": (("class", "y", "x"),
                                     da.full((nc, ny, nx), np.nan, np.float32, chunks=(nc, z, z)),
                                     prob_attrs | {"long_name": "probability of each soil order"}),
            "taxonomy_class": (("y", "x"), da.full((ny, nx), NODATA, np.uint8, chunks=(z, z)),
                               common | {"long_name": "most probable soil order (index into class)",
                                         "flag_values": list(range(nc)), "flag_meanings": " ".join(SOIL_ORDERS)}),
            **{layer.name: (("y", "x"), _empty_extra(layer.name, (ny, nx), z), common | cf_attrs(layer))
               for layer in EXTRA_LAYERS},
        },
        coords={
            "spatial_ref": ((), np.int32(0), gm),
            "class": ("class", np.array(SOIL_ORDERS, dtype=object), {"long_name": "soil order (USDA)"}),
            "y": ("y", geobox.coords["y"].values, {"standard_name": "projection_y_coordinate", "units": "m",
                                                   "axis": "Y", "long_name": "pixel-centre y"}),
            "x": ("x", geobox.coords["x"].values, {"standard_name": "projection_x_coordinate", "units": "m",
                                                   "axis": "X", "long_name": "pixel-centre x"}),
        },
    )
    first, last = workflow.imagery.date_windows()[0][0], workflow.imagery.date_windows()[-1][1]
    ds.attrs = {
        "title": f"MISO soil maps: {workflow.name}",
        "Conventions": "CF-1.8",
        "software": "miso-mapper",
        "software_version": __version__,
        "config_hash": workflow.config_hash(),
        "imagery_date_range": f"{first.isoformat()}/{last.isoformat()}",
        "imagery_seasons": [f"{a.isoformat()}/{b.isoformat()}" for a, b in workflow.imagery.date_windows()],
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "store_uuid": uuid.uuid4().hex,
        "probability_scale": PROB_SCALE,
        "nodata": NODATA,
        "grid_row0": row0,
        "grid_col0": col0,
        "zarr_chunk": z,
    } | geozarr_attrs(geobox) | provenance
    encoding: dict[str, dict[str, Any]] = {
        name: {"chunks": (nc, z, z) if name == "taxonomy_probability" else (z, z), "_FillValue": NODATA,
               "dtype": "uint8"}
        for name in LAYERS
    }
    for name in ("permafrost_probability", "taxonomy_probability"):  # CF packing: NaN -> 255, p -> p / 0.004
        encoding[name] |= {"scale_factor": ds[name].attrs.pop("scale_factor"),
                           "add_offset": ds[name].attrs.pop("add_offset")}
    for layer in EXTRA_LAYERS:
        if layer.scale is not None:
            encoding[layer.name] |= {"scale_factor": np.float32(layer.scale), "add_offset": np.float32(0.0)}
    for mask, task in AOA_MASKS.items():
        if task in aoa:
            ds[mask].attrs["aoa_threshold"] = aoa[task]
    encoding["x"] = {"chunks": (nx,)}
    encoding["y"] = {"chunks": (ny,)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".creating")
    shutil.rmtree(tmp, ignore_errors=True)
    fmt = workflow.output.zarr_format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds.to_zarr(tmp, mode="w", compute=False, zarr_format=fmt, encoding=encoding, consolidated=True)
    if fmt == 3:
        _set_v3_fill_value(tmp, LAYERS, NODATA)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
            zarr.consolidate_metadata(str(tmp))
    tmp.rename(path)  # a killed creation never leaves a half-made store at the final path
    return MapStore(path, grid)


def _empty_extra(name: str, shape: tuple[int, int], z: int) -> Any:
    """The lazy all-no-data array of an extra layer at creation: float NaN for a CF-scaled layer (packed to
    255 by the encoding), uint8 255 otherwise."""
    import dask.array as da

    if EXTRA[name].scale is not None:
        return da.full(shape, np.nan, np.float32, chunks=(z, z))
    return da.full(shape, NODATA, np.uint8, chunks=(z, z))


def _set_v3_fill_value(store: Path, names: tuple[str, ...], value: int) -> None:
    """Make ``value`` the Zarr v3 ``fill_value`` of arrays ``names`` of a store with no chunk written yet.

    xarray keeps CF's ``_FillValue`` as an attribute in v3 and leaves the array's own fill value at 0, so
    absent chunks would read as probability 0; they must read as no data (255), as they do in v2.
    """
    for name in names:
        meta_path = store / name / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["fill_value"] = value
        meta_path.write_text(json.dumps(meta, indent=2))


def delete_store(path: Path) -> None:
    """Remove a store folder (used by ``--overwrite``)."""
    shutil.rmtree(path, ignore_errors=True)


class MapStore:
    """An existing ``maps.zarr``: its attributes, its GeoBox and chunk-aligned region writes and reads.

    ``geobox`` is the store's grid as its own ``spatial_ref`` says (EPSG:3338 metres by default, whole tiles);
    ``offset`` the (row, col) of its upper-left pixel in ``grid``. Opening refuses (:class:`MisoError`) a
    store without readable georeferencing or one that is not on ``grid``'s pixel lattice.
    """

    def __init__(self, path: Path, grid: AlaskaGrid) -> None:
        self.path = Path(path)
        self.grid = grid
        try:
            self.group = zarr.open_group(str(self.path), mode="r+")
        except Exception as exc:  # noqa: BLE001 - any zarr/IO error means "not a store of ours"
            raise MisoError(f"{self.path} is not a readable Zarr store ({type(exc).__name__}: {exc})") from None
        attrs = dict(self.group.attrs)
        if "store_uuid" not in attrs:
            raise MisoError(f"{self.path} was not made by miso-mapper (no store_uuid attribute)")
        self.attrs = attrs
        self.geobox = self._read_geobox()
        try:
            self.offset = grid.offset(self.geobox)
        except MisoError as exc:
            raise MisoError(f"{self.path} is not on this workflow's grid: {exc}") from None
        if int(attrs["zarr_chunk"]) != grid.config.zarr_chunk:
            raise MisoError(f"{self.path} uses {attrs['zarr_chunk']} px Zarr chunks, the grid {grid.config.zarr_chunk}")
        self.extra_layers = tuple(layer.name for layer in EXTRA_LAYERS if layer.name in self.group)
        """The extra layers this store has (all of them, unless made before they existed)."""
        self.aoa_thresholds: dict[str, float] = {
            task: float(self.group[mask].attrs["aoa_threshold"]) for mask, task in AOA_MASKS.items()
            if mask in self.group and "aoa_threshold" in self.group[mask].attrs}
        """task -> the AOA threshold recorded at creation (the networks')."""

    def _read_geobox(self) -> GeoBox:
        try:
            ref = dict(self.group["spatial_ref"].attrs)
        except KeyError:
            raise MisoError(f"{self.path} has no spatial_ref variable, so no georeferencing") from None
        try:
            return geobox_from_spatial_ref(ref, self.group["permafrost_probability"].shape)
        except MisoError as exc:
            raise MisoError(f"{self.path}: {exc}") from None

    @property
    def uuid(self) -> str:
        """Random id of this store, fixed at creation (tells an overwritten store from its predecessor)."""
        return str(self.attrs["store_uuid"])

    def region(self, chunk: Chunk) -> tuple[slice, slice]:
        """The store-array slices of a chunk's interior, after refusing unaligned or out-of-store regions."""
        row, col = self.grid.offset(chunk.geobox)
        height, width = chunk.geobox.shape
        self.grid.check_aligned(slice(row, row + height), slice(col, col + width))
        r0, c0 = row - self.offset[0], col - self.offset[1]
        lr, lc = slice(r0, r0 + height), slice(c0, c0 + width)
        n_rows, n_cols = self.geobox.shape
        z = self.grid.config.zarr_chunk
        if lr.start < 0 or lc.start < 0 or lr.stop > n_rows or lc.stop > n_cols:
            raise MisoError(f"chunk {chunk.id} lies outside the store {self.path}")
        if lr.start % z or lc.start % z or (lr.stop % z and lr.stop != n_rows) or (lc.stop % z and lc.stop != n_cols):
            raise MisoError(f"refusing an unaligned write of chunk {chunk.id}: rows {lr} cols {lc}")
        return lr, lc

    def write_chunk(self, chunk: Chunk, prediction: xr.Dataset) -> str:
        """Encode a predictor's output for ``chunk`` (:func:`encode_prediction`), write it, return the re-read
        sha256 (:meth:`checksum`).

        Raises :class:`MisoError`, writing nothing, unless ``prediction.odc.geobox`` is exactly
        ``chunk.geobox`` (same CRS, shape and transform), or when the region is unaligned or outside the store.
        """
        _refuse_misregistered(chunk, prediction)
        return self._write(chunk, encode_prediction(prediction, self.aoa_thresholds))

    def write_layers(self, chunk: Chunk, layers: xr.Dataset) -> str:
        """Write already encoded uint8 layers (:func:`stored_layers`) of ``chunk``, checked as
        :meth:`write_chunk` checks a prediction; return the re-read sha256."""
        _refuse_misregistered(chunk, layers)
        return self._write(chunk, layers)

    def _write(self, chunk: Chunk, layers: xr.Dataset) -> str:
        lr, lc = self.region(chunk)
        pf = layers["permafrost_probability"].transpose("y", "x").values
        tx = layers["taxonomy_probability"].transpose("class", "y", "x").values
        cls = layers["taxonomy_class"].transpose("y", "x").values
        shape = (lr.stop - lr.start, lc.stop - lc.start)
        if pf.shape != shape or cls.shape != shape or tx.shape != (len(SOIL_ORDERS), *shape):
            raise MisoError(f"chunk {chunk.id}: layers of shape {pf.shape}/{tx.shape}/{cls.shape}, expected {shape}")
        if not all(a.dtype == np.uint8 for a in (pf, tx, cls)):
            raise MisoError(f"chunk {chunk.id}: layers of dtype {pf.dtype}/{tx.dtype}/{cls.dtype}, expected uint8")
        extra = {}
        for name in self.extra_layers:
            a = layers[name].transpose("y", "x").values if name in layers else np.full(shape, NODATA, np.uint8)
            if a.shape != shape or a.dtype != np.uint8:
                raise MisoError(f"chunk {chunk.id}: layer {name} is {a.dtype} {a.shape}, expected uint8 {shape}")
            extra[name] = a
        self.group["permafrost_probability"][lr, lc] = pf
        self.group["taxonomy_probability"][:, lr, lc] = tx
        self.group["taxonomy_class"][lr, lc] = cls
        for name, a in extra.items():
            self.group[name][lr, lc] = a
        return self.checksum(chunk)

    def read_chunk(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored uint8 layers of a chunk (255 where never written)."""
        lr, lc = self.region(chunk)
        return (np.asarray(self.group["permafrost_probability"][lr, lc]),
                np.asarray(self.group["taxonomy_probability"][:, lr, lc]),
                np.asarray(self.group["taxonomy_class"][lr, lc]))

    def read_extra(self, chunk: Chunk) -> dict[str, np.ndarray]:
        """The stored uint8 extra layers of a chunk, name -> (y, x) (255 where never written)."""
        lr, lc = self.region(chunk)
        return {name: np.asarray(self.group[name][lr, lc]) for name in self.extra_layers}

    def checksum(self, chunk: Chunk) -> str:
        """sha256 of what is stored for ``chunk``, every layer (see :func:`checksum_arrays`)."""
        return checksum_arrays(*self.read_chunk(chunk), *self.read_extra(chunk).values())

    def zarr_chunk_keys(self, chunk: Chunk) -> list[str]:
        """Store-relative keys of every Zarr chunk of every layer in ``chunk``'s region, as zarr names them
        (``'taxonomy_class/c/3/4'`` in Zarr v3, ``'taxonomy_class/3.4'`` in v2). Each is a file of the store once
        written; it stays absent while never written, and when all its pixels are no data."""
        lr, lc = self.region(chunk)
        z = self.grid.config.zarr_chunk
        rows, cols = range(lr.start // z, -(-lr.stop // z)), range(lc.start // z, -(-lc.stop // z))
        keys = []
        for name in CORE_LAYERS + self.extra_layers:
            array = self.group[name]
            lead = (0,) * (array.ndim - 2)  # the class axis is one Zarr chunk
            keys += [f"{name}/{array.metadata.encode_chunk_key((*lead, i, j))}" for i in rows for j in cols]
        return keys

    def absent_keys(self, chunk: Chunk) -> list[str]:
        """The keys of :meth:`zarr_chunk_keys` that have no file in the store."""
        return [key for key in self.zarr_chunk_keys(chunk) if not (self.path / key).is_file()]

    def stored_keys(self) -> set[str]:
        """Every chunk file of the layers, as store-relative keys (one walk of the layers' folders)."""
        found: set[str] = set()
        for name in CORE_LAYERS + self.extra_layers:
            for folder, _, files in os.walk(self.path / name):
                rel = Path(folder).relative_to(self.path).as_posix()
                found.update(f"{rel}/{f}" for f in files if f not in _METADATA_FILES)
        return found


def _refuse_misregistered(chunk: Chunk, data: xr.Dataset) -> None:
    """Raise :class:`MisoError` naming both grids unless ``data``'s GeoBox is exactly the chunk's interior."""
    found = data.odc.geobox if {"y", "x"} <= set(data.dims) else None
    if found != chunk.geobox:
        raise MisoError(f"refusing to write chunk {chunk.id}: the prediction's grid ({describe_geobox(found)}) "
                        f"is not the chunk's ({describe_geobox(chunk.geobox)})")


def open_store(path: Path, grid: AlaskaGrid) -> MapStore:
    """Open an existing store (raises :class:`MisoError` when it is not one of ours)."""
    return MapStore(path, grid)
