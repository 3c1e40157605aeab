"""``run``: plan, search, create/check the store, then map chunk by chunk on Dask in a bounded window.

Order of events (everything that can be wrong with the input is found before any work):

1. the predictor's files exist and are hashed (:func:`~miso_mapper.pipeline.predictors.resolve_spec`);
2. the plan: the grid's chunks that intersect the region (an empty region stops here), narrowed by
   ``--only`` ids (:func:`check_inputs`; nothing is written so far);
   then the run folder's lock is taken (:mod:`miso_mapper.runlock`): one writer per store, so no second run
   and no ``--overwrite`` touches a store while another command works in it;
3. an existing store must have been made by the same map configuration (else stop: "made by another
   config"), and is continued only with ``--resume`` or replaced only with ``--overwrite``;
4. the STAC search of every chunk (threads), each recorded in ``search/<chunk>.json`` by
   :func:`~miso_mapper.imagery.search.cached_search` and its item ids in the manifest; a STAC API that is
   down stops here, before the store exists;
5. the store is created (metadata only) and the manifest filled with one pending row per planned chunk; on
   ``--resume``, every ``done`` chunk is checked against the store (its Zarr chunk files exist; with
   ``--verify`` its bytes re-read to the recorded checksum, :mod:`~miso_mapper.pipeline.audit`) and one that
   fails goes back to pending with a notice.

Before all of these, the reference network on a cluster without GPUs is refused
(:func:`~miso_mapper.checks.require_compute`, exit 2). Once connected, a GPU cluster whose workers carry no ``GPU``
resource stops the run (:func:`~miso_mapper.pipeline.clusters.check_gpu_workers`) before any chunk is submitted.

Then the client submits, for at most ``cluster.window`` chunks at a time, a read task and a predict-and-write
task (:mod:`miso_mapper.pipeline.tasks`; the latter asks for ``GPU=1`` when the cluster has GPUs); as each
finishes it records ``done`` with the checksum (or the error) in the manifest and submits the next chunk.
A failed chunk is resubmitted until it has had ``cluster.max_attempts`` attempts in this run, then reported
as failed. Chunks already ``done`` are skipped, so a run killed anywhere resumes with ``--resume``; chunks
left ``running`` by a killed client are checked against the write log so a complete write is not redone.

SIGTERM or SIGINT while chunks are mapped stops the submissions; chunks in flight get
``cluster.shutdown_grace`` seconds to come back and are recorded, the rest go back to pending, the cluster is
closed, the lock released, and :class:`~miso_mapper.signals.Interrupted` says what was left (exit 143 or
130). On every way out, including a manifest that can no longer be written (disk full), the rows this client
marked ``running`` go back to pending (best effort) and the lock is released.

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

from miso_mapper.checks import require_compute
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError, UsageError
from miso_mapper.grid import AlaskaGrid, Chunk
from miso_mapper.imagery.profiles import get_profile
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.audit import audit_done, return_to_pending
from miso_mapper.pipeline.clusters import check_gpu_workers, open_client
from miso_mapper.pipeline.manifest import Manifest, one_line_error
from miso_mapper.pipeline.predictors import PredictorSpec, resolve_spec
from miso_mapper.pipeline.progress import ChunkReport, RunProgress, RunStart, RunSummary
from miso_mapper.pipeline.store import MapStore, create_store, delete_store, map_config_hash
from miso_mapper.pipeline.tasks import ChunkJob, logged_write, predict_write_task, read_task
from miso_mapper.plan import make_plan
from miso_mapper.runlock import RunLock
from miso_mapper.signals import StopSignals
from miso_mapper.trained import with_trained_checkpoints
from miso_mapper.writer import exclusive_writer


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
    for c in unknown:
        try:
            grid.chunk_by_id(c)  # a malformed id or one off the grid says so
        except MisoError as exc:
            raise UsageError(f"--only: {exc}") from None
    if unknown:
        raise UsageError(f"--only: chunk(s) {', '.join(unknown)} are not in the planned region")
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
                cov = find_covariate_sources(cov_cfg, chunk.halo_geobox, workflow.imagery.stac_url,
                                             workflow.imagery.catalog)
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


@dataclass(frozen=True)
class Inputs:
    """What a run is to map, checked without writing anything: the predictor, the grid, the planned chunks and
    those selected by ``--only``."""

    spec: PredictorSpec
    grid: AlaskaGrid
    chunks: list[Chunk]
    selected: list[Chunk]


def check_inputs(workflow: Workflow, only: list[str] | None = None) -> Inputs:
    """Steps 1-2 of the module doc; :class:`MisoError` for a missing model file, an empty region or an unknown
    ``--only`` chunk."""
    spec = resolve_spec(workflow.model, workflow.grid, torch_threads=workflow.cluster.threads_per_worker)
    get_profile(workflow.imagery.profile).signer()  # a missing signing package stops here, not in every chunk
    plan = make_plan(workflow)
    if not plan.chunks:
        raise MisoError(f"the region of workflow {workflow.name!r} contains no chunk of the grid "
                        "(check region and grid; is it outside the grid or empty?)")
    return Inputs(spec, plan.grid, plan.chunks, _select(plan.chunks, only, plan.grid))


def prepare(workflow: Workflow, resume: bool = False, only: list[str] | None = None,
            overwrite: bool = False, verify: bool = False, progress: RunProgress | None = None,
            inputs: Inputs | None = None) -> Prepared:
    """Steps 1-5 of the module doc (the caller holds the lock; ``inputs``: steps 1-2 done already). Raises
    :class:`MisoError` before any work for bad input; tells ``progress`` of every done chunk sent back to
    pending."""
    if resume and overwrite:
        raise MisoError("give --resume or --overwrite, not both")
    out = RunLayout.of(workflow)
    inputs = inputs or check_inputs(workflow, only)
    spec, grid, chunks, selected = inputs.spec, inputs.grid, inputs.chunks, inputs.selected
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
    records = RunLayout.of(workflow).search
    if overwrite and exists:
        fresh = records.with_name(records.name + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        items, covs, times = _search_all(workflow, chunks, fresh)  # the API works before anything is deleted
        delete_store(out.store)
        out.manifest.unlink(missing_ok=True)
        for suffix in ("-wal", "-shm"):
            Path(str(out.manifest) + suffix).unlink(missing_ok=True)
        shutil.rmtree(out.write_log, ignore_errors=True)
        shutil.rmtree(records, ignore_errors=True)
        fresh.rename(records)
        exists = False
    else:
        if not exists:  # a manifest or write log without its store describes nothing
            out.manifest.unlink(missing_ok=True)
            shutil.rmtree(out.write_log, ignore_errors=True)
        items, covs, times = _search_all(workflow, chunks, records)
    if not exists:
        checkpoints = {role: h for role, h in spec.hashes.items()}
        store = create_store(out.store, workflow, chunks, {
            "map_config_hash": key, "model_kind": spec.kind, "model_checkpoints": checkpoints,
            "workflow": workflow.name,
        }, decision_threshold=spec.decision_threshold, aoa_thresholds=spec.aoa_thresholds)
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
    manifest.add_chunks(chunks)
    for ch in chunks:
        manifest.record_inputs(ch.id, [i["id"] for i in items[ch.id]], covs[ch.id], times[ch.id])
    if exists:
        findings = audit_done(manifest, store, verify=verify)
        return_to_pending(manifest, findings)
        for finding in findings:
            (progress or RunProgress()).notice(finding.line())
    manifest.compact()  # the rows' pages in the database file, so a disk that fills later can still free the WAL
    return Prepared(workflow, grid, chunks, selected, spec, store, manifest, items, covs)


def _job(p: Prepared, chunk: Chunk) -> ChunkJob:
    wf = p.workflow
    return ChunkJob(chunk.id, wf.grid, wf.imagery, p.items[chunk.id], p.covariates[chunk.id], str(p.store.path),
                    p.store.uuid, str(RunLayout.of(wf).write_log), p.spec)


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
            p.manifest.mark_done(ch.id, entry["checksum"], entry.get("worker"), absent_keys=entry.get("absent_keys"))
            recovered.append(ch.id)
    return recovered


def execute(p: Prepared, progress: RunProgress | None = None, max_chunks: int | None = None,
            client: Any = None, stop: StopSignals | None = None, lock: RunLock | None = None) -> RunSummary:
    """Map the selected chunks that are not done (at most ``max_chunks``) on the workflow's cluster.

    ``client``: an existing :class:`distributed.Client` to use instead of starting the configured cluster.
    ``progress`` hears of the start and of every chunk attempt that comes back (not of the end: see
    :func:`run_workflow`); nothing is reported when there is nothing to do. ``stop``: the signals that end the
    mapping gracefully (see the module doc); ``lock``: the run lock, whose loss stops the mapping at once.
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
    driver = _Driver(p, todo, summary, progress, stop or StopSignals(), lock)
    with driver.stop.deferred():  # a signal while the cluster starts is answered once it runs (or failed to)
        if client is None:
            with open_client(wf.cluster, RunLayout.of(wf).logs) as own:
                return driver.run(own)
        return driver.run(client)


class _Driver:
    """Keeps ``cluster.window`` chunks in flight, records each that comes back, and stops on a signal."""

    def __init__(self, p: Prepared, todo: list[Chunk], summary: RunSummary, progress: RunProgress,
                 stop: StopSignals, lock: RunLock | None) -> None:
        self.p, self.summary, self.progress, self.stop, self.lock = p, summary, progress, stop, lock
        self.by_id = {ch.id: ch for ch in todo}
        self.queue = [ch.id for ch in todo]
        self.attempts: dict[str, int] = {}
        self.submitted: dict[str, float] = {}
        self.futures: dict[Any, str] = {}
        self.marked: set[str] = set()
        """chunks this client marked running and has not recorded since"""
        self.finished_in_grace = 0

    def run(self, client: Any) -> RunSummary:
        """Map every chunk of the queue (inside ``stop.deferred()``); :class:`~miso_mapper.signals.Interrupted`
        when a signal stopped it."""
        from distributed import as_completed

        wf = self.p.workflow
        self.client, self.pending = client, as_completed()
        self.resources = {"GPU": 1} if wf.cluster.has_gpu_workers else None
        note = check_gpu_workers(client, wf.cluster)
        if note:
            self.progress.notice(note)
        self.summary.dashboard = getattr(client, "dashboard_link", None)
        area = sum(ch.area_km2 for ch in self.by_id.values())
        started = time.perf_counter()
        self.progress.started(RunStart(wf.name, len(self.queue), area, self.summary.dashboard))
        try:
            self._fill()
            while self.futures and (fut := self._next_back()) is not None:
                self._take(fut)
                self._fill()
        finally:
            self._abandon()
        self.summary.seconds = time.perf_counter() - started
        self._raise_if_stopped()
        return self.summary

    def _fill(self) -> None:
        while self.queue and len(self.futures) < self.p.workflow.cluster.window and not self._stopping():
            self._submit(self.queue.pop(0))

    def _submit(self, cid: str) -> None:
        self.attempts[cid] = self.attempts.get(cid, 0) + 1
        job = _job(self.p, self.by_id[cid])
        self.p.manifest.mark_running(cid)
        self.marked.add(cid)
        tag = f"{cid}-{self.attempts[cid]}-{time.time_ns()}"
        read = self.client.submit(read_task, job, key=f"read-{tag}", pure=False)
        fut = self.client.submit(predict_write_task, read, job, key=f"map-{tag}", pure=False,
                                 resources=self.resources)
        self.futures[fut] = cid
        self.submitted[cid] = time.perf_counter()
        self.pending.add(fut)

    def _stopping(self) -> bool:
        return self.stop.requested or (self.lock is not None and self.lock.lost)

    def _next_back(self) -> Any | None:
        """The next future to come back; None once the lock is lost, or a stop's grace is over."""
        grace = self.p.workflow.cluster.shutdown_grace
        while not self.pending.has_ready():
            if (self.lock is not None and self.lock.lost) or (self.stop.requested and self.stop.since() >= grace):
                return None
            time.sleep(0.05)
        return next(self.pending)

    def _take(self, fut: Any) -> None:
        cid = self.futures.pop(fut)
        km2 = self.by_id[cid].area_km2
        report = _record(self.p, fut, cid, self.attempts[cid], self.summary, km2,
                         time.perf_counter() - self.submitted[cid])
        self.marked.discard(cid)
        if self.stop.requested:
            self.finished_in_grace += 1
        elif report.status == "retrying":
            self.queue.insert(0, cid)
        self.progress.chunk_finished(report)
        fut.release()

    def _abandon(self) -> None:
        """Cancel what is still in flight and return this client's running rows to pending (best effort)."""
        if self.futures:
            try:
                self.client.cancel(list(self.futures))
            except Exception:  # noqa: BLE001 - a closing or lost cluster drops them anyway
                pass
        if self.marked:
            try:
                self.p.manifest.reset_interrupted(self.marked)
            except MisoError:
                pass  # the disk is still full: `run --resume` resets them

    def _raise_if_stopped(self) -> None:
        if self.lock is not None and self.lock.lost:
            raise MisoError(f"the run lock {self.lock.path} was removed or taken by another command while this run "
                            f"was mapping: stopped; {len(self.futures)} chunk(s) in flight returned to pending")
        if not self.stop.requested:
            return
        left = len(self.futures) + len(self.queue)
        raise self.stop.interrupted(
            f"run stopped by {self.stop.name}: {len(self.summary.done)} chunk(s) done ({self.finished_in_grace} came "
            f"back in the {self.p.workflow.cluster.shutdown_grace:g} s grace), {left} left pending; continue with "
            "`miso-mapper run CONFIG --resume`")


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
                         sum(result.get(k) or 0.0 for k in ("read_s", "predict_s", "write_s")),
                         absent_keys=result.get("absent_keys"))
    summary.done.append(cid)
    summary.results.append(result)
    summary.km2 += km2
    return ChunkReport(cid, "done", attempt, seconds, km2, result=result)


def run_workflow(workflow: Workflow, resume: bool = False, only: list[str] | None = None,
                 max_chunks: int | None = None, overwrite: bool = False, progress: RunProgress | None = None,
                 client: Any = None, verify: bool = False) -> RunSummary:
    """Plan, check and map a workflow holding its run folder's lock (see the module doc); returns the summary,
    also given to ``progress.finished`` with the manifest's final counts.

    ``verify`` (with ``resume``): re-read every done chunk and compare it with its recorded checksum.
    A MISO workflow that sets no checkpoint maps with those ``train`` wrote (a notice says so;
    :func:`~miso_mapper.trained.with_trained_checkpoints`).
    Raises :class:`MisoError` for bad input, a run folder locked by another command, or a client-side failure
    (one line naming the path), and :class:`~miso_mapper.signals.Interrupted` when stopped by a signal.
    """
    if max_chunks is not None and max_chunks < 1:
        raise UsageError(f"--max-chunks must be at least 1, got {max_chunks}")
    if verify and not resume:
        raise MisoError("--verify checks the done chunks of an existing run: give it with --resume")
    if resume and overwrite:
        raise MisoError("give --resume or --overwrite, not both")
    require_compute(workflow)
    progress = progress or RunProgress()
    workflow, note = with_trained_checkpoints(workflow)
    if note:
        progress.notice(note)
    inputs = check_inputs(workflow, only)
    command = " ".join(["run", *(["--resume"] if resume else []), *(["--verify"] if verify else []),
                        *(["--overwrite"] if overwrite else [])])
    with exclusive_writer(workflow, command, hint="continue with `miso-mapper run CONFIG --resume`") as (stop, lock):
        prepared = prepare(workflow, resume=resume, only=only, overwrite=overwrite, verify=verify,
                           progress=progress, inputs=inputs)
        try:
            summary = execute(prepared, progress, max_chunks=max_chunks, client=client, stop=stop, lock=lock)
            summary.manifest_counts = prepared.manifest.counts()
        finally:
            prepared.manifest.close()
    progress.finished(summary)
    return summary
