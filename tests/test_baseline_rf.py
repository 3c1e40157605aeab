"""RF-11: feature order, learning a synthetic signal, the Predictor interface, save/load."""

import numpy as np
import pytest
import xarray as xr

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.baseline import FEATURE_NAMES, RFModel, features_from_samples, load_rf, save_rf
from miso_mapper.errors import MisoError
from miso_mapper.imagery.sample import sample_pixels
from miso_mapper.inference import Predictor


def fake_inputs(h=20, w=30, seed=0):
    """A read_inputs-like Dataset whose reflectance/covariate values encode their band index."""
    rng = np.random.default_rng(seed)
    refl = (np.arange(9)[:, None, None] * 1000 + rng.uniform(0, 100, (9, h, w))).astype(np.float32)
    cov = (np.arange(10)[:, None, None] * -10 + rng.uniform(0, 1, (10, h, w))).astype(np.float32)
    valid = np.ones((h, w), bool)
    valid[0, 0] = False
    refl[:, 0, 0] = np.nan
    return xr.Dataset(
        {"reflectance": (("s2_band", "y", "x"), refl), "covariates": (("cov_band", "y", "x"), cov),
         "valid": (("y", "x"), valid)},
        coords={"s2_band": list(S2_BANDS), "cov_band": list(COVARIATES),
                "y": 1_665_000 - 10 * np.arange(h) - 5.0, "x": 260_000 + 10 * np.arange(w) + 5.0},
    )


def test_feature_order_from_the_point_sampler():
    assert FEATURE_NAMES == (*S2_BANDS, *COVARIATES, "x", "y") and len(FEATURE_NAMES) == 21
    inputs = fake_inputs()
    x, y = np.array([260_055.0, 260_105.0]), np.array([1_664_955.0, 1_664_905.0])
    feats = features_from_samples(sample_pixels(inputs, x, y))
    assert feats.shape == (2, 21)
    assert np.all(np.floor(feats[0, :9] / 1000) == np.arange(9))  # bands in S2_BANDS order
    assert np.all(np.round(feats[0, 9:19] / -10) == np.arange(10))  # covariates in COVARIATES order
    assert feats[0, 19] == 260_055.0 and feats[1, 20] == 1_664_905.0


def test_rf_learns_a_synthetic_signal_and_maps_a_chunk(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    feats = rng.normal(size=(n, 21)).astype(np.float32)
    pf = (feats[:, 6] + 0.3 * rng.normal(size=n) > 0).astype(int)  # nir drives permafrost
    order = np.digitize(feats[:, 12], [-1.0, 0.0, 1.0]) * 2  # sl_4 drives the soil order (classes 0,2,4,6)
    model = RFModel.fit("permafrost", feats[:300], pf[:300], trees=50)
    model = RFModel.fit("taxonomy", feats[:300], order[:300], trees=50, model=model)
    p = model.predict_proba("permafrost", feats[300:])
    assert np.mean((p >= 0.5) == pf[300:]) > 0.85
    t = model.predict_proba("taxonomy", feats[300:])
    assert t.shape == (100, 7) and np.allclose(t.sum(1), 1) and np.all(t[:, [1, 3, 5]] == 0)
    assert np.mean(t.argmax(1) == order[300:]) > 0.8
    # Predictor interface on a chunk: interior only, NaN where invalid
    assert isinstance(model, Predictor)
    inputs = fake_inputs()
    out = model.predict_chunk(inputs, (slice(0, 10), slice(0, 12)))
    assert out["permafrost_probability"].shape == (10, 12) and out["permafrost_probability"].dtype == np.float32
    assert out["taxonomy_probability"].shape == (7, 10, 12)
    assert list(out["class"].values) == list(SOIL_ORDERS)
    assert np.isnan(out["permafrost_probability"].values[0, 0]) and np.isfinite(out["permafrost_probability"][1, 1])
    assert np.allclose(np.nansum(out["taxonomy_probability"].values, axis=0)[1:, 1:], 1, atol=1e-5)
    # save / load round trip
    path, card = save_rf(model, tmp_path / "rf11.skops")
    again = load_rf(path)
    assert np.allclose(again.predict_proba("permafrost", feats[300:]), p)
    assert again.card["features"] == list(FEATURE_NAMES)
    card.write_text('{"format": "other"}')
    with pytest.raises(MisoError, match="not an RF-11 card"):
        load_rf(path)


def test_rf_refuses_wrong_feature_count():
    with pytest.raises(MisoError, match="21 features"):
        RFModel.fit("permafrost", np.zeros((5, 19)), np.zeros(5))
