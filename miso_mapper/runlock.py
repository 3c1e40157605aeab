"""One writer per run folder: the run lock that ``run`` and ``export`` hold while they work.

The lock is the file :attr:`~miso_mapper.layout.RunLayout.lock`, a small JSON record naming its holder (host,
PID and that process's start time, when it started, the command); its modification time is the holder's
heartbeat, touched by a background thread. A second writer is refused with one line naming the holder.

A lock whose holder is gone is *stale*: its PID is not running on this host, or its heartbeat is older than
``output.lock_stale_after`` seconds (the only sign left of a holder on another host). A stale lock is reported
with how to clear it (``miso-mapper unlock CONFIG``), never taken over silently: a holder that died may have
left the run folder half changed (an ``--overwrite`` that deleted the old store, say), so a person looks first.

Mutual exclusion is the record's creation by ``link(2)`` of a fully written temporary file, which fails when
the record exists (atomic on local file systems and NFS); taking, breaking and dropping a record each run
under an OS file lock (:class:`filelock.FileLock` on :attr:`~miso_mapper.layout.RunLayout.lock_guard`), so
``unlock`` cannot remove a record that a new holder wrote between its look and its removal.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import filelock
import psutil

from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout

#: Longest pause between heartbeats, seconds (shorter when ``stale_after`` is short).
HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class Holder:
    """Who holds a run lock, as its record says; ``heartbeat`` is the record's mtime (epoch seconds)."""

    host: str
    pid: int
    pid_started: float | None
    started: str
    command: str
    token: str
    heartbeat: float

    def describe(self) -> str:
        """``'`miso-mapper run --resume` (pid 4242 on node7, since 2026-05-01T10:00:00Z, heartbeat 3 s ago)'``."""
        age = max(0.0, time.time() - self.heartbeat)
        return (f"`miso-mapper {self.command}` (pid {self.pid} on {self.host}, since {self.started}, "
                f"heartbeat {age:.0f} s ago)")

    def stale_reason(self, stale_after: float) -> str | None:
        """Why this holder is gone, or None when live. On this host the PID decides (a suspended or slow holder
        is still alive); for a holder on another host only the heartbeat can tell."""
        if self.host == socket.gethostname():
            return None if _running(self.pid, self.pid_started) else f"pid {self.pid} is not running on this host"
        age = time.time() - self.heartbeat
        if age > stale_after:
            return f"no heartbeat for {age:.0f} s (output.lock_stale_after: {stale_after:g} s)"
        return None


def _running(pid: int, started: float | None) -> bool:
    """Whether ``pid`` is a live process started at ``started`` (so a reused PID is not taken for the holder)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def read_holder(path: Path) -> Holder | None:
    """The holder named by the lock record at ``path``; None when there is none.

    A record that cannot be parsed names an unknown holder (PID 0, heartbeat its mtime), so it is reported and
    cleared like any other rather than ignored.
    """
    try:
        mtime = path.stat().st_mtime
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MisoError(f"cannot read the run lock {path}: {exc.strerror or exc}") from None
    try:
        rec = json.loads(raw)
        return Holder(str(rec["host"]), int(rec["pid"]), rec.get("pid_started"), str(rec["started"]),
                      str(rec["command"]), str(rec["token"]), mtime)
    except (ValueError, KeyError, TypeError):
        return Holder("an unknown host", 0, None, "an unknown time", "(unreadable lock record)", "", mtime)


@contextlib.contextmanager
def _guard(layout: RunLayout) -> Iterator[None]:
    """Hold the OS lock that makes one look-and-change of the lock record atomic (held for milliseconds)."""
    guard = filelock.FileLock(layout.lock_guard, timeout=60)
    try:
        layout.directory.mkdir(parents=True, exist_ok=True)
        guard.acquire()
    except filelock.Timeout:
        raise MisoError(f"{layout.lock_guard} stayed locked for 60 s: is a miso-mapper command hung?") from None
    except OSError as exc:
        raise MisoError(f"cannot lock {layout.lock_guard}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        guard.release()


class RunLock:
    """The run lock of ``layout`` held by this process for ``command`` (e.g. ``'run --resume'``).

    Use it as a context manager: entering takes the lock or raises :class:`MisoError` naming the holder (live)
    or saying how to clear it (stale); a daemon thread then touches the record every ``heartbeat`` seconds;
    leaving, on any exit path, stops the thread and removes the record if it is still this process's.
    ``lost`` turns True when the heartbeat finds the record removed or taken by another process.
    """

    def __init__(self, layout: RunLayout, command: str, stale_after: float) -> None:
        self.layout = layout
        self.path = layout.lock
        self.command = command
        self.stale_after = stale_after
        self.heartbeat = min(HEARTBEAT_S, stale_after / 4)
        self.token = uuid.uuid4().hex
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock and start the heartbeat; :class:`MisoError` when another holder has it."""
        me = psutil.Process()
        record = {"host": socket.gethostname(), "pid": me.pid, "pid_started": me.create_time(),
                  "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "command": self.command,
                  "token": self.token}
        tmp = self.path.with_name(f".{self.path.name}.{self.token}")
        with _guard(self.layout):
            holder = read_holder(self.path)
            if holder is not None:
                raise refusal(self.layout, holder, self.stale_after)
            try:
                tmp.write_text(json.dumps(record) + "\n")
                os.link(tmp, self.path)  # fails if a record appeared: the guard may not be shared by every host
            except FileExistsError:
                raise refusal(self.layout, read_holder(self.path), self.stale_after) from None
            except OSError as exc:
                raise MisoError(f"cannot write the run lock {self.path}: {exc.strerror or exc}") from None
            finally:
                tmp.unlink(missing_ok=True)
        self._thread = threading.Thread(target=self._beat, name="miso-run-lock-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if not self._mine():
                    self.lost = True
                    return
                os.utime(self.path)  # the heartbeat is the mtime: touching needs no free space on a full disk
            except (OSError, MisoError):
                continue  # a file-system hiccup: the next beat tries again, a long outage makes the lock stale

    def _mine(self) -> bool:
        holder = read_holder(self.path)
        return holder is not None and holder.token == self.token

    def release(self) -> None:
        """Stop the heartbeat and remove the record if it is still this process's (best effort, never raises)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with _guard(self.layout):
                if self._mine():
                    self.path.unlink()
        except (OSError, MisoError):
            pass


def refusal(layout: RunLayout, holder: Holder | None, stale_after: float) -> MisoError:
    """The one-line error for a run folder whose lock ``holder`` has (live: who and what to do; stale: how to
    clear it)."""
    if holder is None:  # the holder let go between the failed creation and the look
        return MisoError(f"{layout.directory} was locked by another command a moment ago; try again")
    reason = holder.stale_reason(stale_after)
    if reason is None:
        return MisoError(f"{layout.directory} is in use by {holder.describe()}; wait for it to end or stop it "
                         f"(kill -TERM {holder.pid} on {holder.host})")
    return MisoError(f"{layout.directory} has a stale lock from {holder.describe()}: {reason}; check the run "
                     f"folder, then clear it with `miso-mapper unlock CONFIG` (or delete {layout.lock})")


def unlock(layout: RunLayout, stale_after: float) -> Holder | None:
    """Remove a stale lock and return its holder (None when there was no lock); :class:`MisoError`, removing
    nothing, when the holder is live."""
    if not layout.lock.exists():
        return None
    with _guard(layout):
        holder = read_holder(layout.lock)
        if holder is None:
            return None
        if holder.stale_reason(stale_after) is None:
            raise MisoError(f"{layout.directory} is in use by {holder.describe()}: not unlocking a live command; "
                            f"stop it first (kill -TERM {holder.pid} on {holder.host})")
        try:
            layout.lock.unlink(missing_ok=True)
        except OSError as exc:
            raise MisoError(f"cannot remove the run lock {layout.lock}: {exc.strerror or exc}") from None
    return holder
