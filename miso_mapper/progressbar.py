"""Progress with an ETA for every long stage: a live bar on a terminal, a line now and then anywhere else.

:func:`progress_bar` is the one place bars are made. On a terminal it is a ``rich.progress.Progress`` with
description, bar, count, elapsed time and ETA. Off a terminal (a batch job's ``.out``) or with
``--log-format json`` it is a :class:`LineProgress`: the same API, but instead of redrawing it prints one line
per task when it starts, every :data:`LINE_EVERY_S` seconds or :data:`LINE_EVERY_FRACTION` of the total
(whichever comes first) and when it completes, each with elapsed time and ETA.

The ETA assumes the rest goes at the mean pace since the task was added (work done before, e.g. resumed
epochs, does not count towards the pace).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from miso_mapper.console import MisoConsole

LINE_EVERY_S = 30.0
LINE_EVERY_FRACTION = 0.1


def eta_seconds(task: Task) -> float | None:
    """Seconds left for ``task`` at its mean pace since it was added; None before the first step or without
    a total; 0 when finished."""
    if task.total is None or task.elapsed is None:
        return None
    left = task.total - task.completed
    if left <= 0:
        return 0.0
    done = task.completed - task.fields.get("start_completed", 0)
    return task.elapsed / done * left if done > 0 else None


def clock(seconds: float | None) -> str:
    """``3725.2`` -> ``'1:02:05'``; None -> ``'-:--:--'``."""
    if seconds is None:
        return "-:--:--"
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class EtaColumn(ProgressColumn):
    """``ETA h:mm:ss`` by :func:`eta_seconds`."""

    def render(self, task: Task) -> Text:
        return Text(f"ETA {clock(eta_seconds(task))}", style="progress.remaining")


class _StartMixin:
    """Records each task's starting count, for :func:`eta_seconds`."""

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        fields.setdefault("start_completed", completed)
        return super().add_task(description, start, total, completed, visible, **fields)  # type: ignore[misc]


class BarProgress(_StartMixin, Progress):
    """A live rich bar (terminal) whose ETA follows :func:`eta_seconds`."""


class LineProgress(_StartMixin, Progress):
    """A ``Progress`` that prints lines with ETA instead of a live bar (see the module doc).

    ``describe(task)`` may add text to each line (e.g. km² mapped); tasks with no total print only when they
    start and end.
    """

    def __init__(self, console: Any, describe: Callable[[Task], str] | None = None,
                 every_s: float = LINE_EVERY_S, every_fraction: float = LINE_EVERY_FRACTION, unit: str = "") -> None:
        super().__init__(console=console, disable=True)
        self.describe, self.every_s, self.every_fraction = describe, every_s, every_fraction
        self.unit = f" {unit}" if unit else ""
        self._last: dict[TaskID, tuple[float, int, float]] = {}  # time, fraction step, completed at last line

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start, total, completed, visible, **fields)
        self._line(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._maybe_line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_line(task_id)

    def remove_task(self, task_id: TaskID) -> None:
        self._final_line(task_id)
        super().remove_task(task_id)
        self._last.pop(task_id, None)

    def stop(self) -> None:
        for task_id in list(self._last):
            self._final_line(task_id)
        super().stop()

    def _maybe_line(self, task_id: TaskID) -> None:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task_id not in self._last:
                return
            at, step, completed = self._last[task_id]
            if task.completed == completed:
                return
            finished = task.total is not None and task.completed >= task.total
            new_step = self._step(task) > step
            if not (finished or new_step or self.get_time() - at >= self.every_s):
                return
        self._line(task_id)

    def _final_line(self, task_id: TaskID) -> None:
        task = self._tasks.get(task_id)
        if task is not None and task_id in self._last and self._last[task_id][2] != task.completed:
            self._line(task_id)

    def _step(self, task: Task) -> int:
        if not task.total:
            return 0
        return int(task.completed / task.total / self.every_fraction + 1e-9)

    def _line(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        self._last[task_id] = (self.get_time(), self._step(task), task.completed)
        eta = eta_seconds(task)
        count = (f"{task.completed:g}/{task.total:g}" if task.total is not None else f"{task.completed:g}") + self.unit
        pct = f" ({task.completed / task.total:.0%})" if task.total else ""
        extra = f", {self.describe(task)}" if self.describe is not None else ""
        fields = {"stage": task.description, "completed": task.completed, "total": task.total,
                  "elapsed_s": round(task.elapsed or 0.0, 1), "eta_s": None if eta is None else round(eta, 1)}
        line = f"{task.description}: {count}{pct}{extra}, elapsed {clock(task.elapsed or 0.0)}, ETA {clock(eta)}"
        if isinstance(self.console, MisoConsole):
            self.console.print(line, markup=False, highlight=False, level=logging.INFO, fields=fields)
        else:  # a plain rich console (a caller's own)
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)


def progress_bar(console: Any, *columns: ProgressColumn, transient: bool = False,
                 describe: Callable[[Task], str] | None = None, unit: str = "") -> Progress:
    """The progress display for ``console``: a live bar on a terminal (``columns``, or description, bar,
    count, elapsed, ETA), a :class:`LineProgress` off a terminal or in JSON format (``describe`` adds text to
    its lines, ``unit`` follows its counts). ``transient`` bars vanish when done (lines stay)."""
    if getattr(console, "plain", not console.is_terminal):
        return LineProgress(console, describe, unit=unit)
    columns = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), EtaColumn())
    return BarProgress(*columns, console=console, transient=transient)
