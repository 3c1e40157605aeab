"""The training loop on a handful of synthetic cached chips: the loss falls, and a killed run resumes to
exactly the uninterrupted result. Also the chip resampling geometry and the sampler's window coordinates."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from miso_mapper.config import TrainConfig
from miso_mapper.model import ModelCard, load_checkpoint, read_model_card, save_checkpoint
from miso_mapper.model.calibration import fit_temperature, probabilities
from miso_mapper.model.conformal import conformal_qhat
from miso_mapper.model.losses import class_weights, task_loss
from miso_mapper.train.batches import ChipSampler, SampleSpec
from miso_mapper.train.chips import ChipGeometry, ChipSet, resample_windows
from miso_mapper.train.loop import build_state, channel_statistics, epoch_anchors, predict_points, prepare, train_miso
from miso_mapper.train.schedule import LrSchedule
from miso_mapper.train.state import STATE_NAME
from miso_mapper.train.stopping import EarlyStopping
from miso_mapper.train.threshold import choose_threshold


def synthetic_chips(n=16, seed=0):
    """Tiny-network chips whose label is carried by the brightness of band 0 around the point."""
    rng = np.random.default_rng(seed)
    g = ChipGeometry(250, 64, 4)
    s = g.stored_size
    images = rng.uniform(0, 0.1, (n, 19, s, s)).astype(np.float32)
    labels = (np.arange(n) % 2).astype(np.float32)
    images[:, 0] += labels[:, None, None] * 0.8
    x = 260_000 + rng.uniform(0, 10_000, n)
    y = 1_660_000 + rng.uniform(0, 10_000, n)
    chips = ChipSet(np.array([f"P{i}" for i in range(n)]), x, y, images.astype(np.float16),
                    np.zeros((n, 19), np.float32), np.ones(n, bool), np.ones(n, np.float32), g, "test")
    return chips, labels


CFG = TrainConfig(epochs=3, batch_size=8, lr=2e-3, min_lr=1e-4, warmup_epochs=0.5, labels_per_chip=2,
                  random_pseudo_points=2, regular_pseudo_points=False, patience=10, num_threads=2, seed=3)


def test_training_reduces_loss_and_resumes_identically(tmp_path):
    chips, labels = synthetic_chips()
    train, val = np.arange(12), np.arange(12, 16)
    full = train_miso(chips, labels, train, val, "permafrost", CFG, "tiny", run_dir=tmp_path / "a")
    losses = [h["train_total"] for h in full.history]
    assert len(losses) == 3 and losses[-1] < losses[0]

    class Killed(Exception):
        pass

    def kill_after_first(epoch, metrics):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train_miso(chips, labels, train, val, "permafrost", CFG, "tiny", run_dir=tmp_path / "b",
                   on_epoch=kill_after_first)
    assert (tmp_path / "b" / STATE_NAME).exists()
    resumed = train_miso(chips, labels, train, val, "permafrost", CFG, "tiny", run_dir=tmp_path / "b")
    assert resumed.resumed_from == 1
    assert [h["train_total"] for h in resumed.history] == pytest.approx(losses, rel=1e-6, abs=1e-7)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    # a changed run does not resume a stale state
    other = train_miso(chips, labels, train, val, "permafrost", CFG.model_copy(update={"seed": 4, "epochs": 1}), "tiny",
                       run_dir=tmp_path / "b")
    assert other.resumed_from == 0


def test_stored_chip_centre_is_the_models_resize_of_the_crop_window():
    g = ChipGeometry.for_jitter(250, 64, 62)
    w = g.native_size
    rng = np.random.default_rng(0)
    native = rng.normal(size=(1, 2, w, w)).astype(np.float32)
    stored = resample_windows(native, g)
    assert stored.shape == (1, 2, g.stored_size, g.stored_size)
    c = w // 2
    crop = native[:, :, c - 125:c + 125, c - 125:c + 125]  # what cut_windows(size=250) gives (point at 125)
    expected = F.interpolate(torch.from_numpy(crop), size=(64, 64), mode="bilinear", align_corners=False).numpy()
    m = g.margin
    assert np.allclose(stored[:, :, m:m + 64, m:m + 64], expected, atol=1e-3)  # float32 grid coordinates


def test_sampler_places_the_anchor_where_mapping_queries_it():
    chips, labels = synthetic_chips(4)
    sampler = ChipSampler(chips, labels, np.arange(4), SampleSpec(2, 3, True))
    g = chips.geometry
    image, pixel, geo, lab = sampler.sample(0, g.margin, g.margin, np.random.default_rng(0))
    assert image.shape == (19, 64, 64) and pixel.shape == (2 + 3 + 36, 2) and lab.shape == (41,)
    ev = sampler.eval_batch(np.array([0]))
    assert np.allclose(pixel[0], ev.pixel[0, 0].numpy()) and lab[0] == labels[0]
    assert np.allclose(pixel[0], 1 / 250)  # pixel 125 of a 250 px window: -1 + (2 * 125 + 1) / 250
    # a shift of one model pixel moves the anchor by 250/64 native px the other way
    _, shifted, _, _ = sampler.sample(0, g.margin + 1, g.margin, np.random.default_rng(0))
    assert shifted[0, 0] == pytest.approx(pixel[0, 0] - 2 * g.scale / 250)
    assert (np.abs(pixel) <= 1).all() and (lab[2:] == -999).all()


def test_early_stopping_counts_epochs_without_an_improvement_beyond_min_delta():
    rule = EarlyStopping(patience=2, min_delta=0.1)
    assert rule.observe(1.0) and rule.best == 1.0
    assert not rule.observe(0.95)  # better, but not by more than min_delta
    assert rule.observe(0.5) and rule.bad_epochs == 0
    assert not rule.observe(0.6) and not rule.should_stop
    assert not rule.observe(0.45) and rule.should_stop and rule.best == 0.5


def test_plateau_schedule_lowers_the_rate_after_five_flat_epochs_past_warmup():
    cfg = TrainConfig(schedule="plateau", lr=1e-3, warmup_epochs=1, epochs=20)
    schedule = LrSchedule(cfg, steps_per_epoch=4)
    assert schedule.lr(0, 0) == pytest.approx(1e-5) and schedule.lr(0, 2) == pytest.approx(1e-5 + 0.99e-3 / 2)
    schedule.end_epoch(0, 5.0)  # warm-up epoch: not observed
    assert schedule.plateau.best == float("inf")
    schedule.end_epoch(1, 1.0)
    for epoch in range(2, 7):
        assert schedule.reductions == 0
        schedule.end_epoch(epoch, 1.0)
    assert schedule.reductions == 1 and schedule.plateau.bad_epochs == 0
    assert schedule.lr(7, 0) == pytest.approx(1e-4)
    cosine = LrSchedule(cfg.model_copy(update={"schedule": "cosine"}), steps_per_epoch=4)
    for epoch in range(10):
        cosine.end_epoch(epoch, 1.0)
    assert cosine.reductions == 0 and cosine.lr(20, 0) == pytest.approx(cfg.min_lr)


def test_training_state_file_round_trip(tmp_path):
    chips, labels = synthetic_chips(8)
    setup = prepare(chips, labels, np.arange(6), np.arange(6, 8), "permafrost", CFG, "tiny")
    state = build_state(setup)
    with torch.no_grad():
        next(state.model.parameters()).add_(1.0)
    state.epoch, state.history = 2, [{"epoch": 1.0}, {"epoch": 2.0}]
    state.stopping.observe(0.3)
    state.keep_best(2)
    state.schedule.reductions, state.schedule.plateau.bad_epochs = 1, 3
    path = tmp_path / STATE_NAME
    state.save(path, "run-a")
    fresh = build_state(setup)
    assert not fresh.load(path, "run-b") and fresh.epoch == 0  # another run's file is ignored
    assert fresh.load(path, "run-a")
    assert (fresh.epoch, fresh.history, fresh.best_epoch, fresh.stopping.best) == (2, state.history, 2, 0.3)
    assert (fresh.schedule.reductions, fresh.schedule.plateau.bad_epochs) == (1, 3)
    for a, b in zip(state.model.state_dict().values(), fresh.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert all(torch.equal(fresh.best_weights[k], v) for k, v in state.best_weights.items())
    # the file keeps the keys of earlier versions, so a run killed before an upgrade resumes
    saved = torch.load(path, weights_only=True)["state"]
    assert set(saved) == {"epoch", "history", "best_metric", "best_epoch", "best_state", "bad_epochs",
                          "reductions", "plateau_best", "plateau_bad"}


def test_class_weights_follow_scikit_learns_balanced_rule():
    labels = np.array([0, 0, 0, 1, -999], np.float32)
    assert class_weights(labels, 2, "balanced") == pytest.approx([4 / 6, 4 / 2])
    assert class_weights(labels, 2, "sqrt") == pytest.approx(np.sqrt([4 / 6, 4 / 2]))
    assert class_weights(labels, 2, "none") is None
    # an order absent from the training labels gets weight 1; the present ones n / (3 n_c)
    tax = class_weights(np.array([0, 0, 4, 6]), 7, "balanced")
    assert tax == pytest.approx([4 / 6, 1, 1, 1, 4 / 3, 1, 4 / 3])


def test_weighted_task_loss_multiplies_each_points_loss_by_its_class_weight():
    logits = torch.tensor([[[0.3], [-1.2], [2.0], [0.0]]])
    labels = torch.tensor([[1.0, 0.0, 1.0, -999.0]])
    w = torch.tensor([0.5, 3.0])
    per_point = F.binary_cross_entropy_with_logits(logits[0, :3, 0], labels[0, :3], reduction="none")
    expected = (per_point * torch.tensor([3.0, 0.5, 3.0])).mean()
    assert float(task_loss(logits, labels, "permafrost", w)) == pytest.approx(float(expected), rel=1e-6)
    tax_logits = torch.randn(1, 3, 7, generator=torch.Generator().manual_seed(0))
    tax_labels = torch.tensor([[2.0, 5.0, -999.0]])
    wt = torch.arange(1, 8, dtype=torch.float32)
    ce = F.cross_entropy(tax_logits[0, :2], torch.tensor([2, 5]), reduction="none")
    assert float(task_loss(tax_logits, tax_labels, "taxonomy", wt)) == pytest.approx(float((ce * wt[[2, 5]]).mean()))


def test_balanced_sampling_draws_each_anchor_class_equally_often():
    chips, _ = synthetic_chips()
    labels = np.zeros(16, np.float32)
    labels[[0, 5]] = 1  # 2 of the 14 training points are permafrost
    train = np.arange(14)
    shares = {}
    for sampling in ("uniform", "balanced"):
        cfg = CFG.model_copy(update={"sampling": sampling, "chips_per_epoch": 4000})
        setup = prepare(chips, labels, train, np.arange(14, 16), "permafrost", cfg, "tiny")
        anchors = epoch_anchors(setup, np.random.default_rng(0))
        assert anchors.size == 4000 and np.isin(anchors, train).all()
        shares[sampling] = float(np.mean(labels[anchors] == 1))
    assert shares["uniform"] == pytest.approx(2 / 14, abs=0.01)
    assert shares["balanced"] == pytest.approx(0.5, abs=0.03)


def test_threshold_rules_on_hand_made_validation_points():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.32, 0.4, 0.45, 0.6])
    assert choose_threshold(y, p, "fixed") == (0.5, None)
    # youden: >= 0.31 finds all 3 permafrost points and calls one of 5 others permafrost (J = 0.8)
    t, note = choose_threshold(y, p, "youden")
    assert t == pytest.approx(0.31) and note is None
    # f1: the same split (F1 6/7) beats >= 0.525 (F1 0) and >= 0.25 (F1 0.75)
    assert choose_threshold(y, p, "f1")[0] == pytest.approx(0.31)
    t, note = choose_threshold(np.zeros(4), p[:4], "youden")
    assert t == 0.5 and "one class" in note


def test_training_stores_the_chosen_threshold_and_a_changed_rule_resumes(tmp_path):
    chips, labels = synthetic_chips()
    train, val = np.arange(12), np.arange(12, 16)
    fixed = train_miso(chips, labels, train, val, "permafrost", CFG, "tiny", run_dir=tmp_path)
    assert fixed.threshold == 0.5 and fixed.notes == []
    youden_cfg = CFG.model_copy(update={"threshold": "youden"})
    chosen = train_miso(chips, labels, train, val, "permafrost", youden_cfg, "tiny", run_dir=tmp_path)
    assert chosen.resumed_from == CFG.epochs  # the rule is applied after training: nothing retrained
    val_prob = predict_points(chosen.model, ChipSampler(chips, labels, train, SampleSpec()), val)
    assert chosen.threshold == pytest.approx(choose_threshold(labels[val], val_prob, "youden")[0], abs=1e-6)
    assert chosen.threshold != 0.5
    path = save_checkpoint(chosen.model, tmp_path / "pf.safetensors",
                           ModelCard(decision_threshold=chosen.threshold))
    assert read_model_card(path).decision_threshold == pytest.approx(chosen.threshold)
    one_class = train_miso(chips, labels, train, np.array([13, 15]), "permafrost", youden_cfg, "tiny")
    assert one_class.threshold == 0.5 and "fell back to 0.5" in one_class.notes[0]
    tax = train_miso(chips, labels, train, val, "taxonomy", youden_cfg.model_copy(update={"epochs": 1}), "tiny")
    assert tax.threshold is None


def test_prior_matching_after_training_sets_the_taxonomy_shift_and_a_prevalence_threshold(tmp_path):
    chips, labels = synthetic_chips(32)
    train, val = np.arange(16), np.arange(16, 32)  # 16 held-out points: enough to match 7 orders
    tax_labels = (np.arange(32) % 3).astype(np.float32)
    cfg = CFG.model_copy(update={"epochs": 1, "class_prior": "match", "threshold": "prevalence"})
    tax = train_miso(chips, tax_labels, train, val, "taxonomy", cfg, "tiny", run_dir=tmp_path / "tax")
    assert tax.model.logit_bias is not None and tax.model.logit_bias.shape == (7,)
    sampler = ChipSampler(chips, tax_labels, train, SampleSpec())
    target = np.bincount(tax_labels[train].astype(int), minlength=7) / train.size
    matched = np.bincount(predict_points(tax.model, sampler, val).argmax(1), minlength=7) / val.size
    bias, tax.model.logit_bias = tax.model.logit_bias, None
    raw = np.bincount(predict_points(tax.model, sampler, val).argmax(1), minlength=7) / val.size
    # one epoch leaves nearly equal probabilities everywhere, so the match is coarse, never worse
    assert np.abs(matched - target).sum() <= np.abs(raw - target).sum() and matched[3:].sum() == 0
    tax.model.logit_bias = bias
    plain = train_miso(chips, tax_labels, train, val, "taxonomy", CFG.model_copy(update={"epochs": 1}), "tiny",
                       run_dir=tmp_path / "tax")
    assert plain.resumed_from == 1 and plain.model.logit_bias is None  # the rule alone: nothing retrained
    pf = train_miso(chips, labels, train, val, "permafrost", cfg, "tiny")
    val_prob = predict_points(pf.model, ChipSampler(chips, labels, train, SampleSpec()), val)
    share = float(np.mean(labels[train] == 1))
    assert pf.threshold == pytest.approx(choose_threshold(labels[val], val_prob, "prevalence", share)[0])


def test_training_calibrates_before_the_threshold_and_stores_conformal_sets(tmp_path):
    chips, labels = synthetic_chips(32)
    train, val = np.arange(16), np.arange(16, 32)
    cfg = CFG.model_copy(update={"threshold": "youden"})
    pf = train_miso(chips, labels, train, val, "permafrost", cfg, "tiny", run_dir=tmp_path / "pf")
    sampler = ChipSampler(chips, labels, train, SampleSpec())
    logits = predict_points(pf.model, sampler, val, logits=True)
    t = fit_temperature(logits, labels[val], "permafrost")
    assert pf.calibration.method == "temperature" and pf.calibration.n == 16 and pf.conformal is None
    assert pf.model.temperature == pytest.approx(t, rel=1e-4) and abs(np.log(t)) > 0.05
    calibrated = predict_points(pf.model, sampler, val)
    assert calibrated == pytest.approx(probabilities(logits, "permafrost", t), abs=1e-5)
    # the threshold is chosen on the calibrated probabilities (youden's midpoint moves with T)
    assert pf.threshold == pytest.approx(choose_threshold(labels[val], calibrated, "youden")[0], abs=1e-5)
    plain = train_miso(chips, labels, train, val, "permafrost", cfg.model_copy(update={"calibration": "none"}),
                       "tiny", run_dir=tmp_path / "pf")
    assert plain.resumed_from == cfg.epochs  # calibration is applied after training: nothing retrained
    assert plain.model.temperature is None and plain.calibration.method == "none"

    tax_labels = (np.arange(32) % 3).astype(np.float32)
    tax_cfg = CFG.model_copy(update={"epochs": 1, "class_prior": "match", "conformal_coverage": 0.8})
    tax = train_miso(chips, tax_labels, train, val, "taxonomy", tax_cfg, "tiny")
    shifted = predict_points(tax.model, ChipSampler(chips, tax_labels, train, SampleSpec()), val, logits=True)
    t = fit_temperature(shifted, tax_labels[val], "taxonomy")  # T is fitted after the class prior's shift
    assert tax.model.logit_bias is not None and tax.calibration.temperature == pytest.approx(t, rel=1e-4)
    qhat = conformal_qhat(probabilities(shifted, "taxonomy", t), tax_labels[val], 0.8)
    assert tax.conformal.qhat == pytest.approx(qhat, abs=1e-6) and tax.conformal.n == 16
    assert tax.conformal.coverage == 0.8 and 0 < qhat < 1
    path = save_checkpoint(tax.model, tmp_path / "tax.safetensors",
                           ModelCard(calibration=tax.calibration, conformal=tax.conformal))
    back = load_checkpoint(path)
    assert back.temperature == pytest.approx(t, rel=1e-4) and back.card.conformal == tax.conformal
    few = train_miso(chips, tax_labels, train, val[:3], "taxonomy", tax_cfg, "tiny")  # rank 4 > n = 3
    assert few.conformal.qhat == 1.0 and any("too few" in n for n in few.notes)


def test_channel_statistics_in_blocks_match_the_whole_array_in_float64():
    chips, _ = synthetic_chips(12, seed=5)
    chips.images[:, 3] += np.float16(40.0)  # a channel far from 0: the merged blocks must not lose its spread
    index = np.array([9, 1, 4, 7, 2, 11, 0])
    m, s = chips.geometry.margin, chips.geometry.input_size
    crops = chips.images[np.sort(index), :, m:m + s, m:m + s].astype(np.float64)
    one_chip = 19 * s * s * 4
    for block_bytes in (one_chip, 3 * one_chip, 1 << 30):  # 1 chip, 3 chips (a short last block), all at once
        mean, std = channel_statistics(chips, index, block_bytes=block_bytes)
        assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (19,)
        assert np.allclose(mean, crops.mean(axis=(0, 2, 3)), rtol=1e-6, atol=0)
        assert np.allclose(std, crops.std(axis=(0, 2, 3)), rtol=1e-6, atol=0)


def _demo_workflow(served_world, demo_world, out):
    from miso_mapper.config import load_workflow

    from .helpers import WORKFLOWS

    path = out / "demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((WORKFLOWS / "demo.yaml").read_text())
    return load_workflow(path, {"imagery": {"stac_url": served_world.stac_url},
                                "world": {"directory": str(demo_world)}, "output": {"directory": str(out)}})


def test_chip_cache_is_a_shared_memory_map_written_in_place_and_rebuilt_when_damaged(served_world, demo_world,
                                                                                      tmp_path, caplog):
    from miso_mapper.points import load_points
    from miso_mapper.train.chips import build_chips, chip_cache_path

    workflow = _demo_workflow(served_world, demo_world, tmp_path / "out")
    every = load_points(workflow)
    # file order differs from chunk order, so each chip must land at its own row, not where it was read
    pick = [int(np.argmax(every.x)), int(np.argmin(every.x)), int(np.argmax(every.y)), int(np.argmin(every.y)), 0, 1]
    points = every.subset(np.array(pick))
    g = ChipGeometry.for_jitter(250, 64, 62)
    chips = build_chips(workflow, points, g, tmp_path / "cache", batch=2)
    assert isinstance(chips.images, np.memmap) and chips.images.mode == "r"
    assert chips.images.shape == (6, 19, g.stored_size, g.stored_size) and chips.images.dtype == np.float16
    assert list(chips.ids) == list(points.ids) and np.isfinite(chips.images).all()
    assert np.abs(chips.images).max() > 0.1  # imagery, not the zeros of a sparse file
    path = chip_cache_path(tmp_path / "cache", chips.key)
    assert sorted(p.name for p in path.iterdir()) == ["chips.json", "features.npy", "images.npy", "valid.npy",
                                                      "window_valid.npy", "x.npy", "y.npy"]
    assert not list((tmp_path / "cache").glob("*.tmp*"))
    for i in (0, 4):  # one point alone, read in one batch: the same chip
        alone = build_chips(workflow, points.subset(np.array([i])), g, tmp_path / f"alone{i}")
        assert np.array_equal(alone.images[0], chips.images[i]) and np.array_equal(alone.features[0], chips.features[i])
    again = build_chips(workflow, points, g, tmp_path / "cache")
    assert isinstance(again.images, np.memmap) and np.array_equal(again.images, chips.images)
    expected = np.array(again.images)  # a copy: the maps must not be read once their file is truncated
    # a truncated image file (a full disk, a killed copy) is rebuilt with a warning, never fatal
    with open(path / "images.npy", "r+b") as f:
        f.truncate(1000)
    with caplog.at_level("WARNING"):
        rebuilt = build_chips(workflow, points, g, tmp_path / "cache")
    assert "ignoring unreadable chip cache" in caplog.text
    assert np.array_equal(rebuilt.images, expected) and np.array_equal(rebuilt.valid, chips.valid)


def test_aoa_of_a_trained_network_uses_its_embeddings_and_flags_foreign_imagery(tmp_path):
    from miso_mapper.model.aoa import head_weights
    from miso_mapper.train.applicability import aoa_folds, aoa_summary, fit_network_aoa
    from miso_mapper.train.loop import point_outputs

    chips, labels = synthetic_chips(n=20)
    train = np.arange(16)
    net = train_miso(chips, labels, train, np.arange(16, 20), "permafrost", CFG.model_copy(update={"epochs": 1}),
                     "tiny").model
    folds, how = aoa_folds(chips.x[train], chips.y[train], ["random"], 4, 0)
    assert how == "4 random folds" and np.bincount(folds).tolist() == [4, 4, 4, 4]
    aoa = fit_network_aoa(net, chips, labels, train, folds)
    sampler = ChipSampler(chips, labels, train, SampleSpec())
    probs, emb = point_outputs(net, sampler, train)
    np.testing.assert_allclose(probs, predict_points(net, sampler, train))
    # the CPU default batch (8 windows) gives what one pass over all 16 gives
    whole_probs, whole_emb = point_outputs(net, sampler, train, batch=16)
    np.testing.assert_allclose(probs, whole_probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb, whole_emb, rtol=1e-5, atol=1e-5)
    assert emb.shape == (16, net.config.emb_dim)
    z = (torch.from_numpy(emb) - aoa.centre) / aoa.scale * head_weights(net)
    torch.testing.assert_close(aoa.train_embeddings, z, rtol=1e-4, atol=1e-4)
    assert aoa.index(torch.from_numpy(emb)).max() < 1e-3  # training points are at distance 0 of themselves
    # imagery unlike any training chip: far outside
    chips.images[16:] = np.float16(30.0)
    _, foreign = point_outputs(net, sampler, np.arange(16, 20))
    assert bool((aoa.index(torch.from_numpy(foreign)) > aoa.threshold).all())
    assert aoa_summary(aoa).startswith(f"AOA: threshold DI {aoa.threshold:.2f}, ")


def test_aoa_folds_keep_spatial_clusters_together():
    from miso_mapper.train.applicability import aoa_folds

    centres = np.array([[0, 0], [20_000, 0], [0, 20_000], [20_000, 20_000]], float)
    rng = np.random.default_rng(0)
    xy = np.concatenate([c + rng.uniform(0, 100, (5, 2)) for c in centres])
    folds, how = aoa_folds(xy[:, 0], xy[:, 1], ["random", "spatial-1km", "spatial-10km"], 2, 0)
    assert how == "2 spatial-1km folds"
    per_cluster = folds.reshape(4, 5)
    assert all(np.unique(row).size == 1 for row in per_cluster)
    assert set(folds.tolist()) == {0, 1}
