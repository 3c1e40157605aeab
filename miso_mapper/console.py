"""The one console the commands print through: rich on a terminal, plain lines anywhere else.

Redirected to a file (a SLURM/PBS ``.out``, a pipe), rich would wrap at 80 columns, cut table cells
(``Sche…``, ``0.7…``) and redraw bars with control codes. :class:`MisoConsole` instead writes every message
as plain lines at its full width: no wrapping, no truncation, no colour or cursor codes; a table's title goes
on its own line above the table. With ``--log-format json`` every message is one JSON object per line, on a
terminal too. Messages below ``--log-level`` are not shown; all of them reach the log file
(:mod:`miso_mapper.logs`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.control import Control
from rich.table import Table

from miso_mapper.errors import MisoError
from miso_mapper.logs import CONSOLE_LOGGER, SETTINGS, json_line, run_log, shows

PLAIN_WIDTH = 100_000
"""Characters a plain line may take: wide enough that nothing a command prints is ever wrapped or cut."""

_PRINT_OPTIONS = ("style", "justify", "overflow", "no_wrap", "emoji", "markup", "highlight")


class MisoConsole(Console):
    """A rich ``Console`` that prints plain lines off a terminal or in JSON format (see the module doc).

    ``print`` takes two more keywords: ``level`` (a ``logging`` level; by default ``error`` / ``warning``
    for a message starting so, else ``info``) and ``fields`` (a dict added to the JSON line and the log file).
    """

    @property
    def plain(self) -> bool:
        """True when output is plain lines (not a terminal, or JSON format): no live bars, no redraws."""
        return SETTINGS.format == "json" or not self.is_terminal

    def print(self, *objects: Any, sep: str = " ", end: str = "\n", level: int | None = None,
              fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Print ``objects`` as rich would on a terminal, else as plain lines or one JSON line; log them."""
        if not objects or any(isinstance(o, Control) for o in objects):  # rich's own live-display codes
            super().print(*objects, sep=sep, end=end, **kwargs)
            return
        text = plain_text(*objects, sep=sep, **kwargs)
        level = guess_level(text) if level is None else level
        CONSOLE_LOGGER.log(level, text, extra={"shown": True, "fields": fields or {}})
        if not shows(level):
            return
        if SETTINGS.format == "json":
            self._write(json_line(level, CONSOLE_LOGGER.name, text, fields))
        elif self.is_terminal:
            super().print(*objects, sep=sep, end=end, **kwargs)
        else:
            self._write(text)

    def rule(self, title: Any = "", **kwargs: Any) -> None:
        """A section header: rich's rule on a terminal, ``== title ==`` as a plain line."""
        if self.plain:
            self.print(f"== {title} ==" if title else "==")
        else:
            CONSOLE_LOGGER.info(plain_text(title), extra={"shown": True})
            super().rule(title, **kwargs)

    def print_json(self, json_text: str | None = None, *, data: Any = None, indent: int | str | None = 2,
                   **kwargs: Any) -> None:
        """Print JSON data (a result, not a message): plain and unchanged off a terminal, in either format."""
        if not self.plain:
            super().print_json(json_text, data=data, indent=indent, **kwargs)
            return
        value = json.loads(json_text) if json_text is not None else data
        self._write(json.dumps(value, indent=indent, ensure_ascii=False, default=str))

    def _write(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()


def make_console(stderr: bool = False) -> MisoConsole:
    """The console for stdout (results) or stderr (progress, notes, errors); the stream is looked up at each
    print, so a redirected ``sys.stdout`` is honoured."""
    return MisoConsole(stderr=stderr)


def plain_text(*objects: Any, sep: str = " ", **kwargs: Any) -> str:
    """``objects`` rendered as rich would without a terminal, but never wrapped or cut; trailing blanks removed.

    Markup is applied (so ``[green]ok[/]`` gives ``ok``); a table's title and caption become lines of their own.
    """
    buffer = io.StringIO()
    render = Console(file=buffer, width=PLAIN_WIDTH, color_system=None, force_terminal=False,
                     force_jupyter=False, legacy_windows=False, highlight=False, _environ={})
    options = {k: v for k, v in kwargs.items() if k in _PRINT_OPTIONS}
    for obj in _untitled(objects):
        render.print(*obj, sep=sep, soft_wrap=True, crop=False, **options)
    return "\n".join(line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines())


def _untitled(objects: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """Groups to print, one line group each: a titled table becomes (title,), (table without it,), (caption,)."""
    groups: list[tuple[Any, ...]] = []
    run: list[Any] = []
    for obj in objects:
        if isinstance(obj, Table) and (obj.title or obj.caption):
            if run:
                groups.append(tuple(run))
                run = []
            bare = copy.copy(obj)
            bare.title = bare.caption = None
            groups += [(obj.title,)] if obj.title else []
            groups.append((bare,))
            groups += [(obj.caption,)] if obj.caption else []
        else:
            run.append(obj)
    return groups + ([tuple(run)] if run else [])


def guess_level(text: str) -> int:
    """The level of a message that did not say: error / warning by its first word, else info."""
    head = text.lstrip().lower()
    if head.startswith(("error", "✗")):
        return logging.ERROR
    if head.startswith(("warning", "interrupted")):
        return logging.WARNING
    return logging.INFO


@contextlib.contextmanager
def command_log(logs_dir: Path, command: str, console: MisoConsole) -> Iterator[Path]:
    """Record the block in ``<logs_dir>/<command>-<UTC timestamp>.log`` at debug level (see
    :func:`miso_mapper.logs.run_log`), saying its path first; an error leaving the block is logged too.

    A command that stops with a :class:`MisoError` before writing anything but its log (a usage error, a
    missing checkpoint, an empty region) leaves nothing behind: the log file and the folders made for it are
    removed, so "nothing half-written" holds for the run folder too.
    """
    made = _first_missing(logs_dir)
    try:
        with run_log(logs_dir, command) as path:
            console.print(f"log: {path}", highlight=False, markup=False)
            try:
                yield path
            except MisoError as exc:  # the command line shows it, after the file is closed
                CONSOLE_LOGGER.error("error: %s", exc, extra={"shown": True})
                raise
            except BaseException as exc:
                CONSOLE_LOGGER.error("%s: %s", type(exc).__name__, exc,
                                     exc_info=not isinstance(exc, KeyboardInterrupt), extra={"shown": True})
                raise
    except MisoError:
        if made is not None and all(p == path or p.is_dir() for p in made.rglob("*")):
            shutil.rmtree(made, ignore_errors=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None if it exists."""
    missing = None
    while not path.exists():
        missing, path = path, path.parent
    return missing
