"""FLOPs counted from the network's configuration (torch-free) equal torch's FlopCounterMode on the real modules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from miso_mapper.inference import flops
from miso_mapper.model import MisoNet, MisoNetConfig, build_model
from miso_mapper.model.config import SwinConfig

POINTS = 8


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: thread start-up dominates, and on a shared 2-core machine it costs seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _counted(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _padded_window() -> MisoNetConfig:
    """tiny with 8-token windows: the last two stages (4 and 2 tokens) are narrower than the window, which
    torchvision's Swin v2 pads and the covariate Swin v1 shrinks to the stage."""
    swin = SwinConfig(embed_dim=8, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), window_size=8)
    tiny = MisoNetConfig.preset("tiny", "taxonomy")
    return tiny.model_copy(update={"sat_encoder": swin, "cov_encoder": swin})


def _network(cfg: MisoNetConfig, device: str) -> MisoNet:
    with torch.device(device):
        return build_model(cfg).eval()


def _measured(model: MisoNet, device: str) -> dict[str, object]:
    """FlopCounterMode's count of each part, per window or per point."""
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    with torch.device(device), torch.inference_mode():
        images = torch.rand(2, cfg.in_bands, cfg.input_size, cfg.input_size)
        coords = (torch.rand(1, POINTS, 2, generator=gen) * 2 - 1).to(device)
        geo = torch.rand(1, POINTS, 2)
        feats = model.encode(images[:1])
        emb = torch.rand(1, POINTS, cfg.emb_dim)
        stages = [
            _counted(lambda i=i: model.sat_encoder.query_layers[i].query(feats.sat[i], coords))
            + _counted(lambda i=i: model.cov_encoder.query_layers[i].query(feats.cov[i], coords))
            for i in range(len(cfg.query_hidden))
        ]
        return {
            "encode": _counted(lambda: model.encode(images[:1])),
            "encode_batch2": _counted(lambda: model.encode(images)),
            "stages": tuple(s / POINTS for s in stages),
            "tail": _counted(lambda: model.out(model.visual_mapper(model.sat_mapper(emb) + model.cov_mapper(emb))))
            / POINTS,
            "mapper": _counted(lambda: model.visual_mapper(emb)) / POINTS,
            "head": _counted(lambda: model.out(emb)) / POINTS,
            "location": _counted(lambda: model.query_location(geo)) / POINTS,
            "query": _counted(lambda: model.query(feats, coords, None)) / POINTS,
        }


CASES = [("tiny", "permafrost", "cpu"), ("compact", "permafrost", "cpu"), ("small", "permafrost", "cpu"),
         ("tiny", "taxonomy", "meta"), ("compact", "taxonomy", "meta"), ("small", "taxonomy", "meta"),
         ("reference", "permafrost", "meta"), ("reference", "taxonomy", "meta")]


@pytest.mark.parametrize(("preset", "task", "device"), CASES)
def test_counts_equal_flop_counter_mode(preset: str, task: str, device: str) -> None:
    cfg = MisoNetConfig.preset(preset, task)  # type: ignore[arg-type]
    measured = _measured(_network(cfg, device), device)
    counted = flops.query_flops(cfg)
    assert counted.encode == flops.encode_flop(cfg) == measured["encode"]
    assert flops.encode_flop(cfg, batch=2) == measured["encode_batch2"]
    assert counted.stages == measured["stages"]
    assert counted.stages == tuple(flops.stage_point_flop(cfg, i) for i in range(4))
    assert counted.tail == flops.tail_point_flop(cfg) == measured["tail"]
    assert flops.mapper_point_flop(cfg) == measured["mapper"] and flops.head_point_flop(cfg) == measured["head"]
    assert counted.location == flops.location_point_flop(cfg) == measured["location"]
    assert counted.point_flop == measured["query"]


def test_padded_windows_are_counted_as_torch_runs_them() -> None:
    cfg = _padded_window()
    measured = _measured(_network(cfg, "meta"), "meta")
    assert flops.encode_flop(cfg) == measured["encode"]
    assert flops.encode_flop(cfg, batch=2) == measured["encode_batch2"]


def test_reference_figures() -> None:
    """The reference network's per-window and per-point costs (benchmarks/README.md's table)."""
    ref = flops.query_flops(MisoNetConfig.preset("reference", "permafrost"))
    assert ref.encode == 82_759_032_832
    assert ref.stages == (14_688_256, 14_688_256, 29_376_512, 37_781_504)
    assert ref.point_flop == 112_264_192  # 112_270_336 for taxonomy (7 outputs)
    assert ref.location == 16_253_952
    # one call of the position-bias MLPs is all that a second window in the batch does not repeat
    cpb = 2 * ref.encode - flops.encode_flop(MisoNetConfig(), batch=2)
    assert 0 < cpb < 0.0015 * ref.encode


def test_predictor_flop_is_the_documented_sum() -> None:
    cfg = MisoNetConfig.preset("compact", "taxonomy")
    f = flops.query_flops(cfg)
    total = flops.predictor_flop(cfg, windows=3, stage_points=(400, 100, 25, 9), output_points=1000)
    assert total == 3 * f.encode + 400 * f.stages[0] + 100 * f.stages[1] + 25 * f.stages[2] + 9 * f.stages[3] \
        + 1000 * f.tail
    every_stage = flops.predictor_flop(cfg, windows=0, stage_points=(7,) * 4, output_points=7)
    assert every_stage == 7 * f.point_flop
    with pytest.raises(ValueError, match="needs 4 counts"):
        flops.predictor_flop(cfg, 1, (1, 2), 1)
    with pytest.raises(ValueError, match="stage 4 out of range"):
        flops.stage_point_flop(cfg, 4)
