"""The ``miso-mapper export`` command (registered in :mod:`miso_mapper.cli`).

Exports on the workflow's Dask cluster (``cluster:``), shows a progress bar on stderr and prints a summary;
problems are :class:`~miso_mapper.errors.MisoError` (exit code 1), invalid workflows
:class:`~miso_mapper.errors.ConfigError` (exit code 2).

The export holds the run folder's lock (:func:`~miso_mapper.writer.exclusive_writer`), so it never reads a
store a run is writing, and no run or second export starts under it. SIGTERM or SIGINT raise
:class:`~miso_mapper.signals.Interrupted` (exit 143 / 130) where the export is: products are published by
renaming finished files, so none is left half written; the cluster and the lock are let go on the way out, and
the hidden temporaries of workers killed in the middle of a product are removed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from miso_mapper.config import Workflow, load_workflow
from miso_mapper.console import command_log, make_console
from miso_mapper.export.atomic import remove_temporaries
from miso_mapper.layout import RunLayout
from miso_mapper.progressbar import progress_bar
from miso_mapper.writer import exclusive_writer

if TYPE_CHECKING:
    from miso_mapper.export.run import ExportResult

console = make_console()
err_console = make_console(stderr=True)


def export_command(config: Path, tiles: list[str] | None = None, overwrite: bool = False) -> None:
    """Export a workflow's map store into its products folder (see :mod:`miso_mapper.export`)."""
    from miso_mapper.export.source import open_group

    workflow = load_workflow(config)
    layout = RunLayout.of(workflow)
    wanted = [t for arg in tiles or [] for t in arg.split(",") if t] or None
    open_group(layout.store)  # a missing store fails before a cluster is started (and before a lock is written)
    progress = progress_bar(err_console)
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(f"export {stage}", total=total)
        progress.update(tasks[stage], completed=done, total=total)

    with command_log(layout.logs, "export", console), progress:
        result = export_locked(workflow, wanted, overwrite, report)
    per_tile = sorted(result.tile_seconds.values())
    median = per_tile[len(per_tile) // 2] if per_tile else 0.0
    size_mb = sum(p.stat().st_size for p in result.files if p.exists()) / 1e6
    note = f", {len(result.empty_tiles)} without data skipped" if result.empty_tiles else ""
    console.print(f"[green]✓ export[/] {len(result.tiles)} tile(s){note}, {len(result.files)} files, {size_mb:.1f} MB "
                  f"in {result.seconds:.1f} s (median {median:.1f} s per tile); products {layout.products}")
    console.print(f"STAC: {result.stac}")


def export_locked(workflow: Workflow, tiles: list[str] | None = None, overwrite: bool = False,
                  progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """:func:`~miso_mapper.export.run.export_workflow` on the workflow's Dask cluster, holding the run folder's
    lock; on any way out, the hidden temporaries that killed workers left in the products folder are removed."""
    from miso_mapper.export.run import export_workflow
    from miso_mapper.pipeline.clusters import open_client

    layout = RunLayout.of(workflow)
    command = "export" + (" --overwrite" if overwrite else "")
    hint = "no product was left half written; run `miso-mapper export CONFIG` again"
    with exclusive_writer(workflow, command, hint=hint):
        started = time.time()
        try:
            with open_client(workflow.cluster, layout.logs) as client:
                return export_workflow(workflow, client=client, tiles=tiles, overwrite=overwrite, progress=progress)
        except BaseException:
            if layout.products.exists():  # the workers are gone: sweep what a killed one left half written
                remove_temporaries(layout.products, started)
            raise
