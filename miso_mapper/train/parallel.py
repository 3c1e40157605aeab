"""MISO trainings side by side in worker processes (``train.workers``).

On a small CPU a tiny network's kernels do not keep two cores busy: two 1-thread trainings in two processes
finish about 1.7x sooner than the same two trainings one after the other with 2 threads each (measured on the
2-core demo machine). Workers are spawned (never forked: torch and GDAL threads do not survive a fork), each
re-opens the chip cache once, and every training keeps its resumable state file exactly as in-process.

Stopping: the workers ignore Ctrl-C (a terminal sends it to them too); when the ``with`` block of
:func:`training_pool` ends by an exception (Ctrl-C, SIGTERM under :func:`miso_mapper.signals.unwind_on_signals`,
an error), they are terminated mid-epoch instead of finishing their trainings. A state file is written only
after a whole epoch (atomically), so the interrupted trainings resume from their last complete epoch.

Progress: given a ``rich.progress.Progress``, the workers send their bars' calls (add, advance, update, remove)
through a queue, and a thread of the parent replays them on it, so each training in the pool shows its steps,
epochs and ETA as it would in-process.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.config import TrainConfig
from miso_mapper.train.chips import ChipGeometry, ChipSet


@dataclass(frozen=True)
class ChipCacheRef:
    """Where a worker finds the chips the parent built (:func:`miso_mapper.train.chips.build_chips`)."""

    cache_dir: Path
    key: str
    geometry: ChipGeometry

    @classmethod
    def of(cls, chips: ChipSet, cache_dir: Path) -> ChipCacheRef:
        """The reference of ``chips`` cached under ``cache_dir``."""
        return cls(cache_dir, chips.key, chips.geometry)


def threads_per_worker(cfg: TrainConfig, workers: int) -> int:
    """Torch threads of each of ``workers`` trainings: ``train.num_threads`` (or all cores) shared out."""
    import torch

    return max(1, (cfg.num_threads or torch.get_num_threads()) // max(workers, 1))


STOP_TIMEOUT_S = 5.0


@contextlib.contextmanager
def training_pool(workers: int, progress: Any = None) -> Iterator[concurrent.futures.ProcessPoolExecutor | None]:
    """A pool of ``workers`` spawned processes, or None (train in this process) when ``workers`` is 1.

    Leaving the block normally waits for the submitted trainings; leaving it by an exception terminates the
    workers at once (within :data:`STOP_TIMEOUT_S` seconds, then SIGKILL). With ``progress`` (a
    ``rich.progress.Progress``), the workers' training bars are shown on it (see the module doc)."""
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("spawn")
    events = context.Queue() if progress is not None else None
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                  initargs=(os.getpid(), events))
    relay = None
    if events is not None:
        relay = threading.Thread(target=_replay, args=(events, progress), name="training-progress", daemon=True)
        relay.start()
    try:
        yield pool
    except BaseException:
        _stop_now(pool)
        raise
    else:
        pool.shutdown(wait=True)
    finally:
        if events is not None and relay is not None:
            events.put(None)
            relay.join(STOP_TIMEOUT_S)


_EVENTS: Any = None
"""In a worker: the queue its progress calls go to (None: no progress wanted)."""


def _init_worker(parent_pid: int, events: Any = None) -> None:
    from miso_mapper.signals import die_with_parent

    global _EVENTS
    _EVENTS = events
    # Ctrl-C is the parent's to handle: it terminates us; a KeyboardInterrupt here would print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent_pid)


class RemoteProgress:
    """In a worker: the ``Progress`` calls a training bar makes, sent to the parent (task ids are
    (pid, number) pairs, unique across the pool)."""

    def __init__(self, events: Any) -> None:
        self.events, self._count = events, 0

    def add_task(self, description: str, **kwargs: Any) -> tuple[int, int]:
        """Start a bar in the parent; returns its id here."""
        self._count += 1
        key = (os.getpid(), self._count)
        self.events.put((key, "add_task", (description,), kwargs))
        return key

    def advance(self, task_id: tuple[int, int], advance: float = 1) -> None:
        """Advance bar ``task_id`` by ``advance`` steps."""
        self.events.put((task_id, "advance", (advance,), {}))

    def update(self, task_id: tuple[int, int], **kwargs: Any) -> None:
        """Update bar ``task_id`` (description, completed, total)."""
        self.events.put((task_id, "update", (), kwargs))

    def remove_task(self, task_id: tuple[int, int]) -> None:
        """Remove bar ``task_id``."""
        self.events.put((task_id, "remove_task", (), {}))


def _replay(events: Any, progress: Any) -> None:
    """In the parent: apply the workers' progress calls to ``progress`` until a None arrives."""
    tasks: dict[tuple[int, int], Any] = {}
    while (event := events.get()) is not None:
        key, method, args, kwargs = event
        if method == "add_task":
            tasks[key] = progress.add_task(*args, **kwargs)
        elif method == "remove_task" and key in tasks:
            progress.remove_task(tasks.pop(key))
        elif key in tasks:
            getattr(progress, method)(tasks[key], *args, **kwargs)


def _stop_now(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers without waiting for their trainings."""
    # the executor has no public way to end running calls before Python 3.14 (terminate_workers)
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.terminate()
    for p in processes:
        p.join(STOP_TIMEOUT_S)
        if p.is_alive():
            p.kill()
            p.join(STOP_TIMEOUT_S)


_WORKER_CHIPS: dict[str, ChipSet] = {}


def worker_chips(ref: ChipCacheRef) -> ChipSet:
    """The chips of ``ref``, opened once per worker process."""
    from miso_mapper.train.chips import open_cached_chips

    if ref.key not in _WORKER_CHIPS:
        _WORKER_CHIPS.clear()
        _WORKER_CHIPS[ref.key] = open_cached_chips(ref.cache_dir, ref.key, ref.geometry)
    return _WORKER_CHIPS[ref.key]


def train_in_worker(ref: ChipCacheRef, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, task: str,
                    cfg: TrainConfig, size: str, run_dir: Path | None, unlabelled_idx: np.ndarray,
                    threads: int, description: str | None = None) -> Any:
    """:func:`miso_mapper.train.loop.train_miso` in a worker process with ``threads`` torch threads; its bar
    (``description``) shows in the parent when the pool was given a progress display.

    Returns its :class:`~miso_mapper.train.loop.TrainResult` (the model travels back pickled, on CPU).
    """
    import torch

    from miso_mapper.train.loop import train_miso

    torch.set_num_threads(threads)
    return train_miso(worker_chips(ref), labels, train_idx, val_idx, task,
                      cfg.model_copy(update={"num_threads": threads}), size, run_dir=run_dir,
                      unlabelled_idx=unlabelled_idx, progress=RemoteProgress(_EVENTS) if _EVENTS else None,
                      description=description)
