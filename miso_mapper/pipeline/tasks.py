"""What runs on a Dask worker for one chunk: read inputs (CPU), then predict + write (GPU resource if any).

Two tasks per chunk so that, on a GPU worker with several threads, the next chunk's reading and
compositing overlaps the current chunk's inference (only the predict task holds the ``GPU`` resource). The
read result stays on the worker that made it unless the scheduler moves it.

Every completed write leaves one small JSON file in the *write log* (``output/write-log/``, a file per
write, so it is safe on shared file systems): chunk id, store uuid, checksum, the Zarr chunk keys left absent
as all no data, worker pid. Before reading, a task checks the log: if the chunk was already written completely
into this very store (same uuid, and the stored bytes still read back with the logged checksum), it does not
write again. This is what keeps a chunk from being written twice when a worker or the client dies between the
write and the manifest update.

A task's :class:`MisoError` leaves the worker without the exceptions it was raised from: Dask sends an error
with its whole chain, and one link that cannot be unpickled (rasterio's errors cannot) turns it into
``Exception("MisoError('...')")`` on the client. A MisoError's message is complete without them.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr
from odc.geo.geobox import GeoBox

from miso_mapper.config import GridConfig, ImageryConfig
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid, Chunk
from miso_mapper.imagery.quality import with_input_quality
from miso_mapper.pipeline.predictor_cache import get_predictor
from miso_mapper.pipeline.predictors import PredictorSpec
from miso_mapper.pipeline.store import MapStore


@dataclass(frozen=True)
class ChunkJob:
    """One chunk's work order, sent to the worker (small: items are plain STAC item dicts)."""

    chunk_id: str
    grid: GridConfig
    imagery: ImageryConfig
    items: list[dict[str, Any]]
    covariates: dict[str, list[str]]
    store: str
    store_uuid: str
    write_log: str
    predictor: PredictorSpec

    def chunk(self) -> Chunk:
        """The chunk (interior and halo grids)."""
        return AlaskaGrid(self.grid).chunk_by_id(self.chunk_id)


def _portable_errors(task: Callable[..., Any]) -> Callable[..., Any]:
    """``task``, raising its :class:`MisoError` without the chain Dask could not send (see the module doc)."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except MisoError as exc:
            exc.__cause__ = exc.__context__ = None
            raise

    return wrapper


def interior_slices(chunk: Chunk, halo: int) -> tuple[slice, slice]:
    """(row, col) slices of the chunk's interior inside its halo grid."""
    h, w = chunk.geobox.shape
    return slice(halo, halo + h), slice(halo, halo + w)


def logged_write(job: ChunkJob, store: MapStore | None = None) -> dict[str, Any] | None:
    """The write-log entry of a complete write of this chunk into this store whose bytes are still there."""
    folder = Path(job.write_log)
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob(f"{job.chunk_id}--*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("store_uuid") != job.store_uuid:
            continue
        store = store or MapStore(Path(job.store), AlaskaGrid(job.grid))
        try:
            stored = store.checksum(job.chunk())
        except Exception:  # noqa: BLE001 - a chunk file that no longer decodes is not a complete write
            return None
        if stored == entry.get("checksum"):
            return entry
    return None


@_portable_errors
def read_task(job: ChunkJob) -> xr.Dataset | None:
    """Read the chunk's inputs on its halo grid (``read_inputs``); None if it is already written."""
    from miso_mapper.imagery.chunk import read_inputs

    if logged_write(job) is not None:
        return None
    t0 = time.perf_counter()
    chunk = job.chunk()
    geobox: GeoBox = chunk.halo_geobox
    inputs = read_inputs(geobox, job.items, job.covariates, job.imagery)
    inputs.attrs["read_s"] = time.perf_counter() - t0
    return inputs


@_portable_errors
def predict_write_task(inputs: xr.Dataset | None, job: ChunkJob) -> dict[str, Any]:
    """Predict the interior, add the input-quality layers (:func:`~miso_mapper.imagery.quality.input_quality`)
    and write it to the store (which checks its GeoBox is the chunk's, scales to uint8, writes the aligned
    region, re-reads and checksums it).

    Returns a dict for the client's manifest: ``chunk``, ``checksum``, ``absent_keys`` (the chunk's Zarr chunk
    keys left absent as all no data), ``worker`` (host:pid), ``read_s``, ``predict_s``, ``write_s`` (seconds),
    ``predictor_loads`` (times this process loaded the predictor: 1 when it is loaded once per worker) and
    ``reused`` (True when an earlier complete write was found).
    """
    chunk = job.chunk()
    store = MapStore(Path(job.store), AlaskaGrid(job.grid))
    worker = f"{socket.gethostname()}:{os.getpid()}"
    if inputs is None:
        entry = logged_write(job, store)
        if entry is not None:
            return {"chunk": job.chunk_id, "checksum": entry["checksum"], "absent_keys": entry.get("absent_keys"),
                    "worker": entry.get("worker"), "read_s": None, "predict_s": None, "write_s": None,
                    "predictor_loads": 0, "reused": True}
        raise RuntimeError(f"chunk {job.chunk_id}: logged write vanished between read and write")
    predictor, loads = get_predictor(job.predictor)
    t0 = time.perf_counter()
    interior = interior_slices(chunk, job.grid.halo)
    pred = with_input_quality(predictor.predict_chunk(inputs, interior), inputs, interior)
    t1 = time.perf_counter()
    checksum = store.write_chunk(chunk, pred)
    absent = store.absent_keys(chunk)
    t2 = time.perf_counter()
    entry = {"chunk": job.chunk_id, "store_uuid": job.store_uuid, "checksum": checksum, "absent_keys": absent,
             "worker": worker, "pid": os.getpid(), "time": time.time()}
    folder = Path(job.write_log)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{job.chunk_id}--{time.time_ns()}-{os.getpid()}.json"
    tmp = folder / f".{name}.tmp"
    tmp.write_text(json.dumps(entry))
    os.replace(tmp, folder / name)
    return {"chunk": job.chunk_id, "checksum": checksum, "absent_keys": absent, "worker": worker,
            "read_s": inputs.attrs.get("read_s"), "predict_s": t1 - t0, "write_s": t2 - t1,
            "predictor_loads": loads, "reused": False}
