"""The ``miso-mapper run``, ``status`` and ``unlock`` commands (registered in :mod:`miso_mapper.cli`), and how a
run is shown: :class:`RichRunProgress` draws the progress bar (chunks, km², km²/h, failures, elapsed time and
ETA) and the summary table from the engine's callbacks.

The commands raise :class:`~miso_mapper.errors.MisoError` for user errors (exit code 1; invalid workflow files
raise :class:`~miso_mapper.errors.ConfigError`, exit code 2); ``run`` also raises one, after printing its
summary, when any chunk failed, so a batch job's exit status says whether the map is complete, and
:class:`~miso_mapper.signals.Interrupted` (exit 143 / 130) when SIGTERM / SIGINT stopped it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from miso_mapper.config import Workflow, load_workflow
from miso_mapper.console import command_log, make_console
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.progress import ChunkReport, RunProgress, RunStart, RunSummary
from miso_mapper.progressbar import EtaColumn, progress_bar
from miso_mapper.runlock import RunLock, read_holder, unlock
from miso_mapper.writer import os_errors_as_one_line

if TYPE_CHECKING:
    from miso_mapper.pipeline.audit import Finding

LOGGER = logging.getLogger(__name__)
console = make_console()
err_console = make_console(stderr=True)


def run_command(config: Path, resume: bool = False, only: list[str] | None = None, max_chunks: int | None = None,
                overwrite: bool = False, verify: bool = False) -> None:
    """Map a workflow's region into its Zarr store (see :mod:`miso_mapper.pipeline.run`)."""
    from miso_mapper.checks import require_compute
    from miso_mapper.pipeline.run import run_workflow

    workflow = load_workflow(config)
    require_compute(workflow)  # before the run folder's log: a refused run leaves nothing and prints one line
    with command_log(RunLayout.of(workflow).logs, "run", console), RichRunProgress(err_console) as progress:
        summary = run_workflow(workflow, resume=resume, only=only or None, max_chunks=max_chunks,
                               overwrite=overwrite, progress=progress, verify=verify)
    if summary.failed:
        raise MisoError(f"{len(summary.failed)} chunk(s) failed after {workflow.cluster.max_attempts} attempt(s): "
                        f"{', '.join(summary.failed)}; fix the cause and rerun with --resume")
    console.print(f"[green]✓ run[/] {len(summary.done)} chunk(s) mapped, {summary.skipped} already done; "
                  f"store {summary.store}")


def status_command(config: Path, verify: bool = False) -> None:
    """Print the run manifest of a workflow: chunks per status, area, failures with their last error, the run
    lock's holder. First every done chunk is checked against the store (``verify``: re-read to its checksum,
    see :mod:`miso_mapper.pipeline.audit`); one that fails goes back to pending, with a line saying why.
    Raises :class:`MisoError` when there is no manifest, or when the store is missing."""
    workflow = load_workflow(config)
    layout = RunLayout.of(workflow)
    path = layout.manifest
    if not path.exists():
        raise MisoError(f"no run manifest at {path}: the workflow has not been run (miso-mapper run {config})")
    with os_errors_as_one_line(layout.directory), Manifest(path) as manifest:
        for line in _check_done_chunks(workflow, manifest, config, verify):
            console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True)
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
        console.print(f"store: {layout.store}")
        holder = read_holder(layout.lock)
        if holder is not None:
            reason = holder.stale_reason(workflow.output.lock_stale_after)
            state = f"stale ({reason}; clear it with `miso-mapper unlock {config}`)" if reason else "held"
            console.print(f"lock: {state} by {holder.describe()}", highlight=False, soft_wrap=True)


def _check_done_chunks(workflow: Workflow, manifest: Manifest, config: Path, verify: bool) -> list[str]:
    """Check the done chunks against the store and send those that fail back to pending under the run lock;
    one line per chunk. A live or stale lock leaves them as they are (the lines say so)."""
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.pipeline.audit import audit_done, return_to_pending
    from miso_mapper.pipeline.store import MapStore

    layout = RunLayout.of(workflow)
    if not layout.store.exists():
        raise MisoError(f"the store {layout.store} is missing, yet the manifest {layout.manifest} records "
                        f"{manifest.counts()['done']} chunk(s) done: map the region again with "
                        f"`miso-mapper run {config}`")
    findings = audit_done(manifest, MapStore(layout.store, AlaskaGrid(workflow.grid)), verify=verify)
    if not findings:
        return []
    lock = RunLock(layout, "status", workflow.output.lock_stale_after)
    try:
        lock.acquire()
    except MisoError as exc:
        return [_left_as_is(f, str(exc)) for f in findings]
    try:
        return_to_pending(manifest, findings)
    finally:
        lock.release()
    return [f.line() for f in findings]


def _left_as_is(finding: Finding, why: str) -> str:
    return f"chunk {finding.chunk_id} fails the check ({finding.reason}); left as is: {why}"


def unlock_command(config: Path) -> None:
    """Remove the stale run lock of a workflow's run folder (see :mod:`miso_mapper.runlock`); refuses a live one."""
    workflow = load_workflow(config)
    layout = RunLayout.of(workflow)
    holder = unlock(layout, workflow.output.lock_stale_after)
    if holder is None:
        console.print(f"no lock on {layout.directory}")
        return
    reason = holder.stale_reason(workflow.output.lock_stale_after)
    console.print(f"[green]✓ unlock[/] removed the stale lock of {holder.describe()} ({reason})", highlight=False,
                  soft_wrap=True)


class RichRunProgress(RunProgress):
    """A run on a rich console: a live progress bar while chunks come back (off a terminal: a line every 30 s
    or 10 % with the ETA, see :mod:`miso_mapper.progressbar`), then the summary table.

    Use it as a context manager so the live bar is stopped even when the run raises.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._t0 = 0.0
        self._total = self._counted = self._failed = 0
        self._km2 = 0.0

    def __enter__(self) -> RichRunProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop()

    def notice(self, line: str) -> None:
        """Print a remark of the engine in yellow."""
        self.console.print(f"[yellow]{line}[/]", highlight=False, soft_wrap=True)

    def started(self, start: RunStart) -> None:
        """Start the bar (and show the Dask dashboard's address)."""
        self._bar = progress_bar(
            self.console, TextColumn("[bold]{task.description}[/]"), BarColumn(),
            TextColumn("{task.completed}/{task.total} chunks"),
            TextColumn("{task.fields[km2]:.0f}/{task.fields[total_km2]:.0f} km²"),
            TextColumn("{task.fields[rate]:.0f} km²/h"), TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(), EtaColumn(), describe=_run_line, unit="chunks",
        )
        self._bar.start()
        if start.dashboard:
            self.console.print(f"dashboard: {start.dashboard}")
        self._task = self._bar.add_task(f"run {start.workflow}", total=start.chunks, km2=0.0,
                                        total_km2=start.km2, rate=0.0, failed=0)
        self._t0 = time.perf_counter()
        self._total = start.chunks

    def chunk_finished(self, report: ChunkReport) -> None:
        """Advance the bar for a chunk done or failed for good (a retry does not count)."""
        LOGGER.debug("chunk %s %s (attempt %d, %.1f s)%s", report.chunk_id, report.status, report.attempt,
                     report.seconds, f": {report.error}" if report.error else "",
                     extra={"fields": {"chunk_id": report.chunk_id, "status": report.status,
                                       "attempt": report.attempt, "seconds": round(report.seconds, 2)}})
        if self._bar is None or self._task is None or report.status == "retrying":
            return
        self._counted += 1
        if report.status == "done":
            self._km2 += report.km2
        else:
            self._failed += 1
        elapsed = time.perf_counter() - self._t0
        self._bar.update(self._task, advance=1, km2=self._km2, failed=self._failed,
                         rate=self._km2 / (elapsed / 3600) if elapsed > 0 else 0.0)

    def finished(self, summary: RunSummary) -> None:
        """Stop the bar; print the summary table and every failure with its error."""
        self._stop()
        if summary.todo == 0:
            self.console.print(f"[green]✓ run[/] nothing to do: {summary.skipped} of {summary.selected} chunk(s) "
                               "already done")
        print_summary(summary, self.console)

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _run_line(task: Task) -> str:
    """What a plain progress line of a run adds: km² mapped, throughput, failures."""
    f = task.fields
    return f"{f['km2']:.0f}/{f['total_km2']:.0f} km², {f['rate']:.0f} km²/h, {f['failed']} failed"


def print_summary(summary: RunSummary, console: Console) -> None:
    """The final table: done, skipped, failed with their errors, time, km²/h, and what is left."""
    table = Table(title="run summary", show_header=False)
    table.add_row("store", str(summary.store))
    table.add_row("done this run", f"{len(summary.done)} chunk(s), {summary.km2:.0f} km²")
    if summary.recovered:
        table.add_row("recovered from write log", ", ".join(summary.recovered))
    table.add_row("already done", str(summary.skipped))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("time", f"{summary.seconds:.1f} s")
    table.add_row("throughput", f"{summary.km2_per_hour:.0f} km²/h")
    table.add_row("manifest", ", ".join(f"{k} {v}" for k, v in summary.manifest_counts.items()))
    console.print(table)
    for cid, err in summary.failed.items():
        console.print(f"[red]✗ {cid}[/] {err}", highlight=False, soft_wrap=True)
