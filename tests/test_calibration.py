"""Temperature scaling, conformal prediction sets and the calibration / uncertainty figures of evaluate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from miso_mapper.evaluate.uncertainty import (
    error_auroc,
    expected_calibration_error,
    reliability_curve,
    uncertainty,
    uncertainty_metrics,
)
from miso_mapper.model.calibration import fit_temperature, nll, probabilities
from miso_mapper.model.card import ConformalRecord
from miso_mapper.model.conformal import (
    conformal_qhat,
    prediction_set_bits,
    prediction_sets,
    set_bits,
    set_coverage,
)


def _overconfident(task: str, t_true: float, n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from calibrated logits z, and the logits a network reports: z * t_true."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n) if task == "permafrost" else rng.normal(0, 1.5, (n, 7))
    p = probabilities(z, task)
    y = (rng.random(n) < p).astype(int) if task == "permafrost" else np.array([rng.choice(7, p=q) for q in p])
    return z * t_true, y


@pytest.mark.parametrize(("task", "t_true"), [("permafrost", 2.5), ("permafrost", 0.6), ("taxonomy", 2.0)])
def test_temperature_scaling_recovers_the_temperature_of_constructed_logits(task, t_true):
    logits, y = _overconfident(task, t_true)
    t = fit_temperature(logits, y, task)
    assert t == pytest.approx(t_true, rel=0.06)
    assert nll(logits, y, task, t) < nll(logits, y, task, 1.0)


def test_nll_of_hand_made_points():
    # permafrost: logit 0 -> p 0.5 for both points; soil order: uniform logits -> p 1/7
    assert nll(np.zeros(2), np.array([0, 1]), "permafrost") == pytest.approx(math.log(2))
    assert nll(np.zeros((3, 7)), np.array([0, 3, 6]), "taxonomy") == pytest.approx(math.log(7))
    # T = 2 halves the logit: -log sigmoid(2 / 2)
    assert nll(np.array([2.0]), np.array([1]), "permafrost", 2.0) == pytest.approx(math.log1p(math.exp(-1)))


def test_expected_calibration_error_of_a_known_case():
    # permafrost, 15 bins: four points at 0.9 (bin 13), three of them permafrost -> gap 0.15;
    # two at 0.1 (bin 1), none permafrost -> gap 0.1; ECE = (4 * 0.15 + 2 * 0.1) / 6
    y = np.array([1, 1, 1, 0, 0, 0])
    p = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    assert expected_calibration_error(y, p, "permafrost") == pytest.approx((4 * 0.15 + 2 * 0.1) / 6)
    curve = reliability_curve(y, p, "permafrost")
    assert curve["count"][13] == 4 and curve["count"][1] == 2 and sum(curve["count"]) == 6
    # soil order: top probability 0.6 at both points, one right -> gap 0.1
    probs = np.array([[0.6, 0.4] + [0] * 5, [0.4, 0.6] + [0] * 5])
    assert expected_calibration_error(np.array([0, 0]), probs, "taxonomy") == pytest.approx(0.1)


def test_calibration_lowers_the_ece_of_overconfident_probabilities():
    logits, y = _overconfident("taxonomy", 2.0, n=5000)
    before = expected_calibration_error(y, probabilities(logits, "taxonomy"), "taxonomy")
    after = expected_calibration_error(y, probabilities(logits, "taxonomy", fit_temperature(logits, y, "taxonomy")),
                                       "taxonomy")
    assert before > 0.08 and after < 0.03


def test_uncertainty_is_normalised_entropy_and_ranks_errors():
    assert uncertainty(np.array([0.5, 0.0, 1.0]), "permafrost") == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)
    assert uncertainty(np.full((1, 7), 1 / 7), "taxonomy") == pytest.approx([1.0])
    y = np.array([1, 1, 0, 0])
    # threshold 0.6: the one error (0.52) is the most uncertain point -> AUROC 1
    assert error_auroc(y, np.array([0.99, 0.52, 0.3, 0.02]), "permafrost", 0.6) == pytest.approx(1.0)
    # a confident error (0.02 for permafrost) below two uncertain hits, above one sure hit -> 1/3
    assert error_auroc(y, np.array([0.02, 0.6, 0.4, 0.01]), "permafrost") == pytest.approx(1 / 3)
    assert math.isnan(error_auroc(y, np.array([0.9, 0.9, 0.1, 0.1]), "permafrost"))


def test_conformal_qhat_is_the_finite_sample_quantile():
    probs = np.tile(np.eye(7)[0], (9, 1)) * 0 + 1 / 7
    p_true = np.linspace(0.1, 0.9, 9)
    probs[:, 0] = p_true
    scores = np.sort(1 - p_true)
    # n = 9, coverage 0.9: rank ceil(10 * 0.9) = 9 -> the largest score; coverage 0.5: rank 5
    assert conformal_qhat(probs, np.zeros(9), 0.9) == pytest.approx(scores[8])
    assert conformal_qhat(probs, np.zeros(9), 0.5) == pytest.approx(scores[4])
    # n = 8: rank 9 > 8 -> every order in every set
    assert conformal_qhat(probs[:8], np.zeros(8), 0.9) == 1.0
    assert prediction_sets(probs[:1], 1.0).all()


@pytest.mark.parametrize("coverage", [0.8, 0.9])
def test_conformal_sets_cover_exchangeable_test_points_at_the_nominal_rate(coverage):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.full(7, 0.7), 12000)
    noisy = 0.7 * probs + 0.3 * rng.dirichlet(np.ones(7), 12000)  # a network's imperfect probabilities
    y = np.array([rng.choice(7, p=q) for q in probs])
    qhat = conformal_qhat(noisy[:2000], y[:2000], coverage)
    measured, size = set_coverage(prediction_sets(noisy[2000:], qhat), y[2000:])
    assert abs(measured - coverage) < 0.015
    assert 1.0 < size < 7.0


def test_prediction_set_bits_on_tensors_equal_the_numpy_twin_and_a_hand_made_set():
    probs = np.array([[0.5, 0.3, 0.1, 0.05, 0.05, 0, 0], [0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3]])
    # qhat 0.75 -> orders with p >= 0.25: {0, 1} -> 0b11; {6} -> 64
    bits = prediction_set_bits(torch.tensor(probs, dtype=torch.float32), 0.75)
    assert bits.dtype == torch.uint8 and bits.tolist() == [3, 64]
    assert set_bits(prediction_sets(probs, 0.75)).tolist() == [3, 64]
    grid = torch.rand(3, 4, 7).softmax(-1)
    assert torch.equal(prediction_set_bits(grid, 0.8), torch.from_numpy(set_bits(prediction_sets(grid.numpy(), 0.8))))
    assert prediction_set_bits(torch.ones(1, 7), 0.5).item() == 127


def test_uncertainty_metrics_of_one_fold():
    logits, y = _overconfident("taxonomy", 2.0, n=3000, seed=5)
    t = fit_temperature(logits[:1000], y[:1000], "taxonomy")
    prob = probabilities(logits[1000:], "taxonomy", t)
    record = ConformalRecord(coverage=0.9, qhat=conformal_qhat(probabilities(logits[:1000], "taxonomy", t),
                                                                y[:1000], 0.9), n=1000)
    m = uncertainty_metrics(y[1000:], prob, probabilities(logits[1000:], "taxonomy"), "taxonomy",
                            temperature=t, conformal=record)
    assert m["ece_after"] < m["ece_before"]
    assert m["error_auroc"] > 0.6
    assert abs(m["conformal_coverage"] - 0.9) < 0.03 and m["conformal_nominal"] == 0.9
