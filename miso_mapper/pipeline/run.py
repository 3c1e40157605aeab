"""``run``: plan, search, create/check the store, then map chunk by chunk on Dask in a bounded window.

Order of events (everything that can be wrong with the input is found before any work):

1. the predictor's files exist and are hashed (:func:`~miso_mapper.pipeline.predictors.resolve_spec`);
2. the plan: the grid's chunks that intersect the region (an empty region stops here), narrowed by
   ``--only`` ids;
3. an existing store must have been made by the same map configuration (else stop: "made by another
   config"), and is continued only with ``--resume`` or replaced only with ``--overwrite``;
4. the STAC search of every chunk (threads), each recorded in ``search/<chunk>.json`` by
   :func:`~miso_mapper.imagery.search.cached_search` and its item ids in the manifest; a STAC API that is
   down stops here, before the store exists;
5. the store is created (metadata only) and the manifest filled with one pending row per planned chunk.

Then the client submits, for at most ``cluster.window`` chunks at a time, a read task and a predict-and-write
task (:mod:`miso_mapper.pipeline.tasks`; the latter asks for ``GPU=1`` when the cluster has GPUs); as each
finishes it records ``done`` with the checksum (or the error) in the manifest and submits the next chunk.
A failed chunk is resubmitted until it has had ``cluster.max_attempts`` attempts in this run, then reported
as failed. Chunks already ``done`` are skipped, so a run killed anywhere resumes with ``--resume``; chunks
left ``running`` by a killed client are checked against the write log so a complete write is not redone.

The engine prints nothing: it reports the start, every chunk that comes back and the summary to a
:class:`~miso_mapper.pipeline.progress.RunProgress` (the command line's draws a progress bar and a table).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid, Chunk
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.clusters import cluster_has_gpus, open_client
from miso_mapper.pipeline.manifest import Manifest, one_line_error
from miso_mapper.pipeline.predictors import PredictorSpec, resolve_spec
from miso_mapper.pipeline.progress import ChunkReport, RunProgress, RunStart, RunSummary
from miso_mapper.pipeline.store import MapStore, create_store, delete_store, map_config_hash
from miso_mapper.pipeline.tasks import ChunkJob, logged_write, predict_write_task, read_task
from miso_mapper.plan import make_plan


def search_dir(workflow: Workflow) -> Path:
    """Folder of the per-chunk STAC search records."""
    return RunLayout.of(workflow).search


def write_log_dir(workflow: Workflow) -> Path:
    """Folder of the write log (one file per completed chunk write)."""
    return RunLayout.of(workflow).write_log


@dataclass
class Prepared:
    """A run ready to execute: the chunks to do with their inputs, the store and the manifest."""

    workflow: Workflow
    grid: AlaskaGrid
    chunks: list[Chunk]
    selected: list[Chunk]
    spec: PredictorSpec
    store: MapStore
    manifest: Manifest
    items: dict[str, list[dict[str, Any]]]
    covariates: dict[str, dict[str, list[str]]]


def _select(chunks: list[Chunk], only: list[str] | None, grid: AlaskaGrid) -> list[Chunk]:
    if not only:
        return chunks
    by_id = {ch.id: ch for ch in chunks}
    unknown = [c for c in only if c not in by_id]
    if unknown:
        for c in unknown:
            grid.chunk_by_id(c)  # raises for a malformed id
        raise MisoError(f"--only: chunk(s) {', '.join(unknown)} are not in the planned region")
    return [by_id[c] for c in dict.fromkeys(only)]


def _search_all(workflow: Workflow, chunks: list[Chunk], records: Path,
                threads: int = 8) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, list[str]]], dict]:
    """Items and covariate sources per chunk (recorded searches); raises :class:`MisoError` on API errors."""
    from miso_mapper.imagery.covariates import find_covariate_sources
    from miso_mapper.imagery.search import cached_search

    cov_cfg = workflow.covariates
    folder_sources = (find_covariate_sources(cov_cfg, chunks[0].halo_geobox) if cov_cfg.source == "folder"
                      else None)

    def one(chunk: Chunk) -> tuple[str, list[dict[str, Any]], dict[str, list[str]], float]:
        t0 = time.perf_counter()
        items = cached_search(chunk.halo_geobox, workflow.imagery, records / f"{chunk.id}.json")
        if folder_sources is not None:
            cov = folder_sources
        else:  # recorded like the items, so a resume needs no STAC API
            record = records / f"{chunk.id}.covariates.json"
            if record.exists():
                cov = json.loads(record.read_text())
            else:
                cov = find_covariate_sources(cov_cfg, chunk.halo_geobox, workflow.imagery.stac_url)
                tmp = record.with_suffix(".tmp")
                tmp.write_text(json.dumps(cov))
                os.replace(tmp, record)
        return chunk.id, items, cov, time.perf_counter() - t0

    items: dict[str, list[dict[str, Any]]] = {}
    covs: dict[str, dict[str, list[str]]] = {}
    times: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=min(threads, len(chunks))) as pool:
        for cid, its, cov, secs in pool.map(one, chunks):
            items[cid], covs[cid], times[cid] = its, cov, secs
    return items, covs, times


def prepare(workflow: Workflow, resume: bool = False, only: list[str] | None = None,
            overwrite: bool = False) -> Prepared:
    """Steps 1-5 of the module doc. Raises :class:`MisoError` before any work for bad input."""
    if resume and overwrite:
        raise MisoError("give --resume or --overwrite, not both")
    out = RunLayout.of(workflow)
    spec = resolve_spec(workflow.model, workflow.grid, torch_threads=workflow.cluster.threads_per_worker)
    plan = make_plan(workflow)
    grid = plan.grid
    if not plan.chunks:
        raise MisoError(f"the region of workflow {workflow.name!r} contains no chunk of the grid "
                        "(check region and grid; is it outside the grid or empty?)")
    selected = _select(plan.chunks, only, grid)
    key = map_config_hash(workflow, spec.hashes)
    exists = out.store.exists()
    if exists and not overwrite:
        store = MapStore(out.store, grid)
        theirs = store.attrs.get("map_config_hash")
        if theirs != key:
            raise MisoError(
                f"{out.store} was made by another config (map config hash {str(theirs)[:12]}…, this workflow "
                f"{key[:12]}…): point output.directory elsewhere or use --overwrite to replace it"
            )
        if not resume:
            raise MisoError(f"{out.store} already exists: use --resume to continue it or --overwrite to replace it")
    records = search_dir(workflow)
    if overwrite and exists:
        fresh = records.with_name(records.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        items, covs, times = _search_all(workflow, plan.chunks, fresh)  # the API works before anything is deleted
        delete_store(out.store)
        out.manifest.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(out.manifest) + suffix).unlink(missing_ok=True)
        shutil.rmtree(write_log_dir(workflow), ignore_errors=True)
        shutil.rmtree(records, ignore_errors=True)
        fresh.rename(records)
        exists = False
    else:
        if not exists:  # a manifest or write log without its store describes nothing
            out.manifest.unlink(missing_ok=True)
            shutil.rmtree(write_log_dir(workflow), ignore_errors=True)
        items, covs, times = _search_all(workflow, plan.chunks, records)
    if not exists:
        checkpoints = {role: h for role, h in spec.hashes.items()}
        store = create_store(out.store, workflow, plan.chunks, {
            "map_config_hash": key, "model_kind": spec.kind, "model_checkpoints": checkpoints,
            "workflow": workflow.name,
        })
    else:
        store = MapStore(out.store, grid)
    manifest = Manifest(out.manifest)
    if manifest.get_meta("store_uuid") not in (None, store.uuid):
        manifest.close()
        out.manifest.unlink(missing_ok=True)
        manifest = Manifest(out.manifest)
    manifest.set_meta(map_config_hash=key, config_hash=workflow.config_hash(), store_uuid=store.uuid,
                      store=str(out.store), workflow=workflow.name)
    if manifest.get_meta("created") is None:
        manifest.set_meta(created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    manifest.add_chunks(plan.chunks)
    for ch in plan.chunks:
        manifest.record_inputs(ch.id, [i["id"] for i in items[ch.id]], covs[ch.id], times[ch.id])
    return Prepared(workflow, grid, plan.chunks, selected, spec, store, manifest, items, covs)


def _job(p: Prepared, chunk: Chunk) -> ChunkJob:
    wf = p.workflow
    return ChunkJob(chunk.id, wf.grid, wf.imagery, p.items[chunk.id], p.covariates[chunk.id], str(p.store.path),
                    p.store.uuid, str(write_log_dir(wf)), p.spec)


def recover_interrupted(p: Prepared, chunks: list[Chunk]) -> list[str]:
    """Chunks not ``done`` whose complete write is in the write log (client killed after the write): mark done."""
    p.manifest.reset_interrupted()
    rows = {r.id: r for r in p.manifest.rows()}
    recovered = []
    for ch in chunks:
        if rows[ch.id].status == "done":
            continue
        entry = logged_write(_job(p, ch), p.store)
        if entry is not None:
            p.manifest.mark_done(ch.id, entry["checksum"], entry.get("worker"))
            recovered.append(ch.id)
    return recovered


def execute(p: Prepared, progress: RunProgress | None = None, max_chunks: int | None = None,
            client: Any = None) -> RunSummary:
    """Map the selected chunks that are not done (at most ``max_chunks``) on the workflow's cluster.

    ``client``: an existing :class:`distributed.Client` to use instead of starting the configured cluster.
    ``progress`` hears of the start and of every chunk attempt that comes back (not of the end: see
    :func:`run_workflow`); nothing is reported when there is nothing to do.
    """
    progress = progress or RunProgress()
    wf = p.workflow
    summary = RunSummary(RunLayout.of(wf).store, len(p.chunks), len(p.selected))
    summary.recovered = recover_interrupted(p, p.selected)
    status = {r.id: r.status for r in p.manifest.rows()}
    todo = [ch for ch in p.grid.iter_chunks(p.selected) if status[ch.id] != "done"]
    summary.skipped = len(p.selected) - len(todo)
    if max_chunks is not None:
        todo = todo[:max_chunks]
    summary.todo = len(todo)
    if not todo:
        return summary
    if client is None:
        with open_client(wf.cluster, RunLayout.of(wf).logs) as own:
            return _drive(p, own, todo, summary, progress)
    return _drive(p, client, todo, summary, progress)


def _drive(p: Prepared, client: Any, todo: list[Chunk], summary: RunSummary, progress: RunProgress) -> RunSummary:
    from distributed import as_completed

    wf = p.workflow
    resources = {"GPU": 1} if cluster_has_gpus(wf.cluster) else None
    summary.dashboard = getattr(client, "dashboard_link", None)
    by_id = {ch.id: ch for ch in todo}
    queue = [ch.id for ch in todo]
    attempts: dict[str, int] = {}
    submitted: dict[str, float] = {}
    futures: dict[Any, str] = {}
    pending = as_completed()
    area = {ch.id: ch.area_km2 for ch in todo}

    def submit(cid: str) -> None:
        attempts[cid] = attempts.get(cid, 0) + 1
        job = _job(p, by_id[cid])
        p.manifest.mark_running(cid)
        tag = f"{cid}-{attempts[cid]}-{time.time_ns()}"
        read = client.submit(read_task, job, key=f"read-{tag}", pure=False)
        fut = client.submit(predict_write_task, read, job, key=f"map-{tag}", pure=False, resources=resources)
        futures[fut] = cid
        submitted[cid] = time.perf_counter()
        pending.add(fut)

    started = time.perf_counter()
    progress.started(RunStart(wf.name, len(todo), sum(area.values()), summary.dashboard))
    while queue and len(futures) < wf.cluster.window:
        submit(queue.pop(0))
    for fut in pending:
        cid = futures.pop(fut)
        report = _record(p, fut, cid, attempts[cid], summary, area[cid], time.perf_counter() - submitted[cid])
        if report.status == "retrying":
            queue.insert(0, cid)
        progress.chunk_finished(report)
        fut.release()
        while queue and len(futures) < wf.cluster.window:
            submit(queue.pop(0))
    summary.seconds = time.perf_counter() - started
    return summary


def _record(p: Prepared, fut: Any, cid: str, attempt: int, summary: RunSummary, km2: float,
            seconds: float) -> ChunkReport:
    """Record one chunk attempt's outcome in the manifest and the summary; what to report about it."""
    try:
        result = fut.result()
    except Exception as exc:  # noqa: BLE001 - any task error is the chunk's failure
        final = attempt >= p.workflow.cluster.max_attempts
        p.manifest.mark_failed(cid, exc, final=final)
        error = one_line_error(exc)
        if final:
            summary.failed[cid] = error
        return ChunkReport(cid, "failed" if final else "retrying", attempt, seconds, km2, error=error)
    p.manifest.mark_done(cid, result["checksum"], result.get("worker"), result.get("read_s"),
                         result.get("predict_s"), result.get("write_s"),
                         sum(result.get(k) or 0.0 for k in ("read_s", "predict_s", "write_s")))
    summary.done.append(cid)
    summary.results.append(result)
    summary.km2 += km2
    return ChunkReport(cid, "done", attempt, seconds, km2, result=result)


def run_workflow(workflow: Workflow, resume: bool = False, only: list[str] | None = None,
                 max_chunks: int | None = None, overwrite: bool = False, progress: RunProgress | None = None,
                 client: Any = None) -> RunSummary:
    """Plan, check and map a workflow (see the module doc); returns the summary, also given to
    ``progress.finished`` with the manifest's final counts."""
    if max_chunks is not None and max_chunks < 1:
        raise MisoError("--max-chunks must be at least 1")
    progress = progress or RunProgress()
    prepared = prepare(workflow, resume=resume, only=only, overwrite=overwrite)
    try:
        summary = execute(prepared, progress, max_chunks=max_chunks, client=client)
        summary.manifest_counts = prepared.manifest.counts()
    finally:
        prepared.manifest.close()
    progress.finished(summary)
    return summary
