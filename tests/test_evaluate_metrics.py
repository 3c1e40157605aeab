"""Evaluation metrics against hand-computed and scikit-learn values, and region assignment."""

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.evaluate.metrics import binary_metrics, majority_prediction, multiclass_metrics, reliability
from miso_mapper.evaluate.regions import OUTSIDE, assign_regions


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.8, 0.1, 0.55])
    m = binary_metrics(y, p)
    # predictions 1 1 0 0 1 1 0 1 -> TP(1)=4, FP(1)=1, FN(1)=1, TN=2
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision_1"] == pytest.approx(4 / 5)
    assert m["recall_1"] == pytest.approx(4 / 5)
    assert m["f1_1"] == pytest.approx(0.8)
    assert m["precision_0"] == pytest.approx(2 / 3)
    assert m["recall_0"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert np.isnan(binary_metrics(np.ones(3), np.array([0.2, 0.7, 0.9]))["auc"])


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 200)
    proba = rng.dirichlet(np.ones(7), 200)
    proba[np.arange(200), y] += rng.uniform(0, 0.6, 200)  # some skill
    pred = proba.argmax(1)
    m = multiclass_metrics(y, proba)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    for avg in ("macro", "weighted"):
        assert m[f"precision_{avg}"] == pytest.approx(precision_score(y, pred, average=avg, zero_division=0))
        assert m[f"recall_{avg}"] == pytest.approx(recall_score(y, pred, average=avg, zero_division=0))
        assert m[f"f1_{avg}"] == pytest.approx(f1_score(y, pred, average=avg, zero_division=0))
    cm = np.asarray(m["confusion"])
    assert cm.shape == (7, 7) and cm.sum() == 200 and np.trace(cm) == (pred == y).sum()
    assert m["recall_per_class"][SOIL_ORDERS[3]] == pytest.approx(np.mean(pred[y == 3] == 3))


def test_per_class_recall_nan_for_absent_class():
    m = multiclass_metrics(np.array([0, 0, 2]), np.array([0, 2, 2]))
    assert np.isnan(m["recall_per_class"][SOIL_ORDERS[1]])
    assert m["recall_per_class"][SOIL_ORDERS[0]] == 0.5


def test_majority_baseline():
    p = majority_prediction(np.array([1, 1, 0]), 4, "permafrost")
    assert (p == 1).all() and binary_metrics(np.array([1, 0, 1, 1]), p)["accuracy"] == 0.75
    t = majority_prediction(np.array([2, 2, 5]), 3, "taxonomy")
    assert (t.argmax(1) == 2).all()


def test_reliability_bins():
    rel = reliability(np.array([0, 1, 1, 1]), np.array([0.05, 0.95, 0.92, 0.55]), bins=10)
    assert rel["count"][0] == 1 and rel["count"][9] == 2 and rel["count"][5] == 1
    assert rel["frequency"][9] == 1.0
    assert np.isnan(rel["confidence"][3])


def test_assign_regions_point_in_polygon(tmp_path):
    def square(x0, y0, x1, y1):
        return {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}

    doc = {"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
           "features": [{"type": "Feature", "properties": {"zone": "continuous"}, "geometry": square(0, 50, 100, 100)},
                        {"type": "Feature", "properties": {"zone": "sporadic"}, "geometry": square(0, 0, 100, 50)}]}
    path = tmp_path / "zones.geojson"
    path.write_text(json.dumps(doc))
    names = assign_regions(np.array([10.0, 10.0, 500.0, 50.0]), np.array([75.0, 25.0, 25.0, 50.0]), path, "zone")
    assert names.tolist() == ["continuous", "sporadic", OUTSIDE, "continuous"]
    with pytest.raises(Exception, match="no field"):
        assign_regions(np.array([1.0]), np.array([1.0]), path, "mlra_id")


def test_macro_averages_run_over_all_seven_orders_as_the_reference():
    # orders 0 and 2 present; the other five count 0 (the reference's compute_multi_ACC), scikit-learn's
    # default would average over the 2 present orders only
    m = multiclass_metrics(np.array([0, 0, 2]), np.array([0, 2, 2]))
    assert m["recall_macro"] == pytest.approx((0.5 + 1.0) / 7)
    assert m["precision_macro"] == pytest.approx((1.0 + 0.5) / 7)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 2 / 3) / 7)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["per_class"][SOIL_ORDERS[2]] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                                            "support": 1.0})
    assert np.isnan(m["per_class"][SOIL_ORDERS[1]]["f1"]) and m["per_class"][SOIL_ORDERS[1]]["precision"] == 0


def test_binary_balanced_accuracy_and_per_point_thresholds():
    y = np.array([1, 1, 1, 0, 0, 1, 0, 1])
    p = np.array([0.9, 0.6, 0.4, 0.2, 0.7, 0.8, 0.1, 0.55])
    assert binary_metrics(y, p)["balanced_accuracy"] == pytest.approx((4 / 5 + 2 / 3) / 2)
    # at 0.35 the 0.4 permafrost point is found: presence recall 1
    low = binary_metrics(y, p, 0.35)
    assert low["recall_1"] == 1.0 and low["precision_1"] == pytest.approx(5 / 6)
    # per-point thresholds (pooled folds): only the first half uses 0.35
    mixed = binary_metrics(y, p, np.array([0.35] * 4 + [0.5] * 4))
    assert mixed["recall_1"] == 1.0
    assert binary_metrics(y, p, np.array([0.5] * 4 + [0.35] * 4))["recall_1"] == pytest.approx(4 / 5)
    # one class only: balanced accuracy is the recall of that class
    assert binary_metrics(np.ones(3), np.array([0.2, 0.7, 0.9]))["balanced_accuracy"] == pytest.approx(2 / 3)


def test_a_folds_miso_predictions_come_calibrated_with_their_uncertainty_figures(tmp_path):
    from miso_mapper.evaluate.run import _MisoJob, _train_and_predict, _uncertainty
    from miso_mapper.model.calibration import probabilities
    from tests.test_train_loop import CFG, synthetic_chips

    chips, _ = synthetic_chips(32)
    labels = (np.arange(32) % 3).astype(np.float32)
    idx = np.arange(32)
    job = _MisoJob("random", 0, "taxonomy", idx[:24], idx[:16], idx[16:24], np.zeros(0, np.int64), idx[24:],
                   tmp_path / "run", np.arange(16) % 4)
    prob, raw, trained, (di, threshold) = _train_and_predict(job, chips, labels, CFG.model_copy(update={"epochs": 1}),
                                                             "tiny", None, None, 1)()
    assert di.shape == (8,) and np.isfinite(threshold) and (di >= 0).all()  # the fold's area of applicability
    t = trained.calibration.temperature
    assert t != 1.0 and trained.model.temperature == t
    # one forward pass: the calibrated probabilities are the raw ones with the logits divided by T
    assert prob == pytest.approx(probabilities(np.log(raw), "taxonomy", t), abs=1e-6)
    assert raw == pytest.approx(probabilities(np.log(prob), "taxonomy", 1 / t), abs=1e-6)
    m = _uncertainty(labels[job.test], prob, raw, "taxonomy", 0.5, trained)
    assert m["temperature"] == t and m["conformal_nominal"] == 0.9 and 0 <= m["conformal_coverage"] <= 1
    assert set(m) >= {"ece_before", "ece_after", "error_auroc", "conformal_set_size"}
