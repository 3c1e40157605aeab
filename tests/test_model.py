"""The MISO network: implicit query, location encoder, losses, small-preset forward passes."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from miso_mapper.model import MisoNetConfig, build_model, info_nce, miso_loss, task_loss
from miso_mapper.model.implicit_query import StageQuery, neighbour_cells
from miso_mapper.model.location import GridCellEncoding, normalise_3338


def _identity_query(order: str) -> StageQuery:
    """A StageQuery on a 1-channel map whose MLP passes [feature, rel_x, rel_y] through unchanged."""
    q = StageQuery(feat_dim=1, hidden=(3, 3), out_dim=3, rel_coord_order=order)
    with torch.no_grad():
        eye = torch.eye(3)
        layers = q.mlp.layers
        layers[0].weight.copy_(eye)
        layers[0].bias.fill_(10.0)  # keep everything positive through the ReLUs
        layers[2].weight.copy_(eye)
        layers[2].bias.zero_()
        layers[4].weight.copy_(eye)
        layers[4].bias.fill_(-10.0)
        q.output_layer.weight.copy_(eye)
        q.output_layer.bias.zero_()
    return q


@pytest.mark.parametrize("order", ["reference", "xy"])
def test_liif_query_matches_hand_computation(order: str) -> None:
    n = 3
    fmap = np.array([[10.0 * r + c for c in range(n)] for r in range(n)])  # value = 10 row + col
    x, y = 0.1, -0.5  # x along columns, y along rows, in [-1, 1]
    centres = [-1 + (2 * k + 1) / n for k in range(n)]  # -2/3, 0, 2/3
    # the two columns / rows whose centres bracket the point
    c0 = math.floor((x + 1) * n / 2 - 0.5)
    r0 = math.floor((y + 1) * n / 2 - 0.5)
    assert (c0, r0) == (1, 0)
    vecs, weights = [], []
    for row, col in itertools.product((r0, r0 + 1), (c0, c0 + 1)):
        if order == "reference":  # the reference pairs x with the row centre and y with the column centre
            rel = ((x - centres[row]) * n, (y - centres[col]) * n)
        else:
            rel = ((x - centres[col]) * n, (y - centres[row]) * n)
        vecs.append(np.array([fmap[row, col], rel[0], rel[1]]))
        weights.append(1.0 / (abs(rel[0] * rel[1]) + 1e-9))
    w = np.array(weights) / sum(weights)
    mixed = sum(wi * v for wi, v in zip(w, vecs, strict=True))
    expected = (mixed - mixed.mean()) / np.sqrt(mixed.var() + 1e-5)  # final LayerNorm (weight 1, bias 0)

    q = _identity_query(order)
    feat = torch.tensor(fmap, dtype=torch.float32)[None, :, :, None]  # B=1, n, n, C=1
    got = q(feat, torch.tensor([[[x, y]]], dtype=torch.float32))[0, 0].detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # the weighted mix itself, before the norm, also matches (checks the weights, not just their shape)
    proj = q.project_cells(feat)
    q.norm = torch.nn.Identity()
    raw = q.query(proj, torch.tensor([[[x, y]]]))[0, 0].detach().numpy()
    np.testing.assert_allclose(raw, mixed, rtol=1e-4, atol=1e-4)


def test_neighbour_selection_matches_grid_sample_nearest() -> None:
    """The gather-based neighbour search equals the reference's grid_sample(nearest) formulation."""
    torch.manual_seed(0)
    n = 8
    pts = torch.cat([torch.rand(1, 500, 2) * 2 - 1,
                     torch.tensor([[[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0], [0.999, -0.999]]])], dim=1)
    flat, rel = neighbour_cells(pts, n, "reference")
    seq = -1 + 1 / n + (2 / n) * torch.arange(n).float()
    feat_coord = torch.stack(torch.meshgrid(seq, seq, indexing="ij"), dim=0)[None]  # 1, 2, n, n (row, col)
    cell_id = torch.arange(n * n, dtype=torch.float32).view(1, 1, n, n)
    for k, (vx, vy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        c = pts.clone()
        c[..., 0] += vx / n + 1e-6
        c[..., 1] += vy / n + 1e-6
        c = c.clamp(-1 + 1e-6, 1 - 1e-6)
        q = F.grid_sample(feat_coord, c[:, None], mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
        ids = F.grid_sample(cell_id, c[:, None], mode="nearest", align_corners=False)[0, 0, 0]
        torch.testing.assert_close(flat[0, :, k].float(), ids)
        torch.testing.assert_close(rel[0, :, k], ((pts - q) * n)[0])


def test_location_encoder_matches_hand_computed_grid_cells() -> None:
    nf, rmin, rmax = 64, 0.0005, 2.0
    enc = GridCellEncoding(nf, rmin, rmax)
    coord = (0.3, -0.7)
    got = enc(torch.tensor([[coord]], dtype=torch.float32))[0, 0].numpy()
    assert got.shape == (4 * nf,)
    ratio = (rmax / rmin) ** (1 / (nf - 1))
    for d, c in enumerate(coord):
        for f in range(nf):
            wavelength = rmin * ratio**f
            assert got[d * 2 * nf + 2 * f] == pytest.approx(math.sin(c / wavelength), abs=2e-3)
            assert got[d * 2 * nf + 2 * f + 1] == pytest.approx(math.cos(c / wavelength), abs=2e-3)
    # lowest and highest frequency are exactly 1/min_radius and 1/max_radius
    assert float(enc.freqs[0]) == pytest.approx(1 / rmin)
    assert float(enc.freqs[-1]) == pytest.approx(1 / rmax)


def test_normalise_3338_maps_alaska_extent_to_unit_square() -> None:
    x, y = normalise_3338(np.array([-2199995.0, 1500005.0, 297506.0]), np.array([2400005.0, 5.0, 1667290.0]))
    np.testing.assert_allclose(x[:2], [-1, 1])
    np.testing.assert_allclose(y[:2], [-1, 1])  # north (large y) maps to -1
    assert -1 < x[2] < 1 and -1 < y[2] < 1


def _hand_info_nce(a: np.ndarray, b: np.ndarray, t: float = 0.1) -> float:
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    total = 0.0
    for s in (an @ bn.T, bn @ an.T):
        logits = s / t
        logz = np.log(np.exp(logits).sum(axis=1))
        total += float(np.mean(logz - np.diag(logits)))
    return total


def test_info_nce_hand_computed_symmetric_and_minimal_when_aligned() -> None:
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.5], [1.0, 1.0, -1.0]])
    b = np.array([[0.9, 0.1, 0.0], [0.2, 1.0, 0.0], [0.5, 1.0, -2.0]])
    ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
    got = float(info_nce(ta[:, None], tb[:, None]))  # B=3 windows, N=1 point
    assert got == pytest.approx(_hand_info_nce(a, b), rel=1e-5)
    assert float(info_nce(tb, ta)) == pytest.approx(got, rel=1e-6)
    # N points: negatives only across windows at the same point slot -> mean of per-slot losses
    two = float(info_nce(torch.stack([ta, tb], 1), torch.stack([tb, ta], 1)))
    assert two == pytest.approx((_hand_info_nce(a, b) + _hand_info_nce(b, a)) / 2, rel=1e-5)

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1, 8, generator=gen)
    y = x + 0.1 * torch.randn(4, 1, 8, generator=gen)
    aligned = float(info_nce(x, y))
    for perm in itertools.permutations(range(4)):
        if perm != (0, 1, 2, 3):
            assert float(info_nce(x, y[list(perm)])) > aligned


def test_task_loss_ignores_unlabelled_points() -> None:
    logits = torch.tensor([[[2.0], [-1.0], [5.0]]])
    labels = torch.tensor([[1.0, 0.0, -999.0]])
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    assert float(task_loss(logits, labels, "permafrost")) == pytest.approx(expected, rel=1e-6)
    tax = torch.tensor([[[3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 7]])
    lab = torch.tensor([[0.0, -999.0]])
    assert float(task_loss(tax, lab, "taxonomy")) == pytest.approx(math.log(math.exp(3) + 6) - 3, rel=1e-6)
    assert float(task_loss(logits, torch.full((1, 3), -999.0), "permafrost")) == 0.0


def test_miso_loss_combines_terms_as_the_reference() -> None:
    gen = torch.Generator().manual_seed(1)
    emb = {k: torch.randn(3, 5, 16, generator=gen) for k in ("sat_emb", "cov_emb", "visual_emb", "geo_emb")}
    labels = torch.tensor([[1.0, 0.0, -999.0, -999.0, 1.0]] * 3)
    out = emb | {"pred": torch.randn(3, 5, 1, generator=gen), "geo_pred": torch.randn(3, 5, 1, generator=gen)}
    total, parts = miso_loss(out, labels, "permafrost")
    want = (task_loss(out["pred"], labels, "permafrost") + 0.1 * info_nce(emb["sat_emb"], emb["cov_emb"])
            + 0.1 * info_nce(emb["visual_emb"], emb["geo_emb"]))
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    assert set(parts) == {"base", "sat_cov_nce", "visual_geo_nce", "total"}

    tax_labels = torch.tensor([[2.0, 6.0, -999.0, 0.0, 3.0]] * 3)
    out = emb | {"pred": torch.randn(3, 5, 7, generator=gen), "geo_pred": torch.randn(3, 5, 7, generator=gen)}
    total, parts = miso_loss(out, tax_labels, "taxonomy")
    want = (task_loss(out["pred"], tax_labels, "taxonomy") + task_loss(out["geo_pred"], tax_labels, "taxonomy")
            + 0.1 * info_nce(emb["sat_emb"], emb["cov_emb"]))
    assert float(total) == pytest.approx(float(want), rel=1e-6)
    assert "visual_geo_nce" not in parts


@pytest.mark.parametrize("task,out_dim", [("permafrost", 1), ("taxonomy", 7)])
def test_small_preset_forward_shapes(task: str, out_dim: int) -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("small", task)).eval()
    b, n = 2, 37
    images = torch.randn(b, 19, 250, 250)
    pix = torch.rand(b, n, 2) * 2 - 1
    geo = torch.rand(b, n, 2) * 2 - 1
    with torch.no_grad():
        out = model(images, pix, geo)
    e = model.config.emb_dim
    assert out["pred"].shape == (b, n, out_dim)
    assert out["geo_pred"].shape == (b, n, out_dim)
    for k in ("sat_emb", "cov_emb", "visual_emb", "geo_emb"):
        assert out[k].shape == (b, n, e)
    assert torch.isfinite(out["pred"]).all()
    probs = model.predict_proba(out["pred"])
    if task == "taxonomy":
        torch.testing.assert_close(probs.sum(-1), torch.ones(b, n))
    else:
        assert ((probs > 0) & (probs < 1)).all()


def test_encode_once_query_many_equals_forward() -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    images = torch.randn(3, 19, 64, 64)
    pix = torch.rand(1, 50, 2) * 2 - 1
    geo = torch.rand(3, 50, 2) * 2 - 1
    with torch.no_grad():
        feats = model.encode(images)
        full = model.query(feats, pix, geo)
        direct = model(images, pix.expand(3, -1, -1), geo)
        parts = [model.query(feats, pix[:, i:i + 10], geo[:, i:i + 10])["pred"] for i in range(0, 50, 10)]
        second = model.query(feats.select(slice(1, 2)), pix, geo[1:2])["pred"]
    torch.testing.assert_close(full["pred"], direct["pred"])
    torch.testing.assert_close(torch.cat(parts, dim=1), full["pred"])
    torch.testing.assert_close(second, full["pred"][1:2])
    # the prediction varies with the point, i.e. the query really reads local features
    assert full["pred"].std(dim=1).min() > 0


def test_train_mode_backward_reaches_both_encoders() -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("tiny", "permafrost")).train()
    out = model(torch.randn(2, 19, 64, 64), torch.rand(2, 6, 2) * 2 - 1, torch.rand(2, 6, 2) * 2 - 1)
    loss, _ = miso_loss(out, torch.tensor([[1.0, 0.0, -999, -999, -999, -999]] * 2), "permafrost")
    loss.backward()
    for name in ("sat_encoder.feature_extractor.features.0.0.weight",
                 "cov_encoder.feature_extractor.patch_embed.proj.weight",
                 "geo_encoder.layers.0.lin.weight", "sat_encoder.query_layers.3.mlp.layers.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_config_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="out_dim"):
        MisoNetConfig(task="taxonomy", out_dim=1)
    with pytest.raises(ValueError):
        MisoNetConfig(unknown_field=1)
    assert MisoNetConfig(task="taxonomy").out_dim == 7
    assert MisoNetConfig().emb_dim == 1024


def test_shifted_window_block_matches_naive_per_window_attention() -> None:
    """Swin v1 block (batched SDPA + mask) equals attention computed window by window from region labels."""
    from miso_mapper.model.swin_cov import SwinBlock

    torch.manual_seed(0)
    r, w, s, c, heads = 8, 4, 2, 8, 2
    blk = SwinBlock(c, r, heads, w, s, drop_path=0.0).eval()
    with torch.no_grad():
        blk.attn.relative_position_bias_table.normal_()
    x = torch.randn(2, r * r, c)
    d = c // heads

    def band(i: int) -> int:  # the three strips the cyclic shift creates along each axis
        return 0 if i < r - w else (1 if i < r - s else 2)

    with torch.no_grad():
        y = torch.roll(blk.norm1(x).view(2, r, r, c), shifts=(-s, -s), dims=(1, 2))
        out = torch.zeros_like(y)
        pos = [(i, j) for i in range(w) for j in range(w)]
        table = blk.attn.relative_position_bias_table
        idx = torch.tensor([[(ia - ib + w - 1) * (2 * w - 1) + (ja - jb + w - 1) for ib, jb in pos]
                            for ia, ja in pos])
        for b in range(2):
            for wi in range(r // w):
                for wj in range(r // w):
                    tok = y[b, wi * w:(wi + 1) * w, wj * w:(wj + 1) * w].reshape(w * w, c)
                    labels = torch.tensor([3 * band(wi * w + i) + band(wj * w + j) for i, j in pos])
                    across = (labels[:, None] != labels[None, :]).float() * -100.0
                    qkv = blk.attn.qkv(tok).view(w * w, 3, heads, d)
                    res = []
                    for h in range(heads):
                        q, k, v = qkv[:, 0, h], qkv[:, 1, h], qkv[:, 2, h]
                        logits = (q / math.sqrt(d)) @ k.T + table[idx, h] + across
                        res.append(logits.softmax(-1) @ v)
                    o = blk.attn.proj(torch.cat(res, dim=-1))
                    out[b, wi * w:(wi + 1) * w, wj * w:(wj + 1) * w] = o.view(w, w, c)
        out = torch.roll(out, shifts=(s, s), dims=(1, 2)).reshape(2, r * r, c)
        h1 = x + out
        expected = h1 + blk.mlp(blk.norm2(h1))
        torch.testing.assert_close(blk(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task,out_dim", [("permafrost", 1), ("taxonomy", 7)])
def test_reference_size_forward(task: str, out_dim: int) -> None:
    """Full-size network on a 250 px window (resized to 256): about 83 GFLOP, tens of seconds on CPU."""
    model = build_model(MisoNetConfig.preset("reference", task)).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 19, 250, 250), torch.rand(1, 16, 2) * 2 - 1, torch.rand(1, 16, 2) * 2 - 1)
    assert out["pred"].shape == (1, 16, out_dim) and out["visual_emb"].shape == (1, 16, 1024)
    assert torch.isfinite(out["pred"]).all() and torch.isfinite(out["geo_pred"]).all()


def test_input_standardization_is_optional_and_exact():
    """Off by default (reference keys unchanged); on, the encoders see (x - mean) / std per channel."""
    import torch

    from miso_mapper.model import MisoNetConfig, build_model

    plain_cfg = MisoNetConfig.preset("tiny", "permafrost")
    assert not plain_cfg.input_standardization
    plain = build_model(plain_cfg).eval()
    assert not any("input_" in k for k in plain.state_dict())
    std_cfg = plain_cfg.model_copy(update={"input_standardization": True})
    standardised = build_model(std_cfg).eval()
    standardised.load_state_dict(plain.state_dict(), strict=False)
    gen = torch.Generator().manual_seed(0)
    mean = torch.rand(19, generator=gen)
    std = torch.rand(19, generator=gen) + 0.1
    standardised.set_input_statistics(mean, std)
    x = torch.rand(2, 19, 64, 64, generator=gen)
    pix = torch.zeros(2, 3, 2)
    with torch.no_grad():
        a = standardised(x, pix, None)["pred"]
        b = plain((x - mean[:, None, None]) / std[:, None, None], pix, None)["pred"]
    torch.testing.assert_close(a, b)
    assert {"input_mean", "input_std"} <= set(standardised.state_dict())


def test_compact_preset_keeps_the_reference_geometry() -> None:
    """250 px window -> 256 px input, 4 px patches: 64/32/16/8 tokens per stage, 3.9 px cells, ~1.1 M params."""
    from typing import get_args

    from miso_mapper.config import ModelConfig, TrainConfig
    from miso_mapper.model.config import PRESET_NAMES

    assert "compact" in PRESET_NAMES
    train_size, _none = get_args(TrainConfig.model_fields["size"].annotation)  # Literal[...] | None
    assert get_args(ModelConfig.model_fields["size"].annotation) == get_args(train_size) == PRESET_NAMES
    for task in ("permafrost", "taxonomy"):
        cfg = MisoNetConfig.preset("compact", task)
        assert (cfg.crop_size, cfg.input_size) == (250, 256)
        assert cfg.crop_size / cfg.input_size * 4 == pytest.approx(3.906, abs=1e-3)
        for enc in (cfg.sat_encoder, cfg.cov_encoder):
            assert [64 // 2**i % enc.window_size for i in range(4)] == [0, 0, 0, 0]
        model = build_model(cfg)
        n_params = sum(p.numel() for p in model.parameters())
        tiny = sum(p.numel() for p in build_model(MisoNetConfig.preset("tiny", task)).parameters())
        assert 0.8e6 < n_params < 1.5e6 and n_params < tiny
        assert model.sat_encoder.feature_extractor.features[0][0].kernel_size == (4, 4)


def test_compact_preset_forward_on_a_250_px_window() -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("compact", "taxonomy")).eval()
    images = torch.randn(2, 19, 250, 250)
    with torch.no_grad():
        x = model.prepare_images(images)
        assert x.shape == (2, 19, 256, 256)
        sat = model.sat_encoder.stages(x[:, :9])
        cov = model.cov_encoder.stages(x[:, 9:])
        out = model(images, torch.rand(2, 11, 2) * 2 - 1, torch.rand(2, 11, 2) * 2 - 1)
    want = [(2, 64, 64, 16), (2, 32, 32, 32), (2, 16, 16, 64), (2, 8, 8, 128)]
    assert [tuple(t.shape) for t in sat] == want and [tuple(t.shape) for t in cov] == want
    assert out["pred"].shape == (2, 11, 7) and out["visual_emb"].shape == (2, 11, 128)
    assert torch.isfinite(out["pred"]).all()
    assert out["pred"].std(dim=1).min() > 0  # the point's position matters
