"""The ``miso-mapper run`` and ``miso-mapper status`` commands (registered in :mod:`miso_mapper.cli`).

Both raise :class:`~miso_mapper.errors.MisoError` for user errors (exit code 1; invalid workflow files
raise :class:`~miso_mapper.errors.ConfigError`, exit code 2); ``run`` also raises one, after printing its
summary, when any chunk failed, so a batch job's exit status says whether the map is complete.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from miso_mapper.config import load_workflow
from miso_mapper.errors import MisoError

console = Console()
err_console = Console(stderr=True)


def run_command(config: Path, resume: bool = False, only: list[str] | None = None, max_chunks: int | None = None,
                overwrite: bool = False) -> None:
    """Map a workflow's region into its Zarr store (see :mod:`miso_mapper.pipeline.run`)."""
    from miso_mapper.pipeline.run import run_workflow

    workflow = load_workflow(config)
    summary = run_workflow(workflow, resume=resume, only=only or None, max_chunks=max_chunks,
                           overwrite=overwrite, console=err_console)
    if summary.failed:
        raise MisoError(f"{len(summary.failed)} chunk(s) failed after {workflow.cluster.max_attempts} attempt(s): "
                        f"{', '.join(summary.failed)}; fix the cause and rerun with --resume")
    console.print(f"[green]✓ run[/] {len(summary.done)} chunk(s) mapped, {summary.skipped} already done; "
                  f"store {summary.store}")


def status_command(config: Path) -> None:
    """Print the run manifest of a workflow: chunks per status, area, failures with their last error."""
    from miso_mapper.pipeline.manifest import Manifest

    workflow = load_workflow(config)
    path = workflow.output.manifest
    if not path.exists():
        raise MisoError(f"no run manifest at {path}: the workflow has not been run (miso-mapper run {config})")
    with Manifest(path) as manifest:
        rows = manifest.rows()
        counts = manifest.counts()
        table = Table(title=f"{workflow.name}: {path}")
        for col in ("status", "chunks", "km²"):
            table.add_column(col, justify="right" if col != "status" else "left")
        for status, n in counts.items():
            km2 = sum(r.area_km2 for r in rows if r.status == status)
            table.add_row(status, str(n), f"{km2:.0f}")
        table.add_row("total", str(len(rows)), f"{sum(r.area_km2 for r in rows):.0f}")
        console.print(table)
        done = [r for r in rows if r.status == "done" and r.total_s]
        if done:
            secs = sum(r.total_s or 0.0 for r in done)
            console.print(f"mean worker time per done chunk: {secs / len(done):.1f} s")
        for r in rows:
            if r.status == "failed" or (r.last_error and r.status != "done"):
                console.print(f"[red]{r.status} {r.id}[/] ({r.attempts} attempts): {r.last_error}",
                              highlight=False, soft_wrap=True)
        console.print(f"store: {workflow.output.store}")
