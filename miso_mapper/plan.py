"""What a workflow will do and cost, computed offline from the grid and the region alone.

Formulas (per task network unless stated; the tasks are permafrost and, with ``cost.tasks: 2``, soil order):

* chunk pixels ``P = chunk_size²``; halo pixels ``Ph = (chunk_size + 2·halo)²``
* per task network, what the configured MISO predictor (``model.predictor``,
  :class:`~miso_mapper.inference.settings.PredictorConfig`) does on one chunk with its halo, counted on its own
  layout by :func:`~miso_mapper.inference.chunk_cost.chunk_load`
  (:func:`~miso_mapper.workload.predictor_load`): ``W`` windows encoded, ``S_i`` points at which implicit-query
  stage ``i`` is evaluated (fewer than the queried points for the coarse stages with multi-rate queries), ``Q``
  queried points (mappers and head)
* FLOP per chunk ``= Σ_tasks (W · E + Σ_i S_i · s_i + Q · t)`` with ``E`` (both encoders, one window), ``s_i``
  (stage ``i``, one point) and ``t`` (mappers and head, one point) counted from the task's network
  (``MisoNetConfig.preset(model.size, task)``) by :mod:`miso_mapper.inference.flops`, exactly as
  FlopCounterMode counts the predictor (tests); the tasks are permafrost (``cost.tasks`` 1) and soil order (2)
* GPU-hours ``= total FLOP / (gpu_sustained_tflops · 1e12) / 3600``
* input bytes ``= chunks · (scenes · 10 bands · Ph · 2 B (uint16) + 10 covariates · Ph · 4 B (float32))``,
  an upper bound: 20 m bands and cloud-free scene caps make the real reads smaller
* output bytes (uncompressed) ``= chunks · P · (1 + 7 + 1) B`` (permafrost, 7 order probabilities, class)

A region that cannot be built (missing file, unknown tile id, outside the grid) stops the plan, and so does the
reference network on a cluster without GPUs (:func:`miso_mapper.checks.compute_problems`, with these figures in
its line; ``model.predictor.device: cpu`` opts in to CPU); problems with
the files a run reads (:func:`miso_mapper.checks.input_problems`: covariates, points, model files) do not, and
are listed in :attr:`Plan.warnings`, so a statewide workflow plans on a machine without its data.
"""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry

from miso_mapper.bands import COVARIATES, SOIL_ORDERS
from miso_mapper.checks import input_problems, require_compute
from miso_mapper.config import Workflow
from miso_mapper.grid import AlaskaGrid, Chunk
from miso_mapper.region import region_geometry
from miso_mapper.workload import chunk_flop, predictor_load

S2_ASSETS_READ = 10  # 9 bands + SCL
OUTPUT_BYTES_PER_PIXEL = 1 + len(SOIL_ORDERS) + 1


@dataclass(frozen=True)
class Plan:
    """The offline plan of a workflow: which tiles and chunks, and estimates of bytes and compute."""

    workflow: Workflow
    grid: AlaskaGrid
    region: BaseGeometry
    tiles: list[str]
    chunks: list[Chunk]
    windows_per_chunk: int
    queries_per_pixel: float
    """implicit queries per output pixel and task network (the predictor's layout; 25+ for the reference loop)"""
    stage_points_per_pixel: tuple[float, ...]
    """points per output pixel and task network at which each implicit-query stage is evaluated (finest first;
    below ``queries_per_pixel`` for the coarse stages with multi-rate queries)"""
    input_bytes: float
    output_bytes: float
    flop: float
    gpu_hours: float
    warnings: tuple[str, ...] = ()
    """what ``validate`` and ``run`` would refuse in the files the run reads, one line each (``field: problem``)"""

    @property
    def area_km2(self) -> float:
        """Area of all planned chunk interiors, km² (what gets mapped, ocean included)."""
        return sum(ch.area_km2 for ch in self.chunks)

    @property
    def region_area_km2(self) -> float:
        """Area of the region itself, km² (grid CRS units are metres)."""
        return self.region.area / 1e6


def make_plan(workflow: Workflow) -> Plan:
    """Plan a workflow offline: tiles and chunks in the region, and byte/FLOP/GPU-hour estimates.

    Raises :class:`MisoError` for a region that cannot be built and :class:`UsageError` for the reference network
    on a cluster without GPUs (:func:`~miso_mapper.checks.require_compute`)."""
    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    chunks = grid.chunks_in(region)
    tiles = sorted({ch.tile for ch in chunks}, key=lambda t: grid.parse_tile_id(t)[::-1])
    g, cost = workflow.grid, workflow.cost
    pixels = g.chunk_size**2
    halo_pixels = (g.chunk_size + 2 * g.halo) ** 2
    load = predictor_load(workflow)
    scenes = cost.scenes_per_chunk or workflow.imagery.max_items
    n = len(chunks)
    input_bytes = n * halo_pixels * (scenes * S2_ASSETS_READ * 2 + len(COVARIATES) * 4)
    output_bytes = n * pixels * OUTPUT_BYTES_PER_PIXEL
    flop = n * chunk_flop(workflow, load)
    require_compute(workflow, flop)
    gpu_hours = flop / (cost.gpu_sustained_tflops * 1e12) / 3600
    warnings = tuple(str(p) for p in input_problems(workflow))
    return Plan(workflow, grid, region, tiles, chunks, load.windows if load else 0,
                load.output_points / pixels if load else 0.0,
                tuple(p / pixels for p in load.stage_points) if load else (), input_bytes, output_bytes, flop,
                gpu_hours, warnings)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
