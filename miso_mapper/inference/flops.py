"""FLOPs of the MISO network counted from its configuration, without torch.

The counts follow ``torch.utils.flop_counter.FlopCounterMode``'s convention, so they equal what it reports
for the real modules (``tests/test_flops.py`` checks every function against it, all presets, both tasks):
only matrix products are counted (linear layers, convolutions, batched matmuls, scaled-dot-product attention)
and a multiply-add is 2 FLOP; biases, LayerNorm, GELU/ReLU, softmax, interpolation, gathers and the grid-cell
sin/cos encoding count 0.

Where the FLOPs are (:class:`~miso_mapper.model.network.MisoNet`, one task's network):

* ``encode``, once per window: the Sentinel-2 Swin v2 (torchvision, :mod:`miso_mapper.model.sat_encoder`),
  the covariate Swin v1 (:mod:`miso_mapper.model.swin_cov`) and each stage's
  :meth:`~miso_mapper.model.implicit_query.StageQuery.project_cells`;
* each implicit-query stage, per point at which it is evaluated (both encoders together);
* the tail, per output point: the sat/cov/visual mappers and the head ``out``;
* the location branch (``geo_encoder``, ``geo_mapper``, ``geo_out``), which the reference's demo loop runs per
  point and the predictor does not.

The reference (``knowledge-computing/Peatland-permafrost``, ``MISO/models/``) evaluates the first query layer on
``[feature, rel]`` per neighbour and point; this package computes its feature part per cell in ``encode`` (see
:mod:`miso_mapper.model.implicit_query`), so the counts here are this package's, not the reference code's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from miso_mapper.model.config import MisoNetConfig, SwinConfig

_PATCH = 4  # patch side of both Swins' embedding convolution
_MLP_RATIO = 4  # hidden width of a Swin block's MLP, in channels
_CPB_HIDDEN = 512  # hidden width of Swin v2's continuous position-bias MLP (torchvision)
_NEIGHBOURS = 4  # cells each implicit-query point reads per stage


def _linear(rows: int, fan_in: int, fan_out: int) -> int:
    """A linear layer on ``rows`` vectors (the bias is not counted)."""
    return 2 * rows * fan_in * fan_out


def _stage_sides(cfg: MisoNetConfig, swin: SwinConfig) -> list[int]:
    """Side in tokens of each Swin stage's square feature map (input / 4 / 2**i)."""
    return [cfg.input_size // _PATCH // 2**i for i in range(len(swin.depths))]


def _patch_embed(cfg: MisoNetConfig, swin: SwinConfig, bands: int) -> int:
    """The ``bands -> embed_dim`` 4x4 stride-4 convolution of one window."""
    side = cfg.input_size // _PATCH
    return 2 * side * side * swin.embed_dim * bands * _PATCH * _PATCH


def _patch_merges(cfg: MisoNetConfig, swin: SwinConfig) -> int:
    """The ``4C -> 2C`` reductions after every stage but the last (both Swin versions; odd sides padded)."""
    sides = _stage_sides(cfg, swin)
    merged = [(r + 1) // 2 for r in sides[:-1]]
    return sum(_linear(m * m, 4 * c, 2 * c) for m, c in zip(merged, swin.stage_dims[:-1], strict=True))


def _swin_v2(cfg: MisoNetConfig, batch: int) -> int:
    """torchvision's Swin v2 (``sat_encoder.feature_extractor``) on ``batch`` windows.

    A stage narrower than the window is padded up to it (torchvision does so), so attention runs on the padded
    tokens; the block MLP runs on the real ones. The continuous position-bias MLP (``cpb_mlp``, on the
    ``(2w-1)²`` relative offsets) runs once per block and call, whatever the batch.
    """
    swin = cfg.sat_encoder
    w = swin.window_size
    total = batch * (_patch_embed(cfg, swin, cfg.sat_bands) + _patch_merges(cfg, swin))
    stages = zip(_stage_sides(cfg, swin), swin.stage_dims, swin.depths, swin.num_heads, strict=True)
    for r, c, depth, heads in stages:
        padded = (r + w - 1) // w * w
        tokens = batch * padded * padded
        attention = _linear(tokens, c, 3 * c) + 2 * _linear(tokens, w * w, c) + _linear(tokens, c, c)
        mlp = 2 * _linear(batch * r * r, c, _MLP_RATIO * c)
        cpb = _linear((2 * w - 1) ** 2, 2, _CPB_HIDDEN) + _linear((2 * w - 1) ** 2, _CPB_HIDDEN, heads)
        total += depth * (attention + mlp + cpb)
    return total


def _swin_v1(cfg: MisoNetConfig, batch: int) -> int:
    """The covariate Swin v1 (``cov_encoder.feature_extractor``) on ``batch`` windows.

    A stage not wider than the window attends over the whole stage (:class:`~miso_mapper.model.swin_cov.SwinBlock`);
    ``q kᵀ`` and ``attn v`` each cost ``2 · tokens · window² · C``.
    """
    swin = cfg.cov_encoder
    total = _patch_embed(cfg, swin, cfg.cov_bands) + _patch_merges(cfg, swin)
    for r, c, depth in zip(_stage_sides(cfg, swin), swin.stage_dims, swin.depths, strict=True):
        w = min(swin.window_size, r)
        tokens = r * r
        attention = _linear(tokens, c, 3 * c) + 2 * _linear(tokens, w * w, c) + _linear(tokens, c, c)
        total += depth * (attention + 2 * _linear(tokens, c, _MLP_RATIO * c))
    return batch * total


def _project_cells(cfg: MisoNetConfig, swin: SwinConfig) -> int:
    """Feature part of each stage's first query layer, once per feature cell of one window."""
    sides = _stage_sides(cfg, swin)
    cells = zip(sides, swin.stage_dims, cfg.query_hidden, strict=True)
    return sum(_linear(r * r, c, h[0]) for r, c, h in cells)


def encode_flop(cfg: MisoNetConfig, batch: int = 1) -> int:
    """FLOP of :meth:`MisoNet.encode` on ``batch`` windows of ``cfg.input_size`` px (already resized).

    Both Swin encoders plus every stage's ``project_cells``. Exact for any batch; per window it is
    ``encode_flop(cfg, 1)`` less a share of Swin v2's position-bias MLP, which runs once per call
    (0.098 of 82.76 GFLOP at reference size).
    """
    per_window = _project_cells(cfg, cfg.sat_encoder) + _project_cells(cfg, cfg.cov_encoder)
    return _swin_v2(cfg, batch) + _swin_v1(cfg, batch) + batch * per_window


def stage_point_flop(cfg: MisoNetConfig, stage: int) -> int:
    """FLOP of one query point of implicit-query stage ``stage`` (0 = finest), sat and cov encoders together.

    Per encoder (:meth:`StageQuery.query`): the 2 relative-coordinate columns of the first layer and the
    remaining MLP layers on the 4 neighbour cells, then ``output_layer`` on the weighted sum.
    """
    if not 0 <= stage < len(cfg.query_hidden):
        raise ValueError(f"stage {stage} out of range 0..{len(cfg.query_hidden) - 1}")
    h1, h2 = cfg.query_hidden[stage]
    e = cfg.emb_dim
    per_encoder = _linear(_NEIGHBOURS, 2, h1) + _linear(_NEIGHBOURS, h1, h2) + _linear(_NEIGHBOURS, h2, e)
    return 2 * (per_encoder + _linear(1, e, e))


def mapper_point_flop(cfg: MisoNetConfig) -> int:
    """One mapper (``E -> hidden -> E``: sat, cov, visual or geo) on one point."""
    return _linear(1, cfg.emb_dim, cfg.mapper_hidden) + _linear(1, cfg.mapper_hidden, cfg.emb_dim)


def head_point_flop(cfg: MisoNetConfig) -> int:
    """One head (``E -> h0 -> h1 -> out_dim``: ``out`` or ``geo_out``) on one point."""
    h0, h1 = cfg.head_hidden
    return _linear(1, cfg.emb_dim, h0) + _linear(1, h0, h1) + _linear(1, h1, cfg.out_dim)


def tail_point_flop(cfg: MisoNetConfig) -> int:
    """FLOP per output point after the two encoders' stage sums: sat, cov and visual mappers and the head."""
    return 3 * mapper_point_flop(cfg) + head_point_flop(cfg)


def location_point_flop(cfg: MisoNetConfig) -> int:
    """FLOP per point of the location branch: the grid-cell FC stack, ``geo_mapper`` and ``geo_out``."""
    e = cfg.emb_dim
    fc_stack = _linear(1, 4 * cfg.location.num_frequencies, e) + (cfg.location.num_residual_layers + 1) * _linear(
        1, e, e)
    return fc_stack + mapper_point_flop(cfg) + head_point_flop(cfg)


@dataclass(frozen=True)
class QueryFlops:
    """The FLOP counts of one task's network (see the module docstring for what each covers)."""

    encode: int
    """one window through ``encode`` (batch 1)"""
    stages: tuple[int, ...]
    """one point of each implicit-query stage, finest first, sat + cov"""
    tail: int
    """mappers and head, one output point"""
    location: int
    """location branch, one point (not run by the predictor)"""

    @property
    def point_flop(self) -> int:
        """One point with every stage evaluated at it: what ``MisoNet.query(..., geo_coords=None)`` costs."""
        return sum(self.stages) + self.tail


def query_flops(cfg: MisoNetConfig) -> QueryFlops:
    """Every count of ``cfg``'s network in one object."""
    return QueryFlops(encode_flop(cfg), tuple(stage_point_flop(cfg, i) for i in range(len(cfg.query_hidden))),
                      tail_point_flop(cfg), location_point_flop(cfg))


def predictor_flop(cfg: MisoNetConfig, windows: int, stage_points: Sequence[int], output_points: int) -> int:
    """The predictor's cost model for one task's network, in FLOP.

    ``windows · encode + Σ_i stage_points[i] · stage_i + output_points · tail``, where ``stage_points[i]`` is the
    number of points at which stage ``i`` was evaluated, over all windows (every output point of every window
    in the exact mode; the stage's own lattice with multi-rate queries) and ``output_points`` the number of
    points at which the mappers and the head ran. Each window is counted as encoded alone, which overstates a batched
    encode by Swin v2's per-call position-bias MLP (0.12 % at reference size; see :func:`encode_flop`).
    """
    flops = query_flops(cfg)
    if len(stage_points) != len(flops.stages):
        raise ValueError(f"stage_points needs {len(flops.stages)} counts, got {len(stage_points)}")
    return (windows * flops.encode + sum(n * f for n, f in zip(stage_points, flops.stages, strict=True))
            + output_points * flops.tail)
