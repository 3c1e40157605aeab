"""RF-11: the two reference settings (features, order, hyper-parameters), lon/lat features, learning a synthetic
signal, the Predictor interface, save/load, and cards of earlier versions."""

import json
import typing

import numpy as np
import pytest
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.baseline import (
    LEGACY_FEATURES,
    NOTEBOOK_FEATURES,
    SCRIPT_FEATURES,
    SETTINGS,
    RFModel,
    features_from_inputs,
    features_from_samples,
    load_rf,
    lonlat,
    save_rf,
)
from miso_mapper.config import EvaluateConfig, RFConfig
from miso_mapper.errors import MisoError
from miso_mapper.imagery.sample import sample_pixels
from miso_mapper.inference import Predictor


def fake_inputs(h=20, w=30, seed=0, crs=None, x0=260_000.0, y0=1_665_000.0):
    """A read_inputs-like Dataset whose reflectance/covariate values encode their band index; georeferenced by a
    ``spatial_ref`` coordinate when ``crs`` is given (10 m pixels, top-left corner at x0, y0)."""
    rng = np.random.default_rng(seed)
    refl = (np.arange(9)[:, None, None] * 1000 + rng.uniform(0, 100, (9, h, w))).astype(np.float32)
    cov = (np.arange(10)[:, None, None] * -10 + rng.uniform(0, 1, (10, h, w))).astype(np.float32)
    valid = np.ones((h, w), bool)
    valid[0, 0] = False
    refl[:, 0, 0] = np.nan
    if crs is None:
        coords = {"y": y0 - 10 * np.arange(h) - 5.0, "x": x0 + 10 * np.arange(w) + 5.0}
    else:
        coords = xr_coords(GeoBox.from_bbox((x0, y0 - 10 * h, x0 + 10 * w, y0), crs, resolution=10),
                           crs_coord_name="spatial_ref")
    return xr.Dataset(
        {"reflectance": (("s2_band", "y", "x"), refl), "covariates": (("cov_band", "y", "x"), cov),
         "valid": (("y", "x"), valid)},
        coords={"s2_band": list(S2_BANDS), "cov_band": list(COVARIATES), **coords},
    )


# ------------------------------------------------------------------------------------------- the settings


def test_settings_have_the_reference_features_and_hyperparameters():
    assert list(SETTINGS) == ["rf11-notebook", "rf-script"]
    assert set(typing.get_args(RFConfig.model_fields["setting"].annotation)) == set(SETTINGS)
    notebook, script = SETTINGS["rf11-notebook"], SETTINGS["rf-script"]
    assert notebook.features == NOTEBOOK_FEATURES == (*S2_BANDS, *COVARIATES, "lon", "lat")
    assert len(notebook.features) == 21 and notebook.trees == 100
    assert script.features == SCRIPT_FEATURES == (*S2_BANDS, *COVARIATES) and len(script.features) == 19
    assert script.trees == 253
    assert notebook.params("permafrost") == notebook.params("taxonomy") == {
        "n_estimators": 100, "max_depth": None, "min_samples_split": 2}
    assert script.params("permafrost") == {"n_estimators": 253, "max_depth": 16, "min_samples_split": 5}
    assert script.params("taxonomy") == {"n_estimators": 253, "max_depth": None, "min_samples_split": 2}
    # overrides: trees for both tasks, depth 0 = unlimited
    assert script.params("permafrost", trees=40, max_depth=0) == {
        "n_estimators": 40, "max_depth": None, "min_samples_split": 5}
    assert script.params("taxonomy", max_depth=7)["max_depth"] == 7


def test_fitted_forests_carry_the_settings_hyperparameters_and_the_card_says_so():
    rng = np.random.default_rng(0)
    x19 = rng.normal(size=(200, 19)).astype(np.float32)
    pf, order = (x19[:, 6] > 0).astype(int), np.digitize(x19[:, 12], [-1.0, 0.0, 1.0]) * 2
    model = RFModel.fit("permafrost", x19, pf, "rf-script", seed=3)
    model = RFModel.fit("taxonomy", x19, order, "rf-script", seed=3, model=model)
    p = model.forests["permafrost"].get_params()
    assert (p["n_estimators"], p["max_depth"], p["min_samples_split"]) == (253, 16, 5)
    # everything else at scikit-learn's defaults, as in the reference
    assert (p["criterion"], p["max_features"], p["bootstrap"], p["class_weight"], p["min_samples_leaf"]) == (
        "gini", "sqrt", True, None, 1)
    t = model.forests["taxonomy"].get_params()
    assert (t["n_estimators"], t["max_depth"], t["min_samples_split"]) == (253, None, 2)
    assert max(e.get_depth() for e in model.forests["permafrost"].estimators_) <= 16
    assert model.card["setting"] == "rf-script" and model.card["features"] == list(SCRIPT_FEATURES)
    assert model.card["tasks"]["permafrost"] | {"n_train": 0} == {
        "trees": 253, "max_depth": 16, "min_samples_split": 5, "seed": 3, "n_train": 0, "classes": [0, 1]}
    with pytest.raises(MisoError, match="rf-script takes 19 features"):
        RFModel.fit("permafrost", rng.normal(size=(5, 21)), np.zeros(5), "rf-script")
    with pytest.raises(MisoError, match="rf11-notebook takes 21 features"):
        RFModel.fit("permafrost", x19, pf, "rf11-notebook")
    with pytest.raises(MisoError, match="cannot add a rf11-notebook forest"):
        RFModel.fit("permafrost", rng.normal(size=(50, 21)), pf[:50], "rf11-notebook", trees=5, model=model)
    with pytest.raises(MisoError, match="unknown RF setting 'rf-12'.*rf11-notebook, rf-script"):
        RFModel.fit("permafrost", x19, pf, "rf-12")


def test_evaluate_rf_config_and_the_moved_keys():
    assert EvaluateConfig().rf.setting == "rf-script" and EvaluateConfig().rf.trees is None
    assert EvaluateConfig(rf={"setting": "rf11-notebook", "trees": 30, "jobs": 2}).rf.trees == 30
    for old in ({"rf_trees": 100}, {"rf_jobs": 1}):
        with pytest.raises(ValueError, match=f"{next(iter(old))} moved: write evaluate.rf: .setting: rf-script"):
            EvaluateConfig(**old)
    with pytest.raises(ValueError, match="rf-script"):
        EvaluateConfig(rf={"setting": "rf-12"})


# ---------------------------------------------------------------------------------------------- features


def test_lonlat_in_degrees_at_known_points():
    # EPSG:3338 (Alaska Albers) has its natural origin at 154 W, 50 N with no false easting/northing
    lon, lat = lonlat(np.array([0.0, 0.0]), np.array([0.0, 1_111_950.0]))
    np.testing.assert_allclose(lon, [-154.0, -154.0], atol=1e-9)  # the central meridian stays -154
    assert lat[0] == pytest.approx(50.0, abs=1e-9) and 59.9 < lat[1] < 60.1  # ~111 km per degree up it
    # UTM 6N: its central meridian is 147 W; 500 km false easting, the equator at northing 0
    lon, lat = lonlat(np.array([500_000.0]), np.array([0.0]), "EPSG:32606")
    assert (lon[0], lat[0]) == (pytest.approx(-147.0, abs=1e-9), pytest.approx(0.0, abs=1e-9))


def test_feature_order_of_each_setting_from_the_point_sampler():
    inputs = fake_inputs()
    x, y = np.array([260_055.0, 260_105.0]), np.array([1_664_955.0, 1_664_905.0])
    samples = sample_pixels(inputs, x, y)
    lon, lat = lonlat(x, y, "EPSG:3338")
    for names in (NOTEBOOK_FEATURES, SCRIPT_FEATURES, LEGACY_FEATURES):
        feats = features_from_samples(samples, names)
        assert feats.shape == (2, len(names)) and feats.dtype == np.float32
        assert np.all(np.floor(feats[0, :9] / 1000) == np.arange(9))  # bands in S2_BANDS order
        assert np.all(np.round(feats[0, 9:19] / -10) == np.arange(10))  # covariates in COVARIATES order
    notebook = features_from_samples(samples, NOTEBOOK_FEATURES)
    np.testing.assert_array_equal(notebook[:, 19:], np.column_stack([lon, lat]).astype(np.float32))
    assert -160 < notebook[0, 19] < -140 and 55 < notebook[0, 20] < 72  # degrees in Alaska, lon first
    legacy = features_from_samples(samples, LEGACY_FEATURES)
    assert legacy[0, 19] == 260_055.0 and legacy[1, 20] == 1_664_905.0


def test_chunk_features_use_the_chunks_own_crs():
    inputs = fake_inputs(crs="EPSG:32606", x0=400_000.0, y0=7_200_000.0)
    feats, valid = features_from_inputs(inputs, (slice(0, 20), slice(0, 30)), NOTEBOOK_FEATURES)
    xx, yy = np.meshgrid(inputs["x"].values, inputs["y"].values)
    lon, lat = lonlat(xx.ravel(), yy.ravel(), "EPSG:32606")
    np.testing.assert_array_equal(feats[:, 19], lon.astype(np.float32))
    np.testing.assert_array_equal(feats[:, 20], lat.astype(np.float32))
    assert not valid[0, 0] and valid.sum() == 20 * 30 - 1


# ------------------------------------------------------------------------------------------ the model


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
    assert again.card["features"] == list(NOTEBOOK_FEATURES) and again.setting == "rf11-notebook"
    assert json.loads(card.read_text())["crs"] == "EPSG:3338"
    card.write_text('{"format": "other"}')
    with pytest.raises(MisoError, match="not an RF-11 card"):
        load_rf(path)


def _pixel_centres(inputs, interior, k, seed=0):
    """(rows, cols, x, y) of ``k`` random valid interior pixels of ``inputs`` (x, y: the pixel centres)."""
    rows, cols = interior
    valid = inputs["valid"].values[rows, cols]
    pick = np.random.default_rng(seed).choice(np.flatnonzero(valid.ravel()), k, replace=False)
    r, c = np.unravel_index(pick, valid.shape)
    return r, c, inputs["x"].values[cols][c], inputs["y"].values[rows][r]


def test_degree_setting_maps_what_predict_proba_gives_for_the_sampled_pixels():
    inputs = fake_inputs(h=40, w=50, crs="EPSG:3338", x0=-150_000.0, y0=1_700_000.0)
    interior = (slice(5, 35), slice(5, 45))
    # a forest that needs latitude: permafrost north of the chunk's middle
    xs, ys = inputs["x"].values, inputs["y"].values
    train = sample_pixels(inputs, *[a.ravel() for a in np.meshgrid(xs, ys)])
    feats = features_from_samples(train, NOTEBOOK_FEATURES)
    north = (feats[:, 20] > np.nanmedian(feats[:, 20])).astype(int)
    model = RFModel.fit("permafrost", feats, north, "rf11-notebook", trees=20)
    model = RFModel.fit("taxonomy", feats, north * 3, "rf11-notebook", trees=20, model=model)
    out = model.predict_chunk(inputs, interior)
    r, c, x, y = _pixel_centres(inputs, interior, 200)
    expected = features_from_samples(sample_pixels(inputs, x, y), NOTEBOOK_FEATURES)
    np.testing.assert_array_equal(out["permafrost_probability"].values[r, c],
                                  model.predict_proba("permafrost", expected))
    np.testing.assert_array_equal(out["taxonomy_probability"].values[:, r, c].T,
                                  model.predict_proba("taxonomy", expected))
    pf = out["permafrost_probability"].values
    assert np.nanmean(pf[:10]) > 0.9 and np.nanmean(pf[-10:]) < 0.1  # the map follows latitude


def _legacy_card(model: RFModel) -> dict:
    """The card an earlier version wrote: no setting, no CRS, x/y metre features, fewer task keys."""
    tasks = {t: {k: v[k] for k in ("trees", "seed", "n_train", "classes")} for t, v in model.card["tasks"].items()}
    return {"features": list(LEGACY_FEATURES), "tasks": tasks, "format": "rf11", "file_format": "skops",
            "sklearn_version": "1.5.0", "software_version": "0.9.0", "class_names": {"taxonomy": list(SOIL_ORDERS)}}


def test_a_card_of_an_earlier_version_loads_and_maps_with_xy_metres(tmp_path):
    inputs = fake_inputs(h=30, w=30, crs="EPSG:3338")
    interior = (slice(0, 30), slice(0, 30))
    xs, ys = inputs["x"].values, inputs["y"].values
    feats = features_from_samples(sample_pixels(inputs, *[a.ravel() for a in np.meshgrid(xs, ys)]), LEGACY_FEATURES)
    east = (feats[:, 19] > np.nanmedian(feats[:, 19])).astype(int)  # column 19 is x in metres
    model = RFModel.fit("permafrost", feats, east, "rf11-notebook", trees=10)  # any 21-column forest
    path, card_path = save_rf(model, tmp_path / "old.skops")
    card_path.write_text(json.dumps(_legacy_card(model)))
    old = load_rf(path)
    assert old.setting == "legacy-xy" and old.feature_names == LEGACY_FEATURES
    out = old.predict_chunk(inputs, interior)
    r, c, x, y = _pixel_centres(inputs, interior, 100, seed=1)
    expected = old.predict_proba("permafrost", features_from_samples(sample_pixels(inputs, x, y), LEGACY_FEATURES))
    np.testing.assert_array_equal(out["permafrost_probability"].values[r, c], expected)
    pf = out["permafrost_probability"].values
    assert np.nanmean(pf[:, -5:]) > 0.9 and np.nanmean(pf[:, :5]) < 0.1  # mapped with x metres, as trained
    # a card that names a setting must carry exactly that setting's features
    for bad, needle in (({"setting": "rf-script"}, "setting 'rf-script' with features"),
                        ({"setting": "rf-12", "features": list(SCRIPT_FEATURES)}, "setting 'rf-12'"),
                        ({"features": list(NOTEBOOK_FEATURES)}, "setting 'legacy-xy'")):
        card_path.write_text(json.dumps(_legacy_card(model) | bad))
        with pytest.raises(MisoError, match=needle) as err:
            load_rf(path)
        assert "\n" not in str(err.value)
