"""RF-11: a scikit-learn Random Forest on 21 point features, as the paper's baseline.

Features, in this order (:data:`FEATURE_NAMES`): the 9 Sentinel-2 bands as harmonised DN
(:data:`~miso_mapper.bands.S2_BANDS` order), the 7 terrain and 3 climate covariates in physical units
(:data:`~miso_mapper.bands.COVARIATES` order), then x and y in EPSG:3338 metres. They come from the imagery
layer's point sampler (:func:`miso_mapper.imagery.sample.sample_pixels`), the same reader mapping uses.

:class:`RFModel` holds one forest per task and implements the
:class:`~miso_mapper.inference.predictor.Predictor` interface, so the pipeline can map it like MISO.
Saved and loaded without pickle by :mod:`miso_mapper.baseline.rf_file` (``<name>.skops`` plus a ``<name>.json``
card).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from sklearn.ensemble import RandomForestClassifier

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.errors import MisoError
from miso_mapper.inference.predictor import empty_prediction

#: The 21 RF-11 features in order.
FEATURE_NAMES: tuple[str, ...] = (*S2_BANDS, *COVARIATES, "x", "y")
#: Pixels per predict_proba call when mapping (bounds memory: 21 float32 features each).
PREDICT_ROWS = 262_144


def features_from_samples(samples: xr.Dataset) -> np.ndarray:
    """(n, 21) float32 from :func:`~miso_mapper.imagery.sample.sample_pixels` output (``reflectance``
    (point, s2_band), ``covariates`` (point, cov_band), ``x``/``y`` coordinates); NaN where invalid."""
    refl = samples["reflectance"].sel(s2_band=list(S2_BANDS)).values
    cov = samples["covariates"].sel(cov_band=list(COVARIATES)).values
    return np.column_stack([refl, cov, samples["x"].values, samples["y"].values]).astype(np.float32)


def features_from_raw(raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, 21) float32 from (n, 19) raw values (9 bands then 10 covariates, as cached with chips) and x, y."""
    return np.column_stack([raw, x, y]).astype(np.float32)


def features_from_inputs(inputs: xr.Dataset, interior: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    """(h * w, 21) float32 features of every interior pixel of chunk ``inputs`` and its (h, w) valid mask."""
    rows, cols = interior
    refl = inputs["reflectance"].sel(s2_band=list(S2_BANDS)).values[:, rows, cols]
    cov = inputs["covariates"].sel(cov_band=list(COVARIATES)).values[:, rows, cols]
    ys, xs = inputs["y"].values[rows], inputs["x"].values[cols]
    xx, yy = np.meshgrid(xs, ys)
    stack = np.concatenate([refl, cov, xx[None], yy[None]]).astype(np.float32)
    valid = inputs["valid"].values[rows, cols] & np.isfinite(stack).all(axis=0)
    return stack.reshape(len(FEATURE_NAMES), -1).T, valid


@dataclass
class RFModel:
    """RF-11 for one or both tasks. Build with :meth:`fit`; map with :meth:`predict_chunk`."""

    forests: dict[str, RandomForestClassifier] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, task: str, features: np.ndarray, labels: np.ndarray, trees: int = 100, seed: int = 0,
            n_jobs: int = 1, model: RFModel | None = None) -> RFModel:
        """Fit the ``task`` forest on (n, 21) features and (n,) labels (0/1 or soil-order index).

        Rows with any non-finite feature are dropped. Adds to ``model`` when given (one model, two tasks).
        """
        if features.ndim != 2 or features.shape[1] != len(FEATURE_NAMES):
            raise MisoError(f"RF-11 takes {len(FEATURE_NAMES)} features per point, got shape {features.shape}")
        ok = np.isfinite(features).all(axis=1)
        if not ok.any():
            raise MisoError(f"no {task} training point has valid RF-11 features")
        rf = RandomForestClassifier(n_estimators=trees, random_state=seed, n_jobs=n_jobs)
        rf.fit(features[ok], labels[ok].astype(np.int64))
        model = model or cls()
        model.forests[task] = rf
        model.card.setdefault("features", list(FEATURE_NAMES))
        model.card.setdefault("tasks", {})[task] = {"trees": trees, "seed": seed, "n_train": int(ok.sum()),
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
        """:class:`~miso_mapper.inference.predictor.Predictor`: RF-11 probabilities over the interior."""
        result = empty_prediction(inputs, interior)
        feats, valid = features_from_inputs(inputs, interior)
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

