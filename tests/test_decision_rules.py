"""Prior matching: the permafrost 'prevalence' threshold and the soil-order class shifts, and how the shifts
travel in the model card to every prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNetConfig, build_model, load_checkpoint, save_checkpoint
from miso_mapper.model.card import ModelCard
from miso_mapper.train.threshold import choose_threshold, match_class_prior


def test_prevalence_threshold_maps_the_training_share_and_needs_no_labels() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 1000) ** 2  # leans low: at 0.5 only ~29 % would be permafrost
    t, note = choose_threshold(np.full(1000, -999), p, "prevalence", prevalence=0.6)
    assert note is None and t < 0.2
    assert np.mean(p >= t) == pytest.approx(0.6, abs=0.002)
    assert choose_threshold(np.zeros(0), np.zeros(0), "prevalence", prevalence=0.6)[0] == 0.5
    t, note = choose_threshold(np.ones(5), p[:5], "prevalence", prevalence=1.0)
    assert t == 0.5 and "fell back" in note


def test_class_prior_matching_recovers_the_target_frequencies() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 7)) + np.array([2.0, 1.5, 0, 0, 0, -1, -3])  # rare orders under-predicted
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    prior = np.array([300, 250, 200, 100, 80, 50, 20])
    before = np.bincount(prob.argmax(1), minlength=7) / 2000
    bias = match_class_prior(prob, prior)
    after = np.bincount((np.log(prob) + bias).argmax(1), minlength=7) / 2000
    target = prior / prior.sum()
    assert np.abs(before - target).sum() > 0.3
    assert np.abs(after - target).max() < 0.01
    assert bias.mean() == pytest.approx(0.0, abs=1e-9)
    absent = match_class_prior(prob, np.array([300, 250, 200, 100, 80, 50, 0]))
    assert not np.any((np.log(prob) + absent).argmax(1) == 6)


def test_class_bias_travels_in_the_card_and_shifts_every_probability(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    logits = torch.randn(3, 5, 7)
    plain = model.predict_proba(logits)
    model.logit_bias = torch.tensor([3.0, 0, 0, 0, 0, 0, -3.0])
    path = save_checkpoint(model, tmp_path / "tax.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.card.class_bias == pytest.approx((3.0, 0, 0, 0, 0, 0, -3.0))
    shifted = loaded.predict_proba(logits)
    assert torch.allclose(shifted, (logits + model.logit_bias).softmax(-1))
    assert (shifted[..., 0] > plain[..., 0]).all() and (shifted[..., 6] < plain[..., 6]).all()
    assert set(loaded.state_dict()) == set(build_model(MisoNetConfig.preset("tiny", "taxonomy")).state_dict())

    card = ModelCard(config=model.config, class_bias=(1.0, 2.0))
    model.logit_bias = None
    bad = save_checkpoint(model, tmp_path / "bad.safetensors", card)
    with pytest.raises(MisoError, match="class_bias has 2 values"):
        load_checkpoint(bad)
