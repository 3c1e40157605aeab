"""Logs for batch jobs: a level, a text or JSON line format, and a log file in the run folder.

Everything the commands print goes through a :class:`miso_mapper.console.MisoConsole`, which shows a message
when its level reaches the chosen one (``--log-level`` / ``MISO_LOG_LEVEL``, default ``info``) and, in the
``json`` format (``--log-format`` / ``MISO_LOG_FORMAT``), writes it as one JSON object per line instead of
text. Every message, whatever the level, also goes to the ``miso_mapper`` logger, so the log file that
:func:`run_log` opens in ``<output.directory>/logs/`` records the whole command at debug level.

A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and the record's fields
(``stage``, ``completed``, ``total``, ``eta_s``, ``chunk_id``, ... where the message has them).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LEVELS: dict[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                          "error": logging.ERROR}
FORMATS = ("text", "json")
LOGGER = logging.getLogger("miso_mapper")
CONSOLE_LOGGER = logging.getLogger("miso_mapper.console")
LOGGER.addHandler(logging.NullHandler())  # a library used without the CLI prints nothing twice
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@dataclass
class LogSettings:
    """How messages are shown on the terminal or job output: the lowest level shown, and text or JSON."""

    level: int = logging.INFO
    format: str = "text"


SETTINGS = LogSettings()


def configure(level: str = "info", fmt: str = "text") -> None:
    """Show messages of ``level`` and above in format ``fmt`` (``text`` or ``json``) from now on.

    Also sends Python warnings and the package's other loggers to stderr in that format (the file handler of
    :func:`run_log` takes them at debug level). Raises ValueError naming a bad level or format.
    """
    if level.lower() not in LEVELS:
        raise ValueError(f"log level {level!r}: one of {', '.join(LEVELS)}")
    if fmt.lower() not in FORMATS:
        raise ValueError(f"log format {fmt!r}: text or json")
    SETTINGS.level, SETTINGS.format = LEVELS[level.lower()], fmt.lower()
    LOGGER.setLevel(logging.DEBUG)
    LOGGER.propagate = False
    logging.captureWarnings(True)
    for name in ("miso_mapper", "py.warnings"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "miso_stream", False)]:
            logger.removeHandler(handler)
        handler = logging.StreamHandler()
        handler.miso_stream = True  # type: ignore[attr-defined]
        handler.setLevel(SETTINGS.level)
        handler.setFormatter(make_formatter(SETTINGS.format))
        handler.addFilter(lambda record: not getattr(record, "shown", False))  # the console showed it already
        logger.addHandler(handler)


def shows(level: int) -> bool:
    """True when a message of ``level`` is to be shown on the terminal or job output."""
    return level >= SETTINGS.level


def json_line(level: int, logger: str, message: str, fields: dict[str, Any] | None = None,
              created: float | None = None) -> str:
    """One JSON log line (no newline): time (UTC ISO 8601, ms), level, logger, message, then ``fields``."""
    when = dt.datetime.fromtimestamp(created if created is not None else dt.datetime.now().timestamp(), dt.UTC)
    record = {"time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
              "level": logging.getLevelName(level).lower(), "logger": logger, "message": message}
    for key, value in (fields or {}).items():
        record.setdefault(key, value)
    return json.dumps(record, default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """A record as :func:`json_line` (its ``fields`` attribute, when set, adds keys)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return json_line(record.levelno, record.name, message, getattr(record, "fields", None), record.created)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message`` with the record's fields appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        return line + "".join(f" {k}={v}" for k, v in fields.items()) if fields else line


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``fmt`` (``text`` or ``json``)."""
    return JsonFormatter() if fmt == "json" else TextFormatter()


def log_file_path(directory: Path, command: str, now: dt.datetime | None = None) -> Path:
    """``<directory>/<command>-<UTC timestamp>.log``; a pid is added when that name is taken."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{command}-{stamp}.log"
    return path.with_name(f"{command}-{stamp}-{os.getpid()}.log") if path.exists() else path


@contextlib.contextmanager
def run_log(directory: Path, command: str) -> Iterator[Path]:
    """Record every message and warning of the block at debug level in a new log file under ``directory``
    (the run folder's ``logs/``), in the chosen format; yields its path. The file is closed on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    path = log_file_path(directory, command)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(make_formatter(SETTINGS.format))
    loggers = [LOGGER, logging.getLogger("py.warnings")]
    LOGGER.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        LOGGER.debug("miso-mapper %s: log file %s", command, path, extra={"fields": {"command": command}})
        yield path
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()
