"""Grid math: tile ids, chunk alignment, halo at region edges, statewide chunk count."""

import math

import numpy as np
import pytest
import shapely
from pydantic import ValidationError
from shapely.geometry import box

from miso_mapper.config import CostConfig, GridConfig, load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.inference.flops import query_flops
from miso_mapper.model.config import MisoNetConfig
from miso_mapper.plan import make_plan, predictor_load
from miso_mapper.region import region_geometry

from .helpers import WORKFLOWS

GRID = AlaskaGrid(GridConfig())
FAIRBANKS = (297_506.0, 1_667_290.0)


def test_fairbanks_is_in_the_reference_demo_tile():
    assert GRID.tile_at(*FAIRBANKS) == "AK050H50V15"


def test_tile_bounds_follow_the_50km_grid():
    gb = GRID.tile_geobox("AK050H50V15")
    # H=50 -> columns 49*5000.., V=15 -> rows 14*5000..
    assert tuple(gb.boundingbox) == (250_000.0, 1_650_000.0, 300_000.0, 1_700_000.0)
    assert gb.shape == (5000, 5000)
    assert gb.crs.epsg == 3338
    assert gb.resolution.x == 10 and gb.resolution.y == -10


@pytest.mark.parametrize("tile", ["AK050H01V01", "AK050H74V48", "AK050H37V12"])
def test_tile_id_round_trip(tile):
    h, v = GRID.parse_tile_id(tile)
    assert GRID.tile_id(h, v) == tile
    x0, y0, x1, y1 = GRID.tile_geobox(tile).boundingbox
    assert GRID.tile_at((x0 + x1) / 2, (y0 + y1) / 2) == tile


@pytest.mark.parametrize("bad", ["AK050H00V01", "AK050H75V01", "AK050H10V49", "XX050H10V10", "AK050H1V1x"])
def test_bad_tile_ids_are_refused(bad):
    with pytest.raises(MisoError):
        GRID.parse_tile_id(bad)


def test_zero_based_index_shifts_ids():
    grid0 = AlaskaGrid(GridConfig(index_base=0))
    assert grid0.tile_at(*FAIRBANKS) == "AK050H49V14"


def test_chunks_are_zarr_aligned_and_inside_one_tile():
    cfg = GRID.config
    for row, col in [(0, 0), (29, 99), (95, 147), (GRID.chunk_shape[0] - 1, GRID.chunk_shape[1] - 1)]:
        chunk = GRID.chunk(row, col)
        (r0, c0), (h, w) = GRID.offset(chunk.geobox), chunk.geobox.shape
        rows, cols = slice(r0, r0 + h), slice(c0, c0 + w)
        assert (r0, c0) == (row * cfg.chunk_size, col * cfg.chunk_size) and h == w == cfg.chunk_size
        assert rows.start % cfg.zarr_chunk == 0 and cols.start % cfg.zarr_chunk == 0
        assert (rows.stop - rows.start) % cfg.zarr_chunk == 0
        GRID.check_aligned(rows, cols)  # must not raise
        # the chunk's interior lies inside its tile
        tx0, ty0, tx1, ty1 = GRID.tile_geobox(chunk.tile).boundingbox
        x0, y0, x1, y1 = chunk.geobox.boundingbox
        assert tx0 <= x0 < x1 <= tx1 and ty0 <= y0 < y1 <= ty1
        # geobox position agrees with the slices, computed independently from the origin
        assert x0 == cfg.origin_x + cols.start * cfg.resolution
        assert y1 == cfg.origin_y - rows.start * cfg.resolution


def test_unaligned_writes_are_refused():
    with pytest.raises(MisoError, match="unaligned"):
        GRID.check_aligned(slice(100, 600), slice(0, 500))
    with pytest.raises(MisoError, match="unaligned"):
        GRID.check_aligned(slice(0, 500), slice(0, 499))


def test_invalid_grid_configs_are_refused():
    with pytest.raises(ValueError, match="whole number of zarr_chunk"):
        GridConfig(chunk_size=2500, zarr_chunk=600)
    with pytest.raises(ValueError, match="whole number of chunk_size"):
        GridConfig(tile_size=5000, chunk_size=1500, zarr_chunk=500)


def test_halo_is_full_width_at_region_and_grid_edges():
    halo = GRID.config.halo
    # a region covering exactly one chunk: the halo still extends past the region on every side
    chunk = GRID.chunk(29, 99)
    region = box(*chunk.geobox.boundingbox)
    (only,) = GRID.chunks_in(region)
    assert only.id == chunk.id
    hx0, hy0, hx1, hy1 = only.halo_geobox.boundingbox
    x0, y0, x1, y1 = only.geobox.boundingbox
    assert (x0 - hx0, y0 - hy0, hx1 - x1, hy1 - y1) == (halo * 10,) * 4
    # at the grid's upper-left corner the halo reaches outside the grid (read as no data), same shape
    corner = GRID.chunk(0, 0)
    assert corner.halo_geobox.shape == (2500 + 2 * halo,) * 2
    assert corner.halo_geobox.boundingbox.left == GRID.config.origin_x - halo * 10


def test_chunks_in_region_match_a_brute_force_count():
    region = shapely.Polygon([(100_000, 1_500_000), (420_000, 1_560_000), (300_000, 1_800_000)])
    got = {ch.id for ch in GRID.chunks_in(region)}
    size = 25_000
    expected = set()
    for row in range(GRID.chunk_shape[0]):
        for col in range(GRID.chunk_shape[1]):
            x0, y1 = -2_200_000 + col * size, 2_400_000 - row * size
            cell = box(x0, y1 - size, x0 + size, y1)
            if region.intersection(cell).area > 0:
                expected.add(f"r{row:04d}c{col:04d}")
    assert got == expected and len(got) > 20


def test_edge_touching_chunks_are_not_planned():
    chunk = GRID.chunk(10, 10)
    assert [c.id for c in GRID.chunks_in(box(*chunk.geobox.boundingbox))] == [chunk.id]


def test_alaska_10m_chunk_count_matches_independent_count():
    workflow = load_workflow(WORKFLOWS / "alaska-10m.yaml")
    plan = make_plan(workflow)
    region = region_geometry(workflow.region, AlaskaGrid(workflow.grid))
    # independent: rasterise the question on the 25 km lattice with plain shapely boxes
    size = workflow.grid.chunk_size * workflow.grid.resolution
    xmin, ymin, xmax, ymax = region.bounds
    c0, c1 = math.floor((xmin + 2_200_000) / size), math.floor((xmax + 2_200_000) / size)
    r0, r1 = math.floor((2_400_000 - ymax) / size), math.floor((2_400_000 - ymin) / size)
    cells = [
        box(-2_200_000 + c * size, 2_400_000 - (r + 1) * size, -2_200_000 + (c + 1) * size, 2_400_000 - r * size)
        for r in range(r0, r1 + 1)
        for c in range(c0, c1 + 1)
    ]
    expected = int(np.sum([region.intersection(cell).area > 0 for cell in cells]))
    assert len(plan.chunks) == expected
    # Alaska is ~1.72 million km² with its waters; the coarse outline is buffered by 10 km
    assert 1.6e6 < plan.region_area_km2 < 1.9e6
    assert len(plan.tiles) == len({ch.tile for ch in plan.chunks})
    assert "AK050H50V15" in plan.tiles  # Fairbanks
    assert plan.area_km2 == pytest.approx(len(plan.chunks) * 625.0)


def _brute_force_load(chunk: int, stride: int, support: int, spacing: int,
                      stage_spacings: tuple[int, ...] = ()) -> tuple[int, int, list[int]]:
    """Windows, queried points and per-stage points of the ensemble layout on one chunk, counted point by
    point along one axis: a window centred on ``j * stride`` answers lattice point ``k * spacing``
    (k = 0..chunk/spacing) when they are less than ``support`` px apart (the taper is 0 there and beyond); a
    stage evaluated every ``s > spacing`` px needs, per window, the multiples of ``s`` from the last at or
    before its first answered point to the first at or after its last."""
    points = range(0, chunk + 1, spacing) if spacing > 1 else range(chunk)
    answered = {}
    for j in range(-10, chunk // stride + 10):
        mine = [p for p in points if abs(p - j * stride) < support]
        if mine:
            answered[j] = mine
    queries = sum(len(p) for p in answered.values()) ** 2
    stages = [queries if s <= spacing else
              sum(math.ceil(p[-1] / s) - math.floor(p[0] / s) + 1 for p in answered.values()) ** 2
              for s in stage_spacings]
    return len(answered) ** 2, queries, stages


def test_predictor_load_counts_the_predictors_windows_and_queries():
    demo = load_workflow(WORKFLOWS / "demo.yaml")  # compact network: query spacing 5, stages 5, 5, 10, 25 px
    load = predictor_load(demo)
    assert (load.windows, load.output_points, list(load.stage_points)) == _brute_force_load(500, 50, 100, 5,
                                                                                            (5, 5, 10, 25))
    assert load.windows == 13 * 13  # centres 50 px apart from 50 px before to 50 px after the chunk
    state = load_workflow(WORKFLOWS / "alaska-10m.yaml")  # reference network: the same spacings
    load = predictor_load(state)
    assert (load.windows, load.output_points, list(load.stage_points)) == _brute_force_load(2500, 50, 100, 5,
                                                                                            (5, 5, 10, 25))
    assert 0.6 < load.output_points / 2500**2 < 0.66  # ~ (2 x 100 / (50 x 5))² queries per pixel
    exact = state.model_copy(update={"model": state.model.model_copy(
        update={"predictor": {"multi_rate": False, "query_spacing": 1}})})
    load = predictor_load(exact)
    assert load.stage_points == (load.output_points,) * 4 and 15 < load.output_points / 2500**2 < 16.5
    reference = state.model_copy(update={"model": state.model.model_copy(
        update={"predictor": {"query_all_pixels": True}})})
    side = (2500 + 2 * 175 - 250) // 50 + 1
    load = predictor_load(reference)
    assert (load.windows, load.output_points) == (side**2, side**2 * 250**2)  # every pixel of every window
    assert load.stage_points == (side**2 * 250**2,) * 4
    small_halo = demo.model_copy(update={"grid": demo.grid.model_copy(update={"halo": 125})})
    with pytest.raises(MisoError, match="needs at least 175 px"):
        predictor_load(small_halo)
    rf = small_halo.model_copy(update={"model": small_halo.model.model_copy(update={"kind": "rf"})})
    assert predictor_load(rf) is None  # no network, no windows: the halo is RF-11's business
    assert make_plan(rf).flop == 0 and make_plan(rf).windows_per_chunk == 0


def test_plan_estimates_follow_the_documented_formulas():
    plan = make_plan(load_workflow(WORKFLOWS / "demo.yaml"))
    w = plan.workflow
    assert len(plan.chunks) == 4 and plan.tiles == ["AK050H50V15"]
    pixels = 500 * 500
    halo_pixels = 850 * 850  # 500 px chunks with the 175 px halo
    assert plan.output_bytes == 4 * pixels * 9
    assert plan.input_bytes == 4 * halo_pixels * (w.imagery.max_items * 10 * 2 + 10 * 4)
    windows, queries, stages = _brute_force_load(500, 50, 100, 5, (5, 5, 10, 25))  # the compact network's
    assert plan.windows_per_chunk == windows and plan.queries_per_pixel == pytest.approx(queries / pixels)
    assert plan.stage_points_per_pixel == pytest.approx([s / pixels for s in stages])
    # compact's counted FLOPs, permafrost + taxonomy (tests/test_flops.py checks them against FlopCounterMode)
    flop = 0
    for task in ("permafrost", "taxonomy"):
        f = query_flops(MisoNetConfig.preset("compact", task))
        flop += windows * f.encode + sum(n * s for n, s in zip(stages, f.stages, strict=True)) + queries * f.tail
    assert plan.flop == 4 * flop
    assert plan.gpu_hours == pytest.approx(4 * flop / 200e12 / 3600)


def test_plan_counts_one_task_and_refuses_the_removed_flop_figures():
    demo = load_workflow(WORKFLOWS / "demo.yaml")
    one = demo.model_copy(update={"cost": demo.cost.model_copy(update={"tasks": 1})})
    both = make_plan(demo).flop
    assert both / 2 * 0.999 < make_plan(one).flop < both / 2  # the soil-order head is a little wider
    with pytest.raises(ValidationError, match="less than or equal to 2"):
        CostConfig(tasks=3)  # only permafrost and soil order have networks
    with pytest.raises(ValidationError, match="query_flop is no longer a setting"):
        CostConfig(query_flop=151e6)


def test_statewide_plan_fits_the_gpu_budget():
    """Issue target: both statewide maps with the reference network in <= 15 GPU-hours at 200 TFLOP/s, and
    at most a tenth of the FLOP per pixel of the exact ensemble that was the default before multi-rate queries
    (every stage at every pixel)."""
    state = load_workflow(WORKFLOWS / "alaska-10m.yaml")
    plan = make_plan(state)
    before = make_plan(state.model_copy(update={"model": state.model.model_copy(
        update={"predictor": {"multi_rate": False, "query_spacing": 1}})}))
    print(f"statewide: {plan.gpu_hours:.1f} GPU-hours (before multi-rate: {before.gpu_hours:.1f})")
    assert plan.gpu_hours <= 15
    assert plan.flop <= before.flop / 10
