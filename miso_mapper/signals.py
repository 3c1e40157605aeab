"""SIGTERM and Ctrl-C as exceptions, so that ``with`` and ``finally`` blocks stop what a command started.

Python turns SIGINT (Ctrl-C) into :class:`KeyboardInterrupt`, but SIGTERM (a scheduler's walltime, ``kill``,
a CI timeout) ends it on the spot: no ``finally`` block, context manager or ``atexit`` handler runs, so the
servers, pools and temporary folders a command started outlive it. Inside :func:`unwind_on_signals` SIGTERM
raises :class:`Terminated` instead. It is a ``KeyboardInterrupt``, so code that already cleans up on Ctrl-C
cleans up on SIGTERM too, and ``except Exception`` does not swallow it. Usage::

    from miso_mapper.signals import exit_status, interrupt_line, unwind_on_signals

    try:
        with unwind_on_signals(), serve_world(world_dir) as served:
            work(served)                     # SIGTERM raises Terminated here, Ctrl-C KeyboardInterrupt
    except KeyboardInterrupt as exc:         # the servers are stopped by now
        print(interrupt_line(exc), file=sys.stderr)
        sys.exit(exit_status(exc))           # 143 for SIGTERM, 130 for Ctrl-C

(the CLI's ``interruptible`` decorator does exactly this for a command). For child processes,
:func:`die_with_parent` has Linux stop a child that its parent can no longer stop (a SIGKILLed parent).

Commands that *write* a run folder (``run``, ``export``) need more than unwinding: the chunks in flight
should finish and the manifest be put right. :class:`StopSignals` installs handlers for SIGTERM and SIGINT for
the life of a ``with`` block (main thread only) and puts the previous ones back on leaving. By default a
signal raises :class:`Interrupted` (a :class:`~miso_mapper.errors.MisoError` whose ``exit_code`` is 143 or
130) where the program is, so every ``finally`` runs (lock released, cluster closed, manifest rows returned).
A loop that can stop at its own pace (``run``'s chunk loop) opens :meth:`StopSignals.deferred`: there the
first signal only sets :attr:`StopSignals.requested`; a second one raises. Only one :class:`Interrupted` is
ever raised, so a signal repeated during the cleanup cannot cut it short.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any

from miso_mapper.errors import MisoError

_PR_SET_PDEATHSIG = 1
# resolved here, in the parent: a child between fork and exec should call it, not load libraries
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class Terminated(KeyboardInterrupt):
    """A signal other than SIGINT (normally SIGTERM) received inside :func:`unwind_on_signals`."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def exit_status(exc: KeyboardInterrupt) -> int:
    """The shell's exit status for a process ended by ``exc``: 128 + signal number (130 Ctrl-C, 143 SIGTERM)."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))


def interrupt_line(exc: KeyboardInterrupt) -> str:
    """One line saying what stopped the command, e.g. ``terminated (SIGTERM)`` or ``interrupted (Ctrl-C)``."""
    if isinstance(exc, Terminated):
        return f"terminated ({signal.Signals(exc.signum).name})"
    return "interrupted (Ctrl-C)"


UNWIND_GRACE_S = 30.0


@contextlib.contextmanager
def unwind_on_signals(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM),
                      grace_s: float = UNWIND_GRACE_S) -> Iterator[None]:
    """Within the block, the first of ``signums`` raises in the main thread: KeyboardInterrupt for SIGINT,
    :class:`Terminated` for any other. Further ones in the next ``grace_s`` seconds are ignored, so that a
    second Ctrl-C cannot cut short the stopping of servers and pools (keep that bounded); one after that
    raises again (the first was swallowed, or the stopping hangs). The previous handlers come back when the
    block exits. Outside the main thread (where Python cannot install handlers) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised_at: float | None = None
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal raised_at
        if os.getpid() != owner:  # a forked child inherited the handler: the signal does what it did before
            signal.signal(signum, previous[signum])
            os.kill(os.getpid(), signum)
            return
        if raised_at is not None and time.monotonic() - raised_at < grace_s:
            return
        raised_at = time.monotonic()
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    previous = {signum: _handler_now(signum) for signum in signums}
    for signum in signums:
        signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _handler_now(signum: int) -> Callable[[int, FrameType | None], Any] | int:
    """The current handler of ``signum``; SIG_DFL for one set outside Python (it cannot be put back)."""
    handler = signal.getsignal(signum)
    return signal.SIG_DFL if handler is None else handler


def die_with_parent(parent_pid: int) -> None:
    """Call in a child process (``preexec_fn``, a pool initializer): on Linux the kernel sends it SIGTERM
    when the thread that started it ends, even by SIGKILL; exits at once when ``parent_pid`` is already
    gone. Elsewhere it does nothing."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


#: The signals :class:`StopSignals` answers.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
