"""``miso-mapper demo``: the whole job on the synthetic demo world, in one command.

Stages run in order and each prints what it did. Stages that later issues add (train, evaluate, run,
export, report) plug in here; until they exist the demo stops after planning and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from miso_mapper.config import Workflow, load_workflow
from miso_mapper.errors import MisoError


def load_demo_workflow(config: Path, out: Path | None, stac_url: str | None = None) -> Workflow:
    """The demo workflow, with its output (and world) moved under ``out`` and imagery at ``stac_url``."""
    overrides: dict = {}
    if out is not None:
        out = out.expanduser().resolve()
        overrides["output"] = {"directory": str(out)}
        overrides["world"] = {"directory": str(out / "world")}
    if stac_url is not None:
        overrides["imagery"] = {"stac_url": stac_url}
    workflow = load_workflow(config, overrides)
    if workflow.world is None:
        raise MisoError(f"{config} has no `world` section; the demo needs a synthetic world to serve")
    return workflow


def ensure_world(workflow: Workflow, console: Console) -> Path:
    """Create the workflow's world unless a complete one with the same seed is already there."""
    from miso_mapper.world import WorldSpec, create_world, load_manifest

    assert workflow.world is not None
    directory = workflow.world.directory
    try:
        existing = load_manifest(directory)
    except (MisoError, OSError, ValueError):
        existing = None
    if existing is not None and existing.spec == WorldSpec(seed=workflow.world.seed):
        console.print(f"[green]✓ world[/] reusing {directory} (seed {workflow.world.seed})")
        return directory
    started = time.perf_counter()
    # replace only a previous demo world, never a folder of something else
    create_world(directory, WorldSpec(seed=workflow.world.seed), overwrite=existing is not None)
    console.print(
        f"[green]✓ world[/] created {directory} (seed {workflow.world.seed}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return directory


def run_demo(config: Path, out: Path | None = None, quick: bool = False, console: Console | None = None) -> None:
    """Create and serve the demo world, then plan the demo workflow against the served STAC API."""
    from miso_mapper.plan import make_plan
    from miso_mapper.world import serve_world

    console = console or Console()
    workflow = load_demo_workflow(config, out)
    world_dir = ensure_world(workflow, console)
    with serve_world(world_dir) as served:
        console.print(f"[green]✓ serve[/] STAC API {served.stac_url}  assets {served.asset_url}")
        workflow = load_demo_workflow(config, out, stac_url=served.stac_url)
        the_plan = make_plan(workflow)
        n_items = _count_items(workflow)
        console.print(
            f"[green]✓ plan[/] {len(the_plan.chunks)} chunks in {len(the_plan.tiles)} tile(s), "
            f"{the_plan.area_km2:.0f} km², {n_items} Sentinel-2 items in the date windows"
        )
    console.print(
        "[yellow]…[/] train, evaluate, run, export and report are not built yet "
        "(issues 4-6); the demo stops after planning."
    )
    console.print(f"outputs: {workflow.output.directory}")


def _count_items(workflow: Workflow) -> int:
    """Items of the imagery collection over the region in any of the date windows."""
    from pystac_client import Client

    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.region import region_geometry

    grid = AlaskaGrid(workflow.grid)
    region = region_geometry(workflow.region, grid)
    from odc.geo.geom import Geometry

    lonlat = Geometry(region, workflow.grid.crs).to_crs("EPSG:4326").boundingbox
    client = Client.open(workflow.imagery.stac_url)
    ids: set[str] = set()
    for first, last in workflow.imagery.date_windows():
        search = client.search(
            collections=[workflow.imagery.collection],
            bbox=list(lonlat),
            datetime=f"{first.isoformat()}/{last.isoformat()}T23:59:59Z",
        )
        ids.update(item.id for item in search.items())
    return len(ids)
