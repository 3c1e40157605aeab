"""The ``miso-mapper`` command line.

Exit codes: 0 success, 1 failure (bad input data, unreachable servers, failed work), 2 usage (bad arguments
or an invalid workflow file). A :class:`~miso_mapper.errors.MisoError` is printed as one line, never as a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.table import Table

from miso_mapper import __version__
from miso_mapper.console import command_log, make_console
from miso_mapper.errors import MisoError

F = TypeVar("F", bound=Callable[..., Any])

console = make_console()
err_console = make_console(stderr=True)

app = typer.Typer(
    name="miso-mapper",
    help="Fine-scale (10 m) permafrost and soil-order maps of Alaska with the MISO model.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
world_app = typer.Typer(help="Create and serve the synthetic demo world.", no_args_is_help=True)
app.add_typer(world_app, name="world")
rf_app = typer.Typer(help="RF-11 baseline model files.", no_args_is_help=True)
app.add_typer(rf_app, name="rf")
checkpoint_app = typer.Typer(help="MISO checkpoints: import/export reference .pth files, show a card.",
                             no_args_is_help=True)
app.add_typer(checkpoint_app, name="checkpoint")

REPO_WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def user_errors(func: F) -> F:
    """Turn :class:`MisoError` into one red line on stderr and its exit code; Ctrl-C into exit 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MisoError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def interruptible(func: F) -> F:
    """Run a command inside :func:`miso_mapper.signals.unwind_on_signals`: Ctrl-C or SIGTERM stops the
    servers, pools and temporary folders it started, prints one line and exits 130 / 143."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import signal

        from miso_mapper.signals import exit_status, interrupt_line, unwind_on_signals

        try:
            with unwind_on_signals():
                return func(*args, **kwargs)
        except KeyboardInterrupt as exc:
            # what the command started is stopped; a repeated signal must not break the exit with a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            err_console.print(f"[yellow]{interrupt_line(exc)}[/]", highlight=False)
            raise typer.Exit(exit_status(exc)) from None

    return wrapper  # type: ignore[return-value]


ConfigArg = Annotated[Path, typer.Argument(help="workflow YAML file, e.g. workflows/alaska-10m.yaml")]


class LogLevel(StrEnum):
    """``--log-level`` values."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


class LogFormat(StrEnum):
    """``--log-format`` values."""

    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        console.print(f"miso-mapper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")
    ] = False,
    log_level: Annotated[LogLevel, typer.Option(
        "--log-level", envvar="MISO_LOG_LEVEL", case_sensitive=False,
        help="lowest level of the messages shown (the run folder's log file always records debug)")]
    = LogLevel.info,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="MISO_LOG_FORMAT", case_sensitive=False,
        help="text, or json: one object per line (time, level, logger, message, fields)")] = LogFormat.text,
) -> None:
    """Fine-scale (10 m) permafrost and soil-order maps of Alaska with the MISO model.

    Off a terminal (a batch job's output file) messages are plain lines, never wrapped or cut, and progress is
    a line every 30 s or 10 % with its ETA. Commands of a workflow (run, train, evaluate, export, demo) also
    write <output.directory>/logs/<command>-<UTC time>.log at debug level.
    """
    from miso_mapper.logs import configure

    configure(log_level.value, log_format.value)


@app.command()
@user_errors
def validate(config: ConfigArg) -> None:
    """Check a workflow file and print its resolved settings as JSON.

    Checks what plan and run would refuse, offline: the settings, the region (file, tile ids, inside the grid),
    the covariate folder, the points file and the model files (readable, right task and size, no pickles).
    """
    from miso_mapper.checks import check_workflow
    from miso_mapper.config import load_workflow

    workflow = load_workflow(config)
    check_workflow(workflow, str(config))
    console.print_json(json.dumps(workflow.model_dump(mode="json")))
    err_console.print(f"[green]ok:[/] {config} is valid (config hash {workflow.config_hash()[:12]})")


@app.command()
@user_errors
def plan(
    config: ConfigArg,
    list_chunks: Annotated[bool, typer.Option("--chunks", help="also list every chunk id")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the plan as one JSON object")] = False,
) -> None:
    """Show what a workflow covers and costs: tiles, chunks, km², bytes, FLOPs, GPU-hours. Works offline.

    The estimates follow the formulas in ``miso_mapper.plan`` (see the README's "Planning" section).
    """
    from miso_mapper.config import load_workflow
    from miso_mapper.plan import make_plan

    workflow = load_workflow(config)
    the_plan = make_plan(workflow)
    for warning in the_plan.warnings:
        err_console.print(f"[yellow]warning:[/] {warning} (validate and run refuse this)", highlight=False,
                          soft_wrap=True)
    if as_json:
        console.print_json(json.dumps(plan_summary(the_plan, list_chunks)))
    else:
        print_plan(the_plan, list_chunks)


def plan_summary(the_plan: Any, with_chunks: bool = False) -> dict[str, Any]:
    """The headline figures of a :class:`~miso_mapper.plan.Plan` as plain JSON-able values."""
    from miso_mapper.pipeline.clusters import describe_compute

    summary: dict[str, Any] = {
        "workflow": the_plan.workflow.name,
        "tiles": len(the_plan.tiles),
        "chunks": len(the_plan.chunks),
        "chunk_area_km2": round(the_plan.area_km2, 3),
        "region_area_km2": round(the_plan.region_area_km2, 3),
        "input_bytes": int(the_plan.input_bytes),
        "output_bytes": int(the_plan.output_bytes),
        "windows_per_chunk": the_plan.windows_per_chunk,
        "queries_per_pixel": round(the_plan.queries_per_pixel, 3),
        "stage_points_per_pixel": [round(v, 3) for v in the_plan.stage_points_per_pixel],
        "flop": the_plan.flop,
        "gpu_hours": round(the_plan.gpu_hours, 3),
        "cluster": describe_compute(the_plan.workflow.cluster),
        "tile_ids": the_plan.tiles,
        "warnings": list(the_plan.warnings),
    }
    if with_chunks:
        summary["chunk_ids"] = [ch.id for ch in the_plan.chunks]
    return summary


def print_plan(the_plan: Any, list_chunks: bool = False) -> None:
    """Print a plan as a table for people."""
    from miso_mapper.pipeline.clusters import describe_compute
    from miso_mapper.plan import human_bytes

    w, g = the_plan.workflow, the_plan.workflow.grid
    table = Table(title=f"plan: {w.name}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    shown = ", ".join(the_plan.tiles[:6]) + (" ..." if len(the_plan.tiles) > 6 else "")
    table.add_row("grid", f"{g.crs}, {g.resolution:g} m, tiles {g.tile_size} px, chunks {g.chunk_size} px "
                  f"(+{g.halo} px halo), Zarr chunks {g.zarr_chunk} px")
    table.add_row("tiles", f"{len(the_plan.tiles)}  ({shown})")
    stages = "/".join(f"{v:.2g}" for v in the_plan.stage_points_per_pixel)
    table.add_row("chunks", f"{len(the_plan.chunks)}  ({the_plan.windows_per_chunk} model windows and "
                  f"{the_plan.queries_per_pixel:.2f} queries per pixel each, per task"
                  + (f"; query stages at {stages} points per pixel)" if stages else ")"))
    table.add_row("area", f"{the_plan.area_km2:,.1f} km² in chunks; region {the_plan.region_area_km2:,.1f} km²")
    table.add_row("input (upper bound)", human_bytes(the_plan.input_bytes))
    table.add_row("output (uncompressed)", human_bytes(the_plan.output_bytes))
    table.add_row("compute", f"{the_plan.flop:.3g} FLOP  ≈ {the_plan.gpu_hours:,.1f} GPU-hours at "
                  f"{w.cost.gpu_sustained_tflops:g} TFLOP/s sustained")
    table.add_row("cluster", describe_compute(w.cluster))
    console.print(table)
    if list_chunks:
        for ch in the_plan.chunks:
            console.print(f"{ch.id}  {ch.tile}  bounds {tuple(round(v) for v in ch.geobox.boundingbox)}")


@app.command("job-script")
@user_errors
def job_script(config: ConfigArg) -> None:
    """Print the batch script each worker job of a slurm/pbs workflow runs (#SBATCH / #PBS lines with GPUs,
    memory and walltime, then `dask worker ... --resources GPU=1`), as dask-jobqueue would submit it.

    Nothing is submitted or written. Other cluster kinds start no jobs: one line says so (exit 2).
    """
    from miso_mapper.config import load_workflow
    from miso_mapper.layout import RunLayout
    from miso_mapper.pipeline.clusters import job_script as make_job_script

    workflow = load_workflow(config)
    print(make_job_script(workflow.cluster, RunLayout.of(workflow).logs), end="")


@world_app.command("create")
@user_errors
@interruptible
def world_create(
    directory: Annotated[Path, typer.Argument(help="folder to write the world into (must be empty or new)")],
    seed: Annotated[int, typer.Option(help="random seed: same seed, same world")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing world")] = False,
) -> None:
    """Write the synthetic demo region: scenes, covariates, points, polygons, truth, STAC items."""
    from miso_mapper.world import WorldSpec, create_world

    with _progress() as progress:
        task = progress.add_task("creating world", total=100)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, description=stage, completed=round(100 * fraction))

        manifest = create_world(directory, WorldSpec(seed=seed), progress=report, overwrite=overwrite)
    size_mb = sum(manifest.files.values()) / 1e6
    console.print(
        f"[green]world written:[/] {directory}  ({len(manifest.items)} scenes, {len(manifest.files)} files, "
        f"{size_mb:.0f} MB, seed {seed})"
    )


@world_app.command("serve")
@user_errors
@interruptible
def world_serve(
    directory: Annotated[Path, typer.Argument(help="a folder written by `world create`")],
    stac_port: Annotated[int, typer.Option(help="STAC API port (0: any free port)")] = 7822,
    asset_port: Annotated[int, typer.Option(help="asset (HTTP range) server port (0: any free port)")] = 7823,
) -> None:
    """Serve a world: a STAC API and an HTTP range-request asset server on 127.0.0.1, until Ctrl-C."""
    from miso_mapper.world import serve_forever

    serve_forever(directory, stac_port=stac_port, asset_port=asset_port)


@world_app.command("export-catalog")
@user_errors
def world_export_catalog(
    directory: Annotated[Path, typer.Argument(help="a folder written by `world create`")],
    out: Annotated[Path, typer.Argument(help="folder to write the catalog into (new or empty)")],
    fmt: Annotated[str, typer.Option("--format", help="json (static catalog) or geoparquet")] = "json",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace a folder that is not empty")] = False,
) -> None:
    """Write a world's items as a catalog on disk (asset hrefs relative to it), for `imagery.catalog` or `serve`."""
    from miso_mapper.errors import UsageError
    from miso_mapper.world.catalog import export_catalog

    if fmt not in ("json", "geoparquet"):
        raise UsageError(f"--format must be json or geoparquet, not {fmt!r}")
    path = export_catalog(directory, out, fmt, overwrite=overwrite)  # type: ignore[arg-type]
    console.print(f"[green]catalog written:[/] {path}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
@interruptible
def serve(
    folder: Annotated[Path, typer.Argument(help="folder with the assets, and catalog.json, collection.json or one "
                                                 "*.parquet file (else see --catalog)")],
    catalog: Annotated[Path | None, typer.Option(help="the catalog file or folder inside FOLDER, if FOLDER holds "
                                                      "none at its top (e.g. FOLDER/stac/catalog.json)")] = None,
    port: Annotated[int, typer.Option(help="STAC API port (0: any free port)")] = 7822,
    asset_port: Annotated[int, typer.Option(help="asset (HTTP range) server port (0: any free port)")] = 7823,
) -> None:
    """Serve a catalog on disk as a STAC API, and the files under FOLDER over range-capable HTTP, on 127.0.0.1
    until Ctrl-C. Item assets under FOLDER are served by URL; others keep their hrefs."""
    import functools

    from miso_mapper.world import serve_folder, serve_forever

    serve_forever(folder, stac_port=port, asset_port=asset_port,
                  serve=functools.partial(serve_folder, catalog=catalog))


@app.command()
@user_errors
@interruptible
def demo(
    out: Annotated[Path | None, typer.Option(help="output folder (default: the workflow's)")] = None,
    config: Annotated[Path, typer.Option(help="demo workflow file")] = REPO_WORKFLOWS / "demo.yaml",
    quick: Annotated[bool, typer.Option("--quick", help="smallest settings that still exercise every step")]
    = False,
) -> None:
    """Run the whole job on the embedded demo world: create, serve, train, evaluate, run, export, report."""
    from miso_mapper.demo import load_demo_workflow, run_demo
    from miso_mapper.layout import RunLayout

    logs = RunLayout.of(load_demo_workflow(config, out, quick=quick)).logs
    with command_log(logs, "demo", console):
        run_demo(config, out=out, quick=quick, console=console)


TaskOption = Annotated[
    Literal["permafrost", "taxonomy", "both"] | None,
    typer.Option("--task", help="permafrost, taxonomy or both (default: train.tasks of the workflow)"),
]


@app.command()
@user_errors
@interruptible
def train(
    config: ConfigArg,
    task: TaskOption = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="ignore saved training state instead of resuming")]
    = False,
) -> None:
    """Train MISO on the workflow's labelled points; writes <task>.safetensors under train.directory.

    Chips are read once through the imagery layer and cached (memory-mapped .npy); a killed run resumes from
    its last epoch.
    """
    from miso_mapper.config import load_workflow

    tasks = None if task is None else ["permafrost", "taxonomy"] if task == "both" else [task]
    workflow = load_workflow(config)  # a bad workflow file fails before torch loads (tens of seconds)
    import miso_mapper.train  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
    from miso_mapper.layout import RunLayout
    from miso_mapper.train.run import run_training

    with command_log(RunLayout.of(workflow).logs, "train", console):
        run_training(workflow, tasks, console=console, fresh=fresh)


@app.command()
@user_errors
@interruptible
def evaluate(
    config: ConfigArg,
    quick: Annotated[bool, typer.Option("--quick", help="evaluate.quick_folds folds, evaluate.quick_epochs epochs")]
    = False,
    fresh: Annotated[bool, typer.Option("--fresh", help="retrain every fold instead of resuming saved runs")]
    = False,
) -> None:
    """Cross-validate MISO against RF-11 and a majority baseline (random and spatial folds); print Tables 1-2.

    Writes splits, predictions, CSV/Markdown tables and a self-contained report.html under evaluate.directory.
    """
    from miso_mapper.config import load_workflow
    from miso_mapper.layout import RunLayout

    workflow = load_workflow(config)  # a bad workflow file fails before torch loads (tens of seconds)
    import miso_mapper.train  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
    from miso_mapper.evaluate.report import print_tables
    from miso_mapper.evaluate.run import run_evaluation

    with command_log(RunLayout.of(workflow).logs, "evaluate", console):
        result = run_evaluation(workflow, quick=quick, console=console, fresh=fresh)
        print_tables(result, console)
        console.print(f"[green]✓ evaluate[/] {result.seconds:.0f} s; report: "
                      f"{RunLayout.of(workflow).evaluate.report}")


@app.command()
@user_errors
def run(
    config: ConfigArg,
    resume: Annotated[bool, typer.Option("--resume", help="continue a run: only chunks not yet done")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="map only this chunk id (repeatable)")] = None,
    max_chunks: Annotated[int | None, typer.Option("--max-chunks", help="stop after this many chunks")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing store and manifest")] = False,
    verify: Annotated[bool, typer.Option("--verify", help="with --resume: re-read every done chunk and compare "
                                         "it with its recorded checksum")] = False,
) -> None:
    """Map the workflow's region into its Zarr store on the configured Dask cluster.

    Plans the chunks, records the STAC items of each in the run manifest (SQLite beside the store), then
    reads, predicts and writes chunk by chunk in a bounded window. A killed run continues with --resume, which
    first sends back to pending every done chunk whose Zarr chunk files are gone (--verify: whose bytes changed).

    One writer per run folder: run and export hold its lock (run.lock: host, pid, command, heartbeat); a second
    one is refused, naming the holder. A stale lock (dead pid, or no heartbeat for output.lock_stale_after s) is
    cleared with `miso-mapper unlock CONFIG`. SIGTERM / SIGINT: no new chunks, cluster.shutdown_grace s for those
    in flight, the rest back to pending, exit 143 / 130.
    """
    from miso_mapper.pipeline.commands import run_command

    run_command(config, resume=resume, only=only, max_chunks=max_chunks, overwrite=overwrite, verify=verify)


@app.command()
@user_errors
def status(
    config: ConfigArg,
    verify: Annotated[bool, typer.Option("--verify", help="re-read every done chunk and compare it with its "
                                         "recorded checksum")] = False,
) -> None:
    """Show a run's progress from its manifest: chunks per status, area done, failures with their errors, lock.

    Every done chunk whose Zarr chunk files are gone (--verify: whose bytes changed) first goes back to pending,
    with a line saying why. Exits 1 when the store is missing.
    """
    from miso_mapper.pipeline.commands import status_command

    status_command(config, verify=verify)


@app.command()
@user_errors
def unlock(config: ConfigArg) -> None:
    """Remove the stale lock of a workflow's run folder (left by a run or export that died or lost its node).

    Refuses a lock whose holder is alive (its pid runs on this host, or its heartbeat is younger than
    output.lock_stale_after seconds): stop that command first.
    """
    from miso_mapper.pipeline.commands import unlock_command

    unlock_command(config)


@app.command()
@user_errors
def report(
    config: ConfigArg,
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: <output.directory>/report.html)")]
    = None,
) -> None:
    """Write a self-contained HTML report of a run: config, model cards, coverage, timings, quicklooks, accuracy.

    Quicklook PNGs go to a quicklooks/ folder beside the page; accuracy against truth only for demo worlds.
    """
    from rich.markup import escape

    from miso_mapper.api import demo_accuracy
    from miso_mapper.config import load_workflow
    from miso_mapper.layout import RunLayout
    from miso_mapper.points import describe_label_counts
    from miso_mapper.report import write_run_report
    from miso_mapper.trained import with_trained_checkpoints

    workflow, _ = with_trained_checkpoints(load_workflow(config), required=False)  # the cards `run` mapped with
    out = out or RunLayout.of(workflow).report
    acc = demo_accuracy(workflow)
    if acc is not None:
        for task in ("permafrost", "soil_order"):
            a = acc[task]
            if a["accuracy"] is not None:
                console.print(f"{task}: accuracy {a['accuracy']:.3f} on {a['pixels']:,} px "
                              f"(majority {a['majority_class']}: {a['majority_accuracy']:.3f})")
        if acc["labels"]:
            console.print(f"labels: {describe_label_counts(acc['labels'])}", highlight=False)
        elif acc["points_note"]:
            console.print(f"[yellow]note:[/] labelled points not used: {escape(acc['points_note'])}", highlight=False)
    path = write_run_report(workflow, out, accuracy=acc)
    console.print(f"[green]✓ report[/] {path}")


@app.command()
@user_errors
def export(
    config: ConfigArg,
    tiles: Annotated[list[str] | None, typer.Option("--tiles", help="export only this tile id (repeatable)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace existing products")] = False,
) -> None:
    """Write per-tile COGs, VRT mosaics, statewide overviews and a STAC collection from the workflow's store.

    Products go to export.directory (default: output.directory/products); see miso_mapper.export for the layout.
    Holds the run folder's lock like run (refused while a run or export works there); SIGTERM / SIGINT stop it
    with no half-written product, exit 143 / 130.
    """
    from miso_mapper.export.command import export_command

    export_command(config, tiles=tiles, overwrite=overwrite)


@app.command()
@user_errors
@interruptible
def view(
    config: ConfigArg,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (0: any free port)")] = 7830,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="do not open a web browser")] = False,
) -> None:
    """Browse the exported maps: layers, legends, opacity, values under a click, chunk status; until Ctrl-C.

    Serves the products of `export` (VRT mosaics, overviews) on 127.0.0.1 only; tunnel the port to look from
    another machine (ssh -L 7830:127.0.0.1:7830 NODE).
    """
    from miso_mapper.view.command import view_command

    view_command(config, port, not no_browser)


@app.command("sample-sites")
@user_errors
def sample_sites(
    config: ConfigArg,
    n: Annotated[int | None, typer.Option("--n", help="number of sites (default: sample_sites.n, 20)")] = None,
    min_distance: Annotated[float | None, typer.Option("--min-distance", help="smallest distance between two "
                                                       "sites, metres (default: sample_sites.min_distance_m, 500)")]
    = None,
    lattice_px: Annotated[int | None, typer.Option("--lattice-px", help="candidate spacing, grid pixels "
                                                   "(default: sample_sites.lattice_px, 10)")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="polygons sites must lie in (GeoJSON/GPKG, any CRS)")]
    = None,
    access: Annotated[Path | None, typer.Option("--access", help="access lines: roads, rivers (GeoJSON/GPKG, any "
                                                "CRS); needs --max-access-distance")] = None,
    max_access_distance: Annotated[float | None, typer.Option("--max-access-distance", help="largest distance "
                                                              "from a site to the access lines, metres")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: <output.directory>/"
                                             "sample-sites)")] = None,
) -> None:
    """Rank candidate field sites where a new label would help the maps most; write GeoJSON and CSV.

    Score = max(permafrost spread / 0.5, soil-order entropy), + 1 outside either task's area of applicability;
    candidates every --lattice-px pixels of the mapped area, chosen greedily at least --min-distance apart,
    optionally inside --mask and within --max-access-distance of --access. Reads maps.zarr only.
    """
    from miso_mapper.config import load_workflow
    from miso_mapper.sites.run import resolve_settings
    from miso_mapper.sites.run import sample_sites as choose_sites

    workflow = load_workflow(config)
    overrides = {"n": n, "min_distance_m": min_distance, "lattice_px": lattice_px, "mask": _abs(mask),
                 "access": _abs(access), "max_access_distance_m": max_access_distance, "directory": _abs(out)}
    resolve_settings(workflow, overrides)  # a bad flag is one line before any progress bar
    with _progress() as progress:
        task = progress.add_task("scoring candidate sites (Zarr chunks)", total=None)
        result = choose_sites(workflow, overrides,
                              progress=lambda done, total: progress.update(task, completed=done, total=total))
    for note in result.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    table = Table(title=f"sample sites: {workflow.name}", title_justify="left")
    for column in ("rank", "score", "x_3338", "y_3338", "reasons"):
        table.add_column(column)
    for record in result.records:
        table.add_row(*(str(record[c]) for c in ("rank", "score", "x_3338", "y_3338", "reasons")))
    console.print(table)
    console.print(f"[green]✓ sample-sites[/] {len(result.records)} site(s): {result.layout.geojson}, "
                  f"{result.layout.csv}", highlight=False, soft_wrap=True)


def _abs(path: Path | None) -> Path | None:
    """A command-line path made absolute against the current folder (None stays None)."""
    return None if path is None else path.expanduser().resolve()


@rf_app.command("convert")
@user_errors
def rf_convert(
    old: Annotated[Path, typer.Argument(help="RF-11 model pickled by an earlier version (.joblib, card beside it)")],
    new: Annotated[Path, typer.Argument(help="the skops file to write, e.g. rf11.skops (card written beside it)")],
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="unpickle OLD: only for a file you made "
                                               "yourself, since reading a pickle runs any code in it")] = False,
) -> None:
    """Convert an RF-11 model pickled by an earlier version into the skops format run and validate accept."""
    from miso_mapper.errors import UsageError

    if not trust_pickle:
        raise UsageError(f"refusing to unpickle {old}: reading a pickle runs any code in it; if you made this "
                         "file yourself, add --trust-pickle")
    from miso_mapper.baseline.rf_file import convert_pickled_rf

    path, card = convert_pickled_rf(old, new)
    console.print(f"[green]✓ rf convert[/] {path} (card {card})")


ForceOption = Annotated[bool, typer.Option("--force", help="replace --out if it exists")]


@checkpoint_app.command("import")
@user_errors
def checkpoint_import(
    path: Annotated[Path, typer.Argument(help="state dict saved by the reference code, e.g. best_model.pth")],
    task: Annotated[Literal["permafrost", "taxonomy"], typer.Option("--task", help="permafrost or taxonomy")],
    out: Annotated[Path, typer.Option("--out", help="the checkpoint to write, e.g. permafrost.safetensors")],
    source: Annotated[Literal["reference"], typer.Option("--from", help="where the file comes from: reference")]
    = "reference",
    size: Annotated[Literal["reference", "small", "tiny"], typer.Option(
        "--size", help="network size of the file (the reference code's: reference)")] = "reference",
    force: ForceOption = False,
) -> None:
    """Import a reference .pth (read as tensors only, never unpickled beyond them) as a .safetensors checkpoint."""
    from miso_mapper.model.commands import import_command

    written = import_command(source, path, task, out, size=size, force=force)
    console.print(f"[green]✓ checkpoint import[/] {written} ({task}, {size}, from {path.name})")


@checkpoint_app.command("export")
@user_errors
def checkpoint_export(
    checkpoint: Annotated[Path, typer.Argument(help="our .safetensors checkpoint")],
    out: Annotated[Path, typer.Option("--out", help="the .pth to write, for the reference code")],
    target: Annotated[Literal["reference"], typer.Option("--to", help="who reads the file: reference")]
    = "reference",
    force: ForceOption = False,
) -> None:
    """Write a checkpoint as a .pth state dict that the reference code's model loads strictly."""
    from miso_mapper.model.commands import export_command

    written, left_out = export_command(target, checkpoint, out, force=force)
    console.print(f"[green]✓ checkpoint export[/] {written}")
    for item in left_out:
        console.print(f"[yellow]note:[/] a state dict cannot carry the card's {item}", highlight=False)


@checkpoint_app.command("show")
@user_errors
def checkpoint_show(checkpoint: Annotated[Path, typer.Argument(help="our .safetensors checkpoint")]) -> None:
    """Print a checkpoint's card: task, size, parameters, source, hashes, decision threshold, init."""
    from miso_mapper.model.commands import describe

    for label, value in describe(checkpoint):  # plain lines: hashes and paths are never cut to the terminal
        console.print(f"[bold]{label:<22}[/] {value}", soft_wrap=True, highlight=False, markup=True)


def _progress() -> Any:
    from miso_mapper.progressbar import progress_bar

    return progress_bar(err_console)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:  # click exits with 2 for usage errors, which is what we document
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
