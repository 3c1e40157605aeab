"""RF-11: a scikit-learn Random Forest on 21 point features, as the paper's baseline.

Features, in this order (:data:`FEATURE_NAMES`): the 9 Sentinel-2 bands as harmonised DN
(:data:`~miso_mapper.bands.S2_BANDS` order), the 7 terrain and 3 climate covariates in physical units
(:data:`~miso_mapper.bands.COVARIATES` order), then x and y in EPSG:3338 metres. They come from the imagery
layer's point sampler (:func:`miso_mapper.imagery.sample.sample_pixels`), the same reader mapping uses.

:class:`RFModel` holds one forest per task and implements the
:class:`~miso_mapper.inference.predictor.Predictor` interface, so the pipeline can map it like MISO.
Saved as ``<name>.joblib`` (the forests; pickle, so load only files you made) plus ``<name>.json`` (a card:
features, classes, trees, training-data hash, metrics, versions).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
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


def save_rf(model: RFModel, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (.joblib, the forests) and its card ``path.with_suffix('.json')``; returns both."""
    import joblib
    import sklearn

    from miso_mapper import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    joblib.dump(model.forests, tmp, compress=3)
    os.replace(tmp, path)
    card = dict(model.card) | {"format": "rf11", "sklearn_version": sklearn.__version__,
                               "software_version": __version__, "class_names": {"taxonomy": list(SOIL_ORDERS)}}
    card_path = path.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1))
    return path, card_path


def load_rf(path: Path) -> RFModel:
    """Read a model written by :func:`save_rf` (MisoError for a missing or foreign file)."""
    import joblib

    path = Path(path)
    card_path = path.with_suffix(".json")
    if not path.is_file() or not card_path.is_file():
        raise MisoError(f"RF-11 model {path} (or its card {card_path.name}) does not exist")
    try:
        card = json.loads(card_path.read_text())
        if card.get("format") != "rf11" or card.get("features") != list(FEATURE_NAMES):
            raise MisoError(f"{card_path} is not an RF-11 card with the 21 features in order")
        forests = joblib.load(path)
    except MisoError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the file's fault
        raise MisoError(f"cannot read RF-11 model {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(forests, dict) or not all(isinstance(v, RandomForestClassifier) for v in forests.values()):
        raise MisoError(f"{path} does not hold RF-11 forests")
    return RFModel(forests, card)
