"""What a workflow will do and cost, computed offline from the grid and the region alone.

Formulas (per task network unless stated; the tasks are permafrost and, with ``cost.tasks: 2``, soil order):

* chunk pixels ``P = chunk_size²``; halo pixels ``Ph = (chunk_size + 2·halo)²``
* windows ``W`` and query points ``Q`` per chunk: those of the configured MISO predictor's layout
  (``model.predictor``, :class:`~miso_mapper.inference.settings.PredictorConfig`; query spacing from
  ``model.size`` when automatic), counted on a chunk with its halo by :func:`predictor_load`
* FLOP per chunk ``= Σ_tasks (W · E + Q · q)``, with ``E`` the FLOP of both encoders on one window and ``q``
  of one query point (every implicit-query stage, mappers and head) counted from the task's network
  (``MisoNetConfig.preset(model.size, task)``) by :mod:`miso_mapper.inference.flops`; the tasks are permafrost
  (``cost.tasks`` 1) and soil order (2); ``cost.encoder_flop_per_window`` / ``cost.query_flop`` override E / q
  for every task
* GPU-hours ``= total FLOP / (gpu_sustained_tflops · 1e12) / 3600``
* input bytes ``= chunks · (scenes · 10 bands · Ph · 2 B (uint16) + 10 covariates · Ph · 4 B (float32))``,
  an upper bound: 20 m bands and cloud-free scene caps make the real reads smaller
* output bytes (uncompressed) ``= chunks · P · (1 + 7 + 1) B`` (permafrost, 7 order probabilities, class)

A region that cannot be built (missing file, unknown tile id, outside the grid) stops the plan; problems with
the files a run reads (:func:`miso_mapper.checks.input_problems`: covariates, points, model files) do not, and
are listed in :attr:`Plan.warnings`, so a statewide workflow plans on a machine without its data.
"""

from __future__ import annotations

from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry

from miso_mapper.bands import COVARIATES, SOIL_ORDERS
from miso_mapper.checks import input_problems
from miso_mapper.config import Workflow
from miso_mapper.grid import AlaskaGrid, Chunk
from miso_mapper.inference import flops
from miso_mapper.inference.settings import auto_query_spacing, checked_predictor_config
from miso_mapper.model.config import MisoNetConfig, Task
from miso_mapper.region import region_geometry

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


def predictor_load(workflow: Workflow) -> tuple[int, int]:
    """(windows encoded, points queried) per chunk and task network by the workflow's MISO predictor.

    Counts the predictor's own :class:`~miso_mapper.inference.windows.WindowLayout` on one chunk
    (``grid.chunk_size`` px with ``grid.halo``), so it follows every predictor setting; ``(0, 0)`` when the
    workflow maps with RF-11 or the synthetic stand-in (no network). Torch is not loaded. Raises
    :class:`MisoError` when the predictor settings are invalid or do not fit the grid (only possible for a
    workflow that skipped validation, e.g. one made by ``model_copy(update=...)``).
    """
    if workflow.model.kind != "miso":
        return 0, 0
    g = workflow.grid
    settings = checked_predictor_config(workflow.model.predictor, g.chunk_size, g.halo)
    spacing = settings.query_spacing or auto_query_spacing(MisoNetConfig.preset(workflow.model.size, "permafrost"),
                                                           settings.stride)
    side = g.chunk_size + 2 * g.halo
    layout = settings.layout((side, side), (slice(g.halo, g.halo + g.chunk_size),) * 2, spacing)
    return len(layout.windows), sum(w.query_shape[0] * w.query_shape[1] for w in layout.windows)


def network_flop(workflow: Workflow) -> tuple[float, float]:
    """(FLOP per encoded window, FLOP per query point), summed over the workflow's task networks.

    Counted from ``MisoNetConfig.preset(model.size, task)`` unless ``cost`` overrides them (per task).
    """
    cost = workflow.cost
    tasks: tuple[Task, ...] = ("permafrost", "taxonomy")[: cost.tasks]
    nets = [MisoNetConfig.preset(workflow.model.size, task) for task in tasks]
    window = cost.encoder_flop_per_window
    point = cost.query_flop
    return (len(tasks) * window if window is not None else sum(flops.encode_flop(n) for n in nets),
            len(tasks) * point if point is not None else sum(flops.query_flops(n).point_flop for n in nets))


def make_plan(workflow: Workflow) -> Plan:
    """Plan a workflow offline: tiles and chunks in the region, and byte/FLOP/GPU-hour estimates."""
    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    chunks = grid.chunks_in(region)
    tiles = sorted({ch.tile for ch in chunks}, key=lambda t: grid.parse_tile_id(t)[::-1])
    g, cost = workflow.grid, workflow.cost
    pixels = g.chunk_size**2
    halo_pixels = (g.chunk_size + 2 * g.halo) ** 2
    windows, queries = predictor_load(workflow)
    scenes = cost.scenes_per_chunk or workflow.imagery.max_items
    n = len(chunks)
    input_bytes = n * halo_pixels * (scenes * S2_ASSETS_READ * 2 + len(COVARIATES) * 4)
    output_bytes = n * pixels * OUTPUT_BYTES_PER_PIXEL
    window_flop, point_flop = network_flop(workflow)
    flop = n * (windows * window_flop + queries * point_flop)
    gpu_hours = flop / (cost.gpu_sustained_tflops * 1e12) / 3600
    warnings = tuple(str(p) for p in input_problems(workflow))
    return Plan(workflow, grid, region, tiles, chunks, windows, queries / pixels, input_bytes, output_bytes, flop,
                gpu_hours, warnings)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
