"""RF-11: the paper's Random Forest baseline, in the two forms the reference code runs it.

Named settings (:data:`SETTINGS`, chosen by ``evaluate.rf.setting``), as read in the public reference
(GitHub ``knowledge-computing/Peatland-permafrost``):

* ``rf11-notebook`` (``RF/Deprecate/random_forest_binary_classification.ipynb``, section "RF-11"; the soil-order
  notebook ``RF/random_forest_tax_classification.ipynb`` alike): 21 features, the 9 Sentinel-2 bands, the 7
  terrain and 3 climate covariates, then ``lon`` and ``lat`` in degrees (EPSG:4326, from the EPSG:4326 point
  file); 100 trees and scikit-learn's defaults otherwise (unlimited depth, min_samples_split 2).
* ``rf-script`` (``RF/train_test_RF11.py`` with ``RF/utils.py``): the same 19 raster features without any
  location; 253 trees; permafrost (``run_rf_binary``) max_depth 16 and min_samples_split 5, soil order
  (``run_rf_multiclass``) unlimited depth and min_samples_split 2.

Both leave every other hyper-parameter at scikit-learn's default: gini, ``max_features='sqrt'``, bootstrap,
min_samples_leaf 1, no class weights. The reference sets no ``random_state``; here it is ``evaluate.seed``.

Feature names are the columns of :data:`RAW_FEATURES` (:data:`~miso_mapper.bands.S2_BANDS` as harmonised DN,
then :data:`~miso_mapper.bands.COVARIATES` in physical units) plus ``lon``/``lat`` (degrees, computed from the
pixel centres' grid coordinates with pyproj) or ``x``/``y`` (grid CRS metres: :data:`LEGACY_FEATURES`, what
models of earlier versions were trained on; such files still load and map with those features). Training
(``evaluate``) and mapping (``model.kind: rf``) build features from the names stored in the model's card, so a
map always sees the features its forest was trained on.

:class:`RFModel` holds one forest per task and implements the
:class:`~miso_mapper.inference.predictor.Predictor` interface, so the pipeline can map it like MISO.
Saved and loaded without pickle by :mod:`miso_mapper.baseline.rf_file` (``<name>.skops`` plus a ``<name>.json``
card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr
from sklearn.ensemble import RandomForestClassifier

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.errors import MisoError
from miso_mapper.inference.predictor import empty_prediction

#: The 19 raster features every setting starts with, in this order.
RAW_FEATURES: tuple[str, ...] = (*S2_BANDS, *COVARIATES)
#: ``rf11-notebook``: the raster features, then longitude and latitude in degrees.
NOTEBOOK_FEATURES: tuple[str, ...] = (*RAW_FEATURES, "lon", "lat")
#: ``rf-script``: the raster features only.
SCRIPT_FEATURES: tuple[str, ...] = RAW_FEATURES
#: Models saved by earlier versions (cards without ``setting``): raster features, then grid x/y in metres.
LEGACY_FEATURES: tuple[str, ...] = (*RAW_FEATURES, "x", "y")
#: Every feature list a model card may hold.
FEATURE_SETS: tuple[tuple[str, ...], ...] = (NOTEBOOK_FEATURES, SCRIPT_FEATURES, LEGACY_FEATURES)
#: Setting name recorded for models whose card predates settings.
LEGACY_SETTING = "legacy-xy"
#: CRS of grid coordinates when neither the chunk nor the card names one (the package's grid default).
DEFAULT_CRS = "EPSG:3338"
#: Pixels per predict_proba call when mapping (bounds memory: ~21 float32 features each).
PREDICT_ROWS = 262_144


@dataclass(frozen=True)
class RFSetting:
    """One way the reference trains RF-11: its features (in order) and hyper-parameters per task."""

    name: str
    features: tuple[str, ...]
    trees: int
    max_depth: dict[str, int | None]
    """task -> maximum tree depth (None: unlimited)."""
    min_samples_split: dict[str, int]
    """task -> scikit-learn min_samples_split."""
    source: str
    """where in the reference this setting comes from."""

    def params(self, task: str, trees: int | None = None, max_depth: int | None = None) -> dict[str, Any]:
        """scikit-learn RandomForestClassifier keyword arguments for ``task``; ``trees`` and ``max_depth``
        override the setting's (``max_depth`` 0: unlimited)."""
        depth = self.max_depth[task] if max_depth is None else (max_depth or None)
        return {"n_estimators": trees or self.trees, "max_depth": depth,
                "min_samples_split": self.min_samples_split[task]}

    def describe(self, trees: int | None = None, max_depth: int | None = None) -> str:
        """One line: the setting, its features and each task's hyper-parameters (with the overrides)."""
        location = [n for n in self.features if n not in RAW_FEATURES]
        where = f" + {'/'.join(location)}" if location else ", no location"
        per_task = "; ".join(f"{task} {p['n_estimators']} trees, max_depth {p['max_depth'] or 'unlimited'}, "
                             f"min_samples_split {p['min_samples_split']}"
                             for task in self.max_depth for p in [self.params(task, trees, max_depth)])
        return (f"RF-11 setting {self.name} ({self.source}): {len(self.features)} features "
                f"(19 raster{where}); {per_task}")


#: The named settings of ``evaluate.rf.setting``.
SETTINGS: dict[str, RFSetting] = {
    "rf11-notebook": RFSetting(
        "rf11-notebook", NOTEBOOK_FEATURES, 100, {"permafrost": None, "taxonomy": None},
        {"permafrost": 2, "taxonomy": 2}, "RF/Deprecate/random_forest_binary_classification.ipynb, section RF-11"),
    "rf-script": RFSetting(
        "rf-script", SCRIPT_FEATURES, 253, {"permafrost": 16, "taxonomy": None},
        {"permafrost": 5, "taxonomy": 2}, "RF/train_test_RF11.py"),
}


def rf_setting(name: str) -> RFSetting:
    """The setting called ``name``; MisoError listing the known ones otherwise."""
    if name not in SETTINGS:
        raise MisoError(f"unknown RF setting {name!r} (settings: {', '.join(SETTINGS)})")
    return SETTINGS[name]


@lru_cache(maxsize=8)
def _to_lonlat(crs: str) -> Any:
    from pyproj import Transformer

    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)


def lonlat(x: np.ndarray, y: np.ndarray, crs: str = DEFAULT_CRS) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees (EPSG:4326, float64) of points ``x``, ``y`` in ``crs`` (one vectorised call)."""
    lon, lat = _to_lonlat(crs).transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64)


def feature_matrix(raw: np.ndarray, x: np.ndarray, y: np.ndarray, names: tuple[str, ...],
                   crs: str = DEFAULT_CRS) -> np.ndarray:
    """(n, len(names)) float32 features ``names`` from (n, 19) :data:`RAW_FEATURES` values and the points'
    (or pixel centres') ``x``, ``y`` in ``crs``; NaN stays NaN."""
    return _assemble(dict(zip(RAW_FEATURES, np.asarray(raw).T, strict=True)), x, y, names, crs)


def _assemble(columns: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, names: tuple[str, ...],
              crs: str) -> np.ndarray:
    """Fill an (n, len(names)) float32 array column by column (no float64 copy of the whole matrix)."""
    unknown = [n for n in names if n not in (*RAW_FEATURES, "x", "y", "lon", "lat")]
    if unknown:
        raise MisoError(f"unknown RF feature(s) {', '.join(unknown)}")
    columns = columns | {"x": np.asarray(x), "y": np.asarray(y)}
    if "lon" in names or "lat" in names:
        columns["lon"], columns["lat"] = lonlat(x, y, crs)
    out = np.empty((np.asarray(x).size, len(names)), np.float32)
    for j, name in enumerate(names):
        out[:, j] = columns[name]
    return out


def features_from_samples(samples: xr.Dataset, names: tuple[str, ...], crs: str = DEFAULT_CRS) -> np.ndarray:
    """(n, len(names)) float32 from :func:`~miso_mapper.imagery.sample.sample_pixels` output (``reflectance``
    (point, s2_band), ``covariates`` (point, cov_band), ``x``/``y`` coordinates in ``crs``); NaN where invalid."""
    refl = samples["reflectance"].sel(s2_band=list(S2_BANDS)).values
    cov = samples["covariates"].sel(cov_band=list(COVARIATES)).values
    return feature_matrix(np.column_stack([refl, cov]), samples["x"].values, samples["y"].values, names, crs)


def features_from_raw(raw: np.ndarray, x: np.ndarray, y: np.ndarray, names: tuple[str, ...],
                      crs: str = DEFAULT_CRS) -> np.ndarray:
    """(n, len(names)) float32 from (n, 19) raw values (9 bands then 10 covariates, as cached with chips) and
    the points' x, y in ``crs``."""
    return feature_matrix(raw, x, y, names, crs)


def features_from_inputs(inputs: xr.Dataset, interior: tuple[slice, slice], names: tuple[str, ...],
                         crs: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(h * w, len(names)) float32 features of every interior pixel of chunk ``inputs`` (row-major) and its
    (h, w) valid mask. Coordinates are the pixel centres in the chunk's own CRS (its ``spatial_ref``), else
    ``crs``, else :data:`DEFAULT_CRS`."""
    rows, cols = interior
    refl = inputs["reflectance"].sel(s2_band=list(S2_BANDS)).values[:, rows, cols]
    cov = inputs["covariates"].sel(cov_band=list(COVARIATES)).values[:, rows, cols]
    ys, xs = inputs["y"].values[rows], inputs["x"].values[cols]
    xx, yy = np.meshgrid(xs, ys)
    bands = dict(zip(RAW_FEATURES, (*refl, *cov), strict=True))
    columns = {name: band.ravel() for name, band in bands.items() if name in names}
    feats = _assemble(columns, xx.ravel(), yy.ravel(), names, chunk_crs(inputs) or crs or DEFAULT_CRS)
    valid = inputs["valid"].values[rows, cols] & np.isfinite(feats).all(axis=1).reshape(xx.shape)
    return feats, valid


def chunk_crs(inputs: xr.Dataset) -> str | None:
    """The CRS (WKT) of ``inputs``' ``spatial_ref`` coordinate, None when it has none."""
    ref = inputs.coords.get("spatial_ref")
    return (ref.attrs.get("crs_wkt") or ref.attrs.get("spatial_ref")) if ref is not None else None


@dataclass
class RFModel:
    """RF-11 for one or both tasks, all of one setting. Build with :meth:`fit`; map with :meth:`predict_chunk`.

    ``card`` holds ``setting``, ``features`` (names, in column order), ``crs`` (of the training coordinates)
    and per task ``trees``, ``max_depth``, ``min_samples_split``, ``seed``, ``n_train`` and ``classes``.
    """

    forests: dict[str, RandomForestClassifier] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The features this model's forests take, in order (:data:`LEGACY_FEATURES` for old cards)."""
        return tuple(self.card.get("features", LEGACY_FEATURES))

    @property
    def setting(self) -> str:
        """The setting's name (:data:`LEGACY_SETTING` for models saved before settings existed)."""
        return str(self.card.get("setting", LEGACY_SETTING))

    @classmethod
    def fit(cls, task: str, features: np.ndarray, labels: np.ndarray, setting: str | RFSetting = "rf11-notebook",
            *, trees: int | None = None, max_depth: int | None = None, seed: int = 0, n_jobs: int = 1,
            crs: str = DEFAULT_CRS, model: RFModel | None = None) -> RFModel:
        """Fit the ``task`` forest of ``setting`` on (n, k) features (the setting's, in order, x/y in ``crs``
        where it has them) and (n,) labels (0/1 or soil-order index); ``trees``/``max_depth`` override the
        setting's (``max_depth`` 0: unlimited).

        Rows with any non-finite feature are dropped. Adds to ``model`` when given (one model, two tasks, one
        setting).
        """
        spec = rf_setting(setting) if isinstance(setting, str) else setting
        if features.ndim != 2 or features.shape[1] != len(spec.features):
            raise MisoError(f"RF setting {spec.name} takes {len(spec.features)} features per point "
                            f"({', '.join(spec.features)}), got shape {features.shape}")
        if model is not None and model.forests and model.setting != spec.name:
            raise MisoError(f"this RF-11 model is {model.setting}; cannot add a {spec.name} forest to it")
        ok = np.isfinite(features).all(axis=1)
        if not ok.any():
            raise MisoError(f"no {task} training point has valid RF-11 features")
        params = spec.params(task, trees, max_depth)
        rf = RandomForestClassifier(**params, random_state=seed, n_jobs=n_jobs)
        rf.fit(features[ok], labels[ok].astype(np.int64))
        model = model or cls()
        model.forests[task] = rf
        model.card.update({"setting": spec.name, "features": list(spec.features), "crs": crs})
        model.card.setdefault("tasks", {})[task] = {
            "trees": params["n_estimators"], "max_depth": params["max_depth"],
            "min_samples_split": params["min_samples_split"], "seed": seed, "n_train": int(ok.sum()),
            "classes": [int(c) for c in rf.classes_]}
        return model

    def predict_proba(self, task: str, features: np.ndarray) -> np.ndarray:
        """Permafrost: (n,) P(permafrost); taxonomy: (n, 7) over all soil orders (0 for classes unseen in
        training). Rows with non-finite features get NaN."""
        if task not in self.forests:
            raise MisoError(f"this RF-11 model has no {task} forest (tasks: {', '.join(self.forests) or 'none'})")
        rf = self.forests[task]
        width = 2 if task == "permafrost" else len(SOIL_ORDERS)
        out = np.full((features.shape[0], width), np.nan, np.float32)
        ok = np.isfinite(features).all(axis=1)
        if ok.any():
            proba = np.zeros((int(ok.sum()), width), np.float32)
            proba[:, rf.classes_.astype(int)] = rf.predict_proba(features[ok])
            out[ok] = proba
        return out[:, 1] if task == "permafrost" else out

    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """:class:`~miso_mapper.inference.predictor.Predictor`: RF-11 probabilities over the interior, from the
        features named in the card (pixel centres' coordinates in the chunk's CRS, else the card's)."""
        result = empty_prediction(inputs, interior)
        feats, valid = features_from_inputs(inputs, interior, self.feature_names, self.card.get("crs"))
        flat = valid.ravel()
        h, w = valid.shape
        for task in self.forests:
            width = 1 if task == "permafrost" else len(SOIL_ORDERS)
            probs = np.full((h * w, width), np.nan, np.float32)
            rows = np.flatnonzero(flat)
            for start in range(0, rows.size, PREDICT_ROWS):
                sel = rows[start:start + PREDICT_ROWS]
                probs[sel] = self.predict_proba(task, feats[sel]).reshape(sel.size, width)
            if task == "permafrost":
                result["permafrost_probability"].values[...] = probs[:, 0].reshape(h, w)
            else:
                result["taxonomy_probability"].values[...] = probs.T.reshape(width, h, w)
        return result
