"""What a workflow will do and cost, computed offline from the grid and the region alone.

Formulas (all per task network unless stated; ``T`` = number of tasks, 2 for permafrost + taxonomy):

* chunk pixels ``P = chunk_size²``; halo pixels ``Ph = (chunk_size + 2·halo)²``
* windows per chunk ``W = ceil((chunk_size + 2·halo - window) / stride + 1)²`` (windows tiling the halo grid)
* FLOP per chunk ``= T · (W · encoder_flop_per_window + P · query_flop)`` — one implicit query per output
  pixel (the floor the predictor aims at) plus encoding every window once
* GPU-hours ``= total FLOP / (gpu_sustained_tflops · 1e12) / 3600``
* input bytes ``= chunks · (scenes · 10 bands · Ph · 2 B (uint16) + 10 covariates · Ph · 4 B (float32))``,
  an upper bound: 20 m bands and cloud-free scene caps make the real reads smaller
* output bytes (uncompressed) ``= chunks · P · (1 + 7 + 1) B`` (permafrost, 7 order probabilities, class)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from shapely.geometry.base import BaseGeometry

from miso_mapper.bands import COVARIATES, SOIL_ORDERS
from miso_mapper.config import Workflow
from miso_mapper.grid import AlaskaGrid, Chunk
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
    input_bytes: float
    output_bytes: float
    flop: float
    gpu_hours: float

    @property
    def area_km2(self) -> float:
        """Area of all planned chunk interiors, km² (what gets mapped, ocean included)."""
        return sum(ch.area_km2 for ch in self.chunks)

    @property
    def region_area_km2(self) -> float:
        """Area of the region itself, km² (grid CRS units are metres)."""
        return self.region.area / 1e6


def windows_per_chunk(chunk_size: int, halo: int, window: int, stride: int) -> int:
    """Number of ``window``-px windows at ``stride`` needed to cover a chunk with its halo."""
    span = chunk_size + 2 * halo
    per_side = 1 if span <= window else math.ceil((span - window) / stride) + 1
    return per_side * per_side


def make_plan(workflow: Workflow) -> Plan:
    """Plan a workflow offline: tiles and chunks in the region, and byte/FLOP/GPU-hour estimates."""
    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    chunks = grid.chunks_in(region)
    tiles = sorted({ch.tile for ch in chunks}, key=lambda t: grid.parse_tile_id(t)[::-1])
    g, cost = workflow.grid, workflow.cost
    pixels = g.chunk_size**2
    halo_pixels = (g.chunk_size + 2 * g.halo) ** 2
    windows = windows_per_chunk(g.chunk_size, g.halo, cost.window_size, cost.window_stride)
    scenes = cost.scenes_per_chunk or workflow.imagery.max_items
    n = len(chunks)
    input_bytes = n * halo_pixels * (scenes * S2_ASSETS_READ * 2 + len(COVARIATES) * 4)
    output_bytes = n * pixels * OUTPUT_BYTES_PER_PIXEL
    flop = n * cost.tasks * (windows * cost.encoder_flop_per_window + pixels * cost.query_flop)
    gpu_hours = flop / (cost.gpu_sustained_tflops * 1e12) / 3600
    return Plan(workflow, grid, region, tiles, chunks, windows, input_bytes, output_bytes, flop, gpu_hours)


def human_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
