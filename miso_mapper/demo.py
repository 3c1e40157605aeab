"""``miso-mapper demo``: the whole job on the synthetic demo world, in one command.

Stages, in order (each prints a ``[i/7]`` header, its own progress and a ``✓`` line with its time):

1. **world**: create the demo world under ``<out>/world`` (or reuse a complete one with the same seed);
2. **serve**: a real STAC API and a range-request asset server on 127.0.0.1 for the rest of the demo;
3. **train**: MISO on all labelled points, one network per task -> ``<out>/train/<task>.safetensors``;
4. **evaluate**: MISO vs RF-11 vs majority with ``evaluate --quick`` settings (``evaluate.quick_folds`` folds
   of each scheme; ``miso-mapper evaluate workflows/demo.yaml`` runs all of them) -> ``<out>/evaluate/``;
5. **run**: the trained networks map the region on a Dask LocalCluster -> ``<out>/maps.zarr``;
6. **export**: per-tile COGs, VRT mosaics, overview COGs and a STAC collection -> ``<out>/products/``;
7. **report**: field sites where new labels would help most (``sample-sites`` with the workflow's
   ``sample_sites`` settings, 20 sites) -> ``<out>/sample-sites/``, quicklooks, the HTML run report (which
   maps the sites) and the map's accuracy against the world's truth.

``--quick`` merges the workflow's ``demo.quick`` overrides first (fewer scenes, epochs, folds). The demo
owns its output folder: a rerun retrains only what changed (training state is resumable) and replaces the
store and products.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from miso_mapper.config import Workflow, load_workflow, merge_overrides
from miso_mapper.console import make_console
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout

STAGES = ("world", "serve", "train", "evaluate", "run", "export", "report")


@dataclass
class DemoResult:
    """What a demo produced (paths absolute) and how long each stage took (seconds)."""

    out: Path
    store: Path
    products: Path
    report: Path
    evaluation_report: Path | None
    sites: Path
    """the field sites chosen by ``sample-sites`` (GeoJSON; the CSV lies beside it)."""
    accuracy: dict[str, Any]
    """:func:`miso_mapper.report.map_accuracy` of the map against the world's truth."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def load_demo_workflow(config: Path, out: Path | None, stac_url: str | None = None, quick: bool = False,
                       checkpoints: dict[str, Path] | None = None) -> Workflow:
    """The demo workflow, with its output (and world) moved under ``out``, imagery at ``stac_url``, the
    ``demo.quick`` overrides merged when ``quick``, and the model pointed at ``checkpoints`` (task -> file)."""
    overrides: dict[str, Any] = {}
    if out is not None:
        out = out.expanduser().resolve()
        overrides["output"] = {"directory": str(out)}
        overrides["world"] = {"directory": str(out / "world")}
    if stac_url is not None:
        overrides["imagery"] = {"stac_url": stac_url}
    if checkpoints:
        overrides["model"] = {"kind": "miso"} | {f"{task}_checkpoint": str(path) for task, path in checkpoints.items()}
    workflow = load_workflow(config, overrides)
    if workflow.world is None:
        raise MisoError(f"{config} has no `world` section; the demo needs a synthetic world to serve")
    if quick and workflow.demo.quick:
        merged: dict[str, Any] = {}
        merge_overrides(merged, workflow.demo.quick)
        merge_overrides(merged, overrides)
        workflow = load_workflow(config, merged)
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
    from miso_mapper.progressbar import progress_bar

    started = time.perf_counter()
    with progress_bar(console) as bar:
        task = bar.add_task("creating world", total=100)

        def report(stage: str, fraction: float) -> None:
            bar.update(task, description=f"world: {stage}", completed=round(100 * fraction))

        # replace only a previous demo world, never a folder of something else
        create_world(directory, WorldSpec(seed=workflow.world.seed), progress=report, overwrite=existing is not None)
    console.print(
        f"[green]✓ world[/] created {directory} (seed {workflow.world.seed}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return directory


class _Stages:
    """Stage headers with the demo's elapsed time; records each stage's seconds."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        elapsed = time.perf_counter() - self.started
        self.console.rule(f"[bold][{STAGES.index(name) + 1}/{len(STAGES)}] {name}[/]: {what}  "
                          f"[dim](demo at {elapsed:.0f} s)[/]", align="left")
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0


def run_demo(config: Path, out: Path | None = None, quick: bool = False, console: Console | None = None) -> DemoResult:
    """Run every stage of the demo (see the module doc); returns where everything is."""
    import miso_mapper.train  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
    from miso_mapper.world import serve_world

    console = console or make_console()
    stages = _Stages(console)
    workflow = load_demo_workflow(config, out, quick=quick)
    with stages.stage("world", "the synthetic region near Fairbanks"):
        world_dir = ensure_world(workflow, console)
    with contextlib.ExitStack() as servers:
        with stages.stage("serve", "STAC API and asset server on 127.0.0.1"):
            served = servers.enter_context(serve_world(world_dir))
            console.print(f"[green]✓ serve[/] STAC API {served.stac_url}  assets {served.asset_url}")
        workflow = load_demo_workflow(config, out, stac_url=served.stac_url, quick=quick)
        result = _after_serving(config, out, quick, workflow, served.stac_url, stages, console)
    result.stage_seconds = stages.seconds
    result.seconds = time.perf_counter() - stages.started
    _print_result(result, console)
    return result


def _after_serving(config: Path, out: Path | None, quick: bool, workflow: Workflow, stac_url: str,
                   stages: _Stages, console: Console) -> DemoResult:
    from miso_mapper.evaluate.report import print_tables
    from miso_mapper.evaluate.run import run_evaluation
    from miso_mapper.export.run import export_workflow
    from miso_mapper.pipeline.clusters import open_client
    from miso_mapper.pipeline.commands import RichRunProgress
    from miso_mapper.pipeline.run import run_workflow
    from miso_mapper.report import map_accuracy, write_run_report
    from miso_mapper.sites.run import sample_sites
    from miso_mapper.train.run import run_training

    with stages.stage("train", f"MISO ({workflow.train.size or workflow.model.size}), both tasks"):
        checkpoints = run_training(workflow, console=console)
    workflow = load_demo_workflow(config, out, stac_url=stac_url, quick=quick, checkpoints=checkpoints)
    layout = RunLayout.of(workflow)
    ev = workflow.evaluate
    with stages.stage("evaluate", f"MISO vs RF-11 vs majority, {ev.quick_folds} fold(s) of "
                                  f"{', '.join(ev.schemes)}"):
        evaluation = run_evaluation(workflow, quick=True, console=console)
        print_tables(evaluation, console)
    with open_client(workflow.cluster, layout.logs) as client:
        with stages.stage("run", f"map {workflow.name} on a LocalCluster of {workflow.cluster.n_workers} workers"):
            with RichRunProgress(console) as progress:
                summary = run_workflow(workflow, overwrite=True, progress=progress, client=client)
            if summary.failed:
                raise MisoError(f"{len(summary.failed)} chunk(s) failed: {', '.join(summary.failed)}; "
                                f"see the run summary above")
        with stages.stage("export", "COGs, VRT mosaics, overviews, STAC"):
            exported = export_workflow(workflow, client=client, overwrite=True)
            console.print(f"[green]✓ export[/] {len(exported.tiles)} tile(s), {len(exported.files)} files in "
                          f"{exported.seconds:.1f} s")
    with stages.stage("report", "field sites, quicklooks, run report, accuracy against the truth"):
        sites = sample_sites(workflow)
        for note in sites.notes:
            console.print(f"[yellow]note:[/] {note}", highlight=False)
        console.print(f"[green]✓ sample-sites[/] {len(sites.records)} field site(s): {sites.layout.geojson}",
                      highlight=False)
        accuracy = map_accuracy(workflow)
        report = write_run_report(workflow, layout.report, evaluation_dir=layout.evaluate.directory,
                                  products=exported.files, accuracy=accuracy)
    evaluation_report = layout.evaluate.report
    return DemoResult(layout.directory, layout.store, layout.products, report,
                      evaluation_report if evaluation_report.exists() else None, sites.layout.geojson, accuracy)


def _print_result(result: DemoResult, console: Console) -> None:
    console.rule(f"[bold green]demo finished in {result.seconds:.0f} s[/]", align="left")
    for task, name in (("permafrost", "permafrost"), ("soil_order", "soil order")):
        a = result.accuracy.get(task) or {}
        if a.get("accuracy") is not None:
            console.print(f"map vs truth, {name}: accuracy {a['accuracy']:.3f} over {a['pixels']:,} px "
                          f"(majority-class map {a['majority_accuracy']:.3f})")
    console.print("stage seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in result.stage_seconds.items()))
    console.print(f"report:      {result.report}")
    if result.evaluation_report is not None:
        console.print(f"evaluation:  {result.evaluation_report}")
    console.print(f"COGs:        {result.products / 'cogs'}")
    console.print(f"mosaics:     {result.products / 'mosaic'}")
    console.print(f"STAC:        {result.products / 'stac' / 'collection.json'}")
    console.print(f"field sites: {result.sites}")
    console.print(f"Zarr store:  {result.store}")
