"""What the MISO predictor computes for one chunk, counted from its own layout without running it (no torch).

:func:`chunk_load` lays out the windows of a chunk exactly as :class:`~miso_mapper.inference.miso.MisoPredictor`
does (same :class:`~miso_mapper.inference.settings.PredictorConfig`, same spacings) and counts windows encoded,
points at which each encoder stage is evaluated and points at which the mappers and head run;
:meth:`ChunkLoad.flop` prices them with :mod:`miso_mapper.inference.flops`. ``plan`` and the benchmarks use it,
so their FLOPs follow the code. Every window is counted, also those a run skips because none of their pixels is
valid (ocean), so the count is an upper bound for a coastal chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from miso_mapper.inference.flops import predictor_flop
from miso_mapper.inference.settings import PredictorConfig
from miso_mapper.model.config import MisoNetConfig


@dataclass(frozen=True)
class ChunkLoad:
    """Work of one network on one chunk: ``windows`` encoded, ``stage_points[i]`` points at which stage ``i``
    is evaluated (all windows), ``output_points`` at which the mappers and head run; ``pixels`` of the interior."""

    windows: int
    stage_points: tuple[int, ...]
    output_points: int
    pixels: int

    def flop(self, network: MisoNetConfig) -> int:
        """FLOP of ``network`` doing this work (:func:`~miso_mapper.inference.flops.predictor_flop`)."""
        return predictor_flop(network, self.windows, self.stage_points, self.output_points)

    def flop_per_pixel(self, network: MisoNetConfig) -> float:
        """:meth:`flop` per interior pixel."""
        return self.flop(network) / self.pixels


def chunk_load(settings: PredictorConfig, networks: Sequence[MisoNetConfig], chunk_size: int,
               halo: int) -> ChunkLoad:
    """The predictor's work on one square chunk of ``chunk_size`` px with ``halo`` px around it, for
    ``settings`` and the ``networks`` it maps with (their feature cells set the automatic spacings).

    Raises ``ValueError`` when the layout does not fit (halo too small).
    """
    query_spacing, stage_spacings = settings.spacings(networks)
    side = chunk_size + 2 * halo
    layout = settings.layout((side, side), (slice(halo, halo + chunk_size),) * 2, query_spacing)
    output = sum(w.query_shape[0] * w.query_shape[1] for w in layout.windows)
    stages = tuple(layout.stage_points(s) for s in stage_spacings)
    return ChunkLoad(len(layout.windows), stages, output, chunk_size * chunk_size)
