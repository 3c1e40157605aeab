"""SIGTERM and SIGINT while a command writes: stop cleanly, then exit 128 + the signal number (143, 130).

:class:`StopSignals` installs handlers for both signals for the life of a ``with`` block (main thread only;
elsewhere it installs nothing) and puts the previous ones back on leaving. By default a signal raises
:class:`Interrupted` where the program is, as Ctrl-C raises ``KeyboardInterrupt``, so every ``finally`` runs
(lock released, cluster closed, manifest rows returned). A loop that can stop at its own pace (``run``'s chunk
loop) opens :meth:`StopSignals.deferred`: there the first signal only sets :attr:`StopSignals.requested`; a
second one raises. Only one :class:`Interrupted` is ever raised, so a signal repeated during the cleanup cannot
cut it short.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

from miso_mapper.errors import MisoError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(MisoError):
    """The command stopped on a signal; ``exit_code`` is 128 + the signal number (SIGTERM 143, SIGINT 130)."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopSignals:
    """The signals a command has received while inside the ``with`` block (see the module doc)."""

    def __init__(self, hint: str = "") -> None:
        self.signum: int | None = None
        self.at: float | None = None
        """``time.monotonic()`` of the first signal."""
        self.hint = hint
        """what to do next, appended to the message of an :class:`Interrupted` raised by a signal"""
        self._defer = False
        self._raised = False
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def name(self) -> str:
        """The first signal's name (``'SIGTERM'``), or ``''``."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def since(self) -> float:
        """Seconds since the first signal (0 when none came)."""
        return 0.0 if self.at is None else time.monotonic() - self.at

    def interrupted(self, message: str) -> Interrupted:
        """The :class:`Interrupted` to raise for the first signal, with ``message``; later signals stop raising."""
        self._raised = True
        return Interrupted(self.signum or signal.SIGTERM, message)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[StopSignals]:
        """Inside, the first signal sets :attr:`requested` instead of raising."""
        self._defer = True
        try:
            yield self
        finally:
            self._defer = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.signum is None
        if first:
            self.signum, self.at = signum, time.monotonic()
        if self._raised or (first and self._defer):
            return
        hint = f"; {self.hint}" if self.hint else ""
        raise self.interrupted(f"interrupted by {signal.Signals(signum).name}{hint}")

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
