"""What a workflow's mapping computes, counted offline without torch: the task networks it runs, what its MISO
predictor does on one chunk (:func:`predictor_load`), and the FLOP per chunk and over the region.

Shared by :mod:`miso_mapper.plan` (the estimate) and :mod:`miso_mapper.checks` (the refusal of the reference
network on CPU-only clusters states its cost), which is why it is neither of them.
"""

from __future__ import annotations

from miso_mapper.config import Workflow
from miso_mapper.grid import AlaskaGrid
from miso_mapper.inference.chunk_cost import ChunkLoad, chunk_load
from miso_mapper.inference.settings import checked_predictor_config
from miso_mapper.model.config import MisoNetConfig, Task
from miso_mapper.region import region_geometry


def task_networks(workflow: Workflow) -> list[MisoNetConfig]:
    """The architecture of each task network the workflow runs (``model.size``; ``cost.tasks`` 1 = permafrost,
    2 = permafrost and soil order)."""
    tasks: tuple[Task, ...] = ("permafrost", "taxonomy")[: workflow.cost.tasks]
    return [MisoNetConfig.preset(workflow.model.size, task) for task in tasks]


def predictor_load(workflow: Workflow) -> ChunkLoad | None:
    """What the workflow's MISO predictor does on one chunk (``grid.chunk_size`` px with ``grid.halo``), per
    task network: windows, per-stage points, queried points (:func:`~miso_mapper.inference.chunk_cost.chunk_load`,
    the predictor's own layout, so it follows every predictor setting); ``None`` when the workflow maps with
    RF-11 or the synthetic stand-in (no network). Torch is not loaded. Raises :class:`MisoError` when the
    predictor settings are invalid or do not fit the grid (only possible for a workflow that skipped validation,
    e.g. one made by ``model_copy(update=...)``).
    """
    if workflow.model.kind != "miso":
        return None
    g = workflow.grid
    settings = checked_predictor_config(workflow.model.predictor, g.chunk_size, g.halo)
    return chunk_load(settings, task_networks(workflow), g.chunk_size, g.halo)


def chunk_flop(workflow: Workflow, load: ChunkLoad | None) -> float:
    """FLOP of one chunk (with its halo), summed over the task networks; 0 without a network (``load`` None)."""
    return sum(load.flop(net) for net in task_networks(workflow)) if load else 0.0


def planned_flop(workflow: Workflow) -> float:
    """The plan's FLOP total (chunks in the region x :func:`chunk_flop`), without the rest of the plan or its
    checks. Raises :class:`MisoError` when the region cannot be built."""
    grid = AlaskaGrid(workflow.grid)
    return len(grid.chunks_in(region_geometry(workflow.region, grid))) * chunk_flop(workflow, predictor_load(workflow))
