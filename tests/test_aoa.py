"""Area of applicability: CAST's DI and threshold on embeddings with known answers; the checkpoint sidecar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNetConfig, build_model, load_checkpoint, read_model_card, save_checkpoint
from miso_mapper.model.aoa import aoa_path, fit_aoa, head_weights, load_aoa, save_aoa, whisker_threshold


def brute_force(emb: np.ndarray, folds: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean pairwise distance and the training DIs, written out plainly (float64, all pairs)."""
    z = (emb - emb.mean(0)) / emb.std(0, ddof=1) * w
    d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
    n = len(z)
    mean = d[~np.eye(n, dtype=bool)].mean()
    other = np.where(folds[:, None] != folds[None, :], d, np.inf)
    return mean, other.min(1) / mean


def test_whisker_is_q75_plus_1_5_iqr_capped_at_the_maximum() -> None:
    # Q25 2, Q75 4 -> 4 + 1.5 * 2 = 7 (below the maximum 100)
    assert whisker_threshold(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(7.0)
    # Q25 1.75, Q75 3.25 -> 5.5, above the maximum 4: capped
    assert whisker_threshold(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(4.0)


def test_fit_matches_cast_by_hand_and_a_far_cluster_is_outside() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    folds = np.repeat(np.arange(3), 20)
    w = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    aoa = fit_aoa(emb, folds, w)
    mean, di = brute_force(emb.astype(np.float64), folds, w.astype(np.float64))
    assert aoa.mean_distance == pytest.approx(mean, rel=1e-6)
    np.testing.assert_allclose(aoa.train_di, di, rtol=1e-6)
    q25, q75 = np.percentile(di, [25, 75])
    assert aoa.threshold == pytest.approx(min(q75 + 1.5 * (q75 - q25), di.max()), rel=1e-6)
    near = torch.from_numpy(emb[:5] + 0.01)
    far = torch.from_numpy(rng.normal(size=(5, 8)).astype(np.float32) + 25.0)
    assert bool(aoa.inside(aoa.index(near)).all())
    assert not bool(aoa.inside(aoa.index(far)).any())
    # DI of a new point: nearest training point (any fold) / mean distance
    z_far = (far.numpy().astype(np.float64) - emb.mean(0)) / emb.std(0, ddof=1) * w
    z_tr = (emb - emb.mean(0)) / emb.std(0, ddof=1) * w
    expect = np.sqrt(((z_far[:, None] - z_tr[None]) ** 2).sum(-1)).min(1) / mean
    np.testing.assert_allclose(aoa.index(far).numpy(), expect, rtol=1e-4)


def test_training_di_looks_only_at_other_folds() -> None:
    # every point has a twin in its own fold: ignoring folds would give DI 0 everywhere
    base = np.random.default_rng(1).normal(size=(10, 4))
    emb = np.concatenate([base, base + 1e-3])
    folds = np.concatenate([np.arange(10) % 2, np.arange(10) % 2])
    aoa = fit_aoa(emb, folds, np.ones(4))
    assert aoa.train_di.min() > 0.05
    single = fit_aoa(emb, np.zeros(20, int), np.ones(4))  # one fold: nearest other point
    assert single.train_di.max() < 0.01


def test_zero_weight_dimension_does_not_count() -> None:
    rng = np.random.default_rng(2)
    emb = rng.normal(size=(30, 3))
    aoa = fit_aoa(emb, np.arange(30) % 5, np.array([1.0, 1.0, 0.0]))
    off = torch.tensor(emb[:1], dtype=torch.float32)
    off[0, 2] += 1000.0
    assert float(aoa.index(off)[0]) == pytest.approx(0.0, abs=1e-5)


def test_head_weights_are_column_norms_of_the_first_head_layer() -> None:
    model = build_model(MisoNetConfig.preset("tiny", "permafrost"))
    w = head_weights(model)
    assert w.shape == (model.config.emb_dim,)
    torch.testing.assert_close(w, model.out[0].weight.detach().pow(2).sum(0).sqrt())


def _fitted(e: int = 128, n: int = 40):
    rng = np.random.default_rng(3)
    return fit_aoa(rng.normal(size=(n, e)), np.arange(n) % 4, rng.uniform(0.1, 1, e))


def test_sidecar_round_trip_and_checkpoint_attaches_it(tmp_path: Path) -> None:
    aoa = _fitted()
    back = load_aoa(save_aoa(aoa, tmp_path / "a.aoa.safetensors"), dim=128)
    probe = torch.randn(7, 128)
    torch.testing.assert_close(back.index(probe), aoa.index(probe))
    assert (back.threshold, back.mean_distance, back.method) == (aoa.threshold, aoa.mean_distance, "cast-di")

    model = build_model(MisoNetConfig.preset("tiny", "permafrost")).eval()
    path = save_checkpoint(model, tmp_path / "permafrost.safetensors", aoa=aoa)
    assert aoa_path(path) == tmp_path / "permafrost.aoa.safetensors" and aoa_path(path).is_file()
    card = read_model_card(path)
    assert card.aoa is not None and card.aoa.file == "permafrost.aoa.safetensors"
    assert card.aoa.threshold == pytest.approx(aoa.threshold)
    loaded = load_checkpoint(path)
    assert loaded.aoa is not None
    torch.testing.assert_close(loaded.aoa.index(probe), aoa.index(probe))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aoa.safetensors", "permafrost.aoa.safetensors",
                                                        "permafrost.safetensors"]  # no temporary left

    save_checkpoint(model, path)  # without AOA: the old sidecar must not be picked up
    assert not aoa_path(path).exists() and load_checkpoint(path).aoa is None


def test_missing_sidecar_is_no_aoa_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    path = save_checkpoint(model, tmp_path / "taxonomy.safetensors", aoa=_fitted())
    aoa_path(path).unlink()
    assert load_checkpoint(path).aoa is None
    save_aoa(_fitted(n=41), aoa_path(path))
    with pytest.raises(MisoError, match="sha256 differs"):
        load_checkpoint(path)


def test_sidecar_of_another_width_is_refused_by_the_network(tmp_path: Path) -> None:
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    path = save_checkpoint(model, tmp_path / "taxonomy.safetensors")
    save_aoa(_fitted(e=16), aoa_path(path))
    with pytest.raises(MisoError, match="16-wide embeddings, the network's are 128"):
        load_checkpoint(path)


def _one_line(path: Path, dim: int | None = 128) -> str:
    with pytest.raises(MisoError) as info:
        load_aoa(path, dim=dim)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_sidecar_files_fail_in_one_line(tmp_path: Path) -> None:
    assert "does not exist" in _one_line(tmp_path / "none.aoa.safetensors")
    good = save_aoa(_fitted(), tmp_path / "good.aoa.safetensors")
    data = good.read_bytes()
    cut = tmp_path / "cut.aoa.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    assert "not a readable" in _one_line(cut)
    pickled = tmp_path / "pickle.aoa.safetensors"
    torch.save({"train_embeddings": torch.zeros(2, 2)}, pickled)
    assert "not an area-of-applicability safetensors file" in _one_line(pickled)
    bare = tmp_path / "bare.aoa.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    assert "no area-of-applicability metadata" in _one_line(bare)
    aoa = _fitted()
    aoa.centre = aoa.centre[:5]
    assert "inconsistent shapes" in _one_line(save_aoa(aoa, tmp_path / "shape.aoa.safetensors"))
    assert "16-wide" not in _one_line(good, dim=16) and "128-wide" in _one_line(good, dim=16)
    aoa = _fitted()
    aoa.mean_distance = float("nan")
    assert "not finite" in _one_line(save_aoa(aoa, tmp_path / "nan.aoa.safetensors"))


def test_checkpoint_show_names_the_sidecar(tmp_path: Path) -> None:
    from miso_mapper.model.commands import describe

    model = build_model(MisoNetConfig.preset("tiny", "permafrost")).eval()
    aoa = _fitted()
    rows = dict(describe(save_checkpoint(model, tmp_path / "permafrost.safetensors", aoa=aoa)))
    assert rows["area of applicability"].startswith("permafrost.aoa.safetensors (sha256 ")
    assert f"cast-di, threshold DI {aoa.threshold:.3g}" in rows["area of applicability"]
