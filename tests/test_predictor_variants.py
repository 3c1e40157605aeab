"""The predictor's speed variants: SDPA window attention in the Swin v2 encoder (``attention='sdpa'``) and
``torch.compile`` of the encoders with fixed batch shapes (``compile=True``), each against the default path.

float32 on CPU; equality is relative to the largest magnitude of the reference output (<= 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

from miso_mapper.inference.fixed_batch import bucket_size, encode_windows, pad_batch
from miso_mapper.inference.miso import MisoPredictor
from miso_mapper.inference.settings import PredictorConfig
from miso_mapper.inference.synthetic import seeded_network, synthetic_inputs
from miso_mapper.model import LocationConfig, MisoNetConfig, SwinConfig, build_model
from miso_mapper.model.sat_encoder import sat_stage_features
from miso_mapper.model.swin_sdpa import SdpaShiftedWindowAttentionV2, set_window_attention, window_attention

RTOL = 1e-5
W = 40  # predictor window of the micro networks
STRIDE = W // 5
FAST = {"window": W, "stride": STRIDE, "support": 2 * STRIDE, "ramp": STRIDE, "query_spacing": 2,
        "stage_spacings": (2, 4, 8, 8), "batch_size": 3}
HALO = W // 2 + STRIDE
N = 5 * STRIDE  # interior side, a multiple of the stride
TASKS = ("permafrost", "taxonomy")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel_err(got: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray) -> float:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.nanmax(np.abs(got - ref)) / np.nanmax(np.abs(ref)))


def perturb_attention(model: torch.nn.Module, seed: int) -> None:
    """Random values where torchvision's initialisation is special: a non-zero key bias (which the forward must
    ignore), logit scales on both sides of the ln(100) clamp, a larger position-bias MLP."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ShiftedWindowAttentionV2):
                m.qkv.bias.copy_(torch.randn(m.qkv.bias.shape, generator=g))
                m.logit_scale.copy_(torch.rand(m.logit_scale.shape, generator=g) * 6.0)  # ln 100 = 4.6
                for p in m.cpb_mlp.parameters():
                    p.mul_(1 + torch.rand(p.shape, generator=g))


def stage_sides(size: int) -> list[int]:
    """Token side of each Swin stage for an input of ``size`` px (patch 4, merging pads odd sides)."""
    sides = [size // 4]
    while len(sides) < 4:
        sides.append((sides[-1] + 1) // 2)
    return sides


def effective_shifts(backbone: torch.nn.Module, size: int) -> int:
    """Number of attention blocks whose shift is not dropped for input ``size`` px (windows smaller than the
    padded map)."""
    count = 0
    for i, side in zip(range(1, len(backbone.features), 2), stage_sides(size), strict=True):
        for block in backbone.features[i]:
            att = block.attn
            padded = side + (-side % att.window_size[0])
            count += int(att.shift_size[0] > 0 and att.window_size[0] < padded)
    return count


def shifted_compact() -> MisoNetConfig:
    """The compact preset with two blocks per stage, so its 4-token windows include shifted ones."""
    cfg = MisoNetConfig.preset("compact")
    return cfg.model_copy(update={"sat_encoder": cfg.sat_encoder.model_copy(update={"depths": (2, 2, 2, 2)})})


# ------------------------------------------------------------------------------------------- SDPA attention
@pytest.mark.parametrize(("name", "size"), [("tiny", 72), ("compact", 200), ("compact-shifted", 200)])
def test_sdpa_attention_equals_torchvision_on_preset_encoders(name, size):
    cfg = shifted_compact() if name == "compact-shifted" else MisoNetConfig.preset(name)
    torch.manual_seed(11)
    net = build_model(cfg).eval()
    perturb_attention(net, seed=5)
    backbone = net.sat_encoder.feature_extractor
    if name != "compact":
        assert effective_shifts(backbone, size) >= 2
    assert any(side % cfg.sat_encoder.window_size for side in stage_sides(size))  # some stage needs padding
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for trial in range(2):  # fresh random inputs each time
        x = torch.randn(2, cfg.sat_bands, size, size)
        with torch.no_grad():
            ref = sat_stage_features(backbone, x)
            with window_attention(net, "sdpa") as switched:
                assert switched == sum(cfg.sat_encoder.depths)
                got = sat_stage_features(backbone, x)
        for r, g in zip(ref, got, strict=True):
            assert r.shape == g.shape
            assert rel_err(g, r) <= RTOL, (trial, rel_err(g, r))
        assert not torch.equal(ref[-1], torch.zeros_like(ref[-1]))
    assert all(type(m) is ShiftedWindowAttentionV2 for m in net.modules() if isinstance(m, ShiftedWindowAttentionV2))
    after = net.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], v) for k, v in state.items())


def test_sdpa_whole_network_forward_and_weights_load_identically():
    cfg = MisoNetConfig.preset("tiny", "taxonomy")
    torch.manual_seed(2)
    net = build_model(cfg).eval()
    perturb_attention(net, seed=3)
    images = torch.randn(2, cfg.in_bands, cfg.crop_size, cfg.crop_size)
    coords = torch.rand(2, 50, 2) * 2 - 1
    geo = torch.rand(2, 50, 2)
    with torch.no_grad():
        ref = net(images, coords, geo)
        other = build_model(cfg).eval()
        set_window_attention(other, "sdpa")
        assert any(type(m) is SdpaShiftedWindowAttentionV2 for m in other.modules())
        other.load_state_dict(net.state_dict(), strict=True)  # same names and shapes while switched
        got = other(images, coords, geo)
    assert set(got) == set(ref)
    for key in ref:
        assert rel_err(got[key], ref[key]) <= RTOL, key
    set_window_attention(other, "math")
    assert not any(type(m) is SdpaShiftedWindowAttentionV2 for m in other.modules())


def test_sdpa_under_bf16_autocast_is_as_close_to_float32_as_torchvision():
    """The CUDA path runs under bf16 autocast, where the norms promote q and k to float32: the SDPA forward must
    still run (one dtype into the kernel) and lose no more than torchvision's attention does (CPU autocast)."""
    torch.manual_seed(0)
    net = build_model(MisoNetConfig.preset("tiny")).eval()
    perturb_attention(net, seed=9)
    backbone = net.sat_encoder.feature_extractor
    x = torch.randn(2, 9, 72, 72)
    with torch.no_grad():
        exact = sat_stage_features(backbone, x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            math_bf16 = sat_stage_features(backbone, x)
            with window_attention(net, "sdpa"):
                sdpa_bf16 = sat_stage_features(backbone, x)
    assert [t.dtype for t in sdpa_bf16] == [t.dtype for t in math_bf16] == [torch.bfloat16] * 4
    math_err = max(rel_err(m.float(), e) for m, e in zip(math_bf16, exact, strict=True))
    sdpa_err = max(rel_err(s.float(), e) for s, e in zip(sdpa_bf16, exact, strict=True))
    assert 0 < sdpa_err <= 2 * math_err < 0.5


def test_unknown_attention_kind_is_refused():
    with pytest.raises(ValueError, match="unknown attention"):
        set_window_attention(build_model(MisoNetConfig.preset("tiny")), "flash")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PredictorConfig(attention="flash")
    assert PredictorConfig().attention == "math" and PredictorConfig().compile is False


# ------------------------------------------------------------------------------------------- fixed batches
def test_bucket_sizes():
    assert [bucket_size(n, 64) for n in (1, 2, 3, 5, 8, 9, 33, 49, 64)] == [1, 2, 4, 8, 8, 16, 64, 64, 64]
    assert [bucket_size(n, 6) for n in range(1, 7)] == [1, 2, 4, 4, 6, 6]


def test_padded_batch_gives_the_same_per_window_features():
    cfg = MisoNetConfig.preset("tiny")
    torch.manual_seed(4)
    net = build_model(cfg).eval()
    images = torch.randn(3, cfg.in_bands, cfg.crop_size, cfg.crop_size)
    padded = pad_batch(images, 8)
    assert padded.shape[0] == 8 and torch.equal(padded[:3], images) and not padded[3:].any()
    last = pad_batch(images.contiguous(memory_format=torch.channels_last), 4)
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    calls: list[int] = []

    def encode(x: torch.Tensor):
        calls.append(x.shape[0])
        return net.encode(x)

    with torch.no_grad():
        ref = net.encode(images)
        got = encode_windows(encode, images, batch_size=8)
        alone = [net.encode(images[k:k + 1]) for k in range(3)]
    assert calls == [4]  # 3 windows padded to the bucket of 4
    assert got.batch_size == 3
    for r, g in zip(ref.sat + ref.cov, got.sat + got.cov, strict=True):
        assert rel_err(g, r) <= RTOL
    for k, one in enumerate(alone):
        for r, g in zip(one.sat + one.cov, got.select(slice(k, k + 1)).sat + got.select(slice(k, k + 1)).cov,
                        strict=True):
            assert rel_err(g, r) <= RTOL


# ------------------------------------------------------------------------------------------- the predictor
def shifted_micro(task: str) -> MisoNetConfig:
    """A micro network (32 px input) with two blocks per stage: shifted windows, and a last stage that needs
    padding (1 token, window 2)."""
    e = 32
    swin = SwinConfig(embed_dim=4, depths=(2, 2, 2, 2), num_heads=(1, 1, 1, 2), window_size=2, drop_path=0.0)
    return MisoNetConfig(
        task=task, crop_size=W, input_size=32, sat_encoder=swin, cov_encoder=swin,
        query_hidden=((8, 16), (8, 16), (16, 32), (32, 32)), mapper_hidden=e, head_hidden=(e, e // 2),
        location=LocationConfig(num_frequencies=8, num_residual_layers=1),
    )


@pytest.fixture(scope="module")
def chunk():
    size = N + 2 * HALO
    return synthetic_inputs(size, size, seed=8, invalid_box=(slice(30, 40), slice(12, 30)))


@pytest.fixture(scope="module")
def interior():
    return (slice(HALO, HALO + N), slice(HALO, HALO + N))


@pytest.fixture(scope="module")
def nets(chunk):
    out = {t: seeded_network(t, seed=i + 4, calibrate_on=chunk, config=shifted_micro(t)) for i, t in enumerate(TASKS)}
    for i, net in enumerate(out.values()):
        perturb_attention(net, seed=20 + i)
    return out


def predict(nets, chunk, interior, **settings) -> tuple[dict[str, np.ndarray], MisoPredictor]:
    p = MisoPredictor(nets["permafrost"], nets["taxonomy"], PredictorConfig(**(FAST | settings)))
    ds = p.predict_chunk(chunk, interior)
    return {name: ds[name].values for name in ("permafrost_probability", "taxonomy_probability",
                                               "permafrost_spread", "taxonomy_entropy")}, p


@pytest.fixture(scope="module")
def math_maps(nets, chunk, interior):
    return predict(nets, chunk, interior)[0]


def test_predictor_sdpa_gives_the_same_map(nets, chunk, interior, math_maps):
    got, _ = predict(nets, chunk, interior, attention="sdpa")
    for name, ref in math_maps.items():
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref)), name
        assert rel_err(got[name], ref) <= RTOL, name
    assert np.isfinite(math_maps["taxonomy_probability"]).any()
    # the switch held only while mapping: the shared networks compute with torchvision's attention again
    assert not any(type(m) is SdpaShiftedWindowAttentionV2 for net in nets.values() for m in net.modules())


@pytest.mark.slow  # compiling (buckets 1, 2, 3; two networks) took 374 s on the shared 2-core machine (2026-11-30)
def test_predictor_compile_gives_the_same_map(nets, chunk, interior, math_maps):
    got, p = predict(nets, chunk, interior, compile=True)
    assert any(b < FAST["batch_size"] for b in p.stats.batches)  # some batches were padded
    for name, ref in math_maps.items():
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref)), name
        assert rel_err(got[name], ref) <= RTOL, name
