"""The Python API: what the ``miso-mapper`` commands do, as functions (``import miso_mapper as mm``).

Each function takes a :class:`~miso_mapper.config.Workflow` or the path of a workflow YAML file, calls the
same code as its command and returns what that computed instead of printing it. Errors a user can cause are
:class:`~miso_mapper.errors.MisoError` (:class:`~miso_mapper.errors.ConfigError` for a workflow file), with
one line naming the problem. Heavy libraries (torch, Dask) load only inside the functions that need them, so
``import miso_mapper`` stays light. The package exposes them lazily: ``miso_mapper.plan`` is :func:`plan`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miso_mapper.config import Workflow
from miso_mapper.config import load_workflow as _load_workflow

if TYPE_CHECKING:
    from collections.abc import Callable

    from miso_mapper.evaluate.run import Evaluation
    from miso_mapper.export.run import ExportResult
    from miso_mapper.pipeline.progress import RunProgress, RunSummary
    from miso_mapper.plan import Plan

WorkflowLike = Workflow | str | os.PathLike[str]

__all__ = ["evaluate", "export", "load_workflow", "plan", "report", "run", "train"]


def load_workflow(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Workflow:
    """Read and validate a workflow YAML file (``miso-mapper validate`` without the file checks).

    Relative paths in it are resolved against the file's folder; ``overrides`` is a nested dict merged over the
    file before validation, e.g. ``{"output": {"directory": "/scratch/run1"}}``. Raises
    :class:`~miso_mapper.errors.ConfigError` naming every bad field.
    """
    return _load_workflow(Path(path), overrides)


def _workflow(workflow: WorkflowLike) -> Workflow:
    return workflow if isinstance(workflow, Workflow) else load_workflow(workflow)


def plan(workflow: WorkflowLike) -> Plan:
    """``miso-mapper plan``: the tiles and chunks (EPSG:3338 grid) of the region and the estimated input/output
    bytes, FLOP and GPU-hours, offline (:class:`~miso_mapper.plan.Plan`; its ``warnings`` list the run's
    missing inputs)."""
    from miso_mapper.plan import make_plan

    return make_plan(_workflow(workflow))


def run(workflow: WorkflowLike, *, resume: bool = False, only: list[str] | None = None,
        max_chunks: int | None = None, overwrite: bool = False, verify: bool = False,
        progress: RunProgress | None = None) -> RunSummary:
    """``miso-mapper run``: map the region into ``<output.directory>/maps.zarr`` on the workflow's Dask cluster.

    Same options as the command; ``progress`` receives the engine's events
    (:class:`~miso_mapper.pipeline.progress.RunProgress`). A MISO workflow that sets no checkpoint maps with
    those :func:`train` wrote. Returns the :class:`~miso_mapper.pipeline.progress.RunSummary`; unlike the
    command, chunks that failed on every attempt do not raise: see ``summary.failed``.
    """
    from miso_mapper.pipeline.run import run_workflow

    return run_workflow(_workflow(workflow), resume=resume, only=only, max_chunks=max_chunks,
                        overwrite=overwrite, progress=progress, verify=verify)


def export(workflow: WorkflowLike, *, tiles: list[str] | None = None, overwrite: bool = False,
           progress: Callable[[str, int, int], None] | None = None) -> ExportResult:
    """``miso-mapper export``: per-tile COGs, VRT mosaics, overviews and a STAC collection under the products
    folder, on the workflow's Dask cluster, holding the run folder's lock. ``progress(stage, done, total)`` is
    called as work proceeds. Returns the :class:`~miso_mapper.export.run.ExportResult` (files, STAC path)."""
    from miso_mapper.export.command import export_locked

    return export_locked(_workflow(workflow), tiles, overwrite, progress)


def report(workflow: WorkflowLike, out: str | os.PathLike[str] | None = None) -> Path:
    """``miso-mapper report``: write the self-contained HTML run report (default ``<output.directory>/
    report.html``, quicklook PNGs beside it); for a demo world with a store, with the map's accuracy against
    its truth. Returns the page's path."""
    from miso_mapper.layout import RunLayout
    from miso_mapper.report import write_run_report
    from miso_mapper.trained import with_trained_checkpoints

    wf, _ = with_trained_checkpoints(_workflow(workflow), required=False)  # the cards of what `run` mapped with
    path = Path(out) if out is not None else RunLayout.of(wf).report
    return write_run_report(wf, path, accuracy=demo_accuracy(wf))


def demo_accuracy(workflow: Workflow) -> dict[str, Any] | None:
    """The map's accuracy against the demo world's truth (:func:`~miso_mapper.report.map_accuracy`), or None
    when the workflow has no truth rasters or no store yet."""
    from miso_mapper.layout import RunLayout
    from miso_mapper.report.accuracy import truth_paths

    if truth_paths(workflow) is None or not RunLayout.of(workflow).store.exists():
        return None
    from miso_mapper.report import map_accuracy

    return map_accuracy(workflow)


def train(workflow: WorkflowLike, tasks: list[str] | None = None, *, fresh: bool = False) -> dict[str, Path]:
    """``miso-mapper train``: train MISO on the workflow's labelled points (resuming a killed training unless
    ``fresh``). ``tasks``: ``permafrost`` and/or ``taxonomy`` (default ``train.tasks``). Returns task ->
    ``<train.directory>/<task>.safetensors``, which :func:`run` then uses when the workflow names none."""
    wf = _workflow(workflow)
    import miso_mapper.train  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
    from miso_mapper.train.run import run_training

    return run_training(wf, tasks, fresh=fresh)


def evaluate(workflow: WorkflowLike, *, quick: bool = False, fresh: bool = False) -> Evaluation:
    """``miso-mapper evaluate``: cross-validate MISO against RF-11 and a majority baseline on random and
    spatial folds, writing tables, predictions and report.html under ``evaluate.directory``. ``quick``: only
    ``evaluate.quick_folds`` folds of ``evaluate.quick_epochs`` epochs. Returns the
    :class:`~miso_mapper.evaluate.run.Evaluation`."""
    wf = _workflow(workflow)
    import miso_mapper.train  # noqa: F401 - sets OMP_WAIT_POLICY before torch loads
    from miso_mapper.evaluate.run import run_evaluation

    return run_evaluation(wf, quick=quick, fresh=fresh)
