"""The envelope of a command that writes into a run folder (``run``, ``export``).

:func:`exclusive_writer` holds the run folder's lock (:mod:`miso_mapper.runlock`), answers SIGTERM and SIGINT
(:mod:`miso_mapper.signals`) and turns the client's own OS errors (disk full, permission denied, a vanished
folder) into one line naming the path (:func:`os_errors_as_one_line`); every exit path releases the lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.runlock import RunLock
from miso_mapper.signals import StopSignals


def describe_os_error(exc: OSError, where: Path) -> str:
    """``'/run/manifest.sqlite: No space left on device'``: the path the error names (else ``where``) and why."""
    why = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return f"{why} (in {where})"
    target = f" -> {exc.filename2}" if exc.filename2 else ""
    return f"{exc.filename}{target}: {why}"


@contextlib.contextmanager
def os_errors_as_one_line(where: Path) -> Iterator[None]:
    """Re-raise an :class:`OSError` of the block as a :class:`MisoError` (:func:`describe_os_error`)."""
    try:
        yield
    except OSError as exc:
        raise MisoError(describe_os_error(exc, where)) from None


@contextlib.contextmanager
def exclusive_writer(workflow: Workflow, command: str, hint: str = "") -> Iterator[tuple[StopSignals, RunLock]]:
    """Hold the run lock of ``workflow``'s run folder for ``command`` (``'run --resume'``) with signal handling
    and one-line OS errors; yields the signals (for a loop that stops gracefully) and the lock. ``hint`` (what
    to do next) ends the message of a command stopped by a signal."""
    layout = RunLayout.of(workflow)
    with (StopSignals(hint) as stop, os_errors_as_one_line(layout.directory),
          RunLock(layout, command, workflow.output.lock_stale_after) as lock):
        yield stop, lock
