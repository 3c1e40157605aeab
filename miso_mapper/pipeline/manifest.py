"""The run manifest: one SQLite file beside the store, one row per chunk, written only by the client.

Table ``chunks`` (one row per planned chunk):

============  ======================================================================================
id            chunk id ``rNNNNcNNNN`` (primary key); ``tile``, ``row``, ``col`` (chunk lattice), ``area_km2``
status        ``pending`` -> ``running`` -> ``done`` | ``failed`` (``running`` left by a killed client is
              treated as not done)
attempts      attempts over all runs (each submission to Dask counts one)
last_error    one line, hrefs stripped of query strings and credentials
items         JSON list of the Sentinel-2 item ids the chunk reads (the full item dicts are in the search
              record ``search/<id>.json`` beside the manifest)
covariates    JSON {layer: [href, ...]} of the covariate sources
search_s, read_s, predict_s, write_s, total_s   timings of the last attempt, seconds
started, finished   ISO 8601 UTC times of the last attempt
checksum      sha256 of the bytes the store holds for the chunk (re-read after the write)
absent_keys   JSON list of the chunk's Zarr chunk keys the write left absent because they hold only no data
              (every other key of the chunk must exist: :mod:`miso_mapper.pipeline.audit`)
worker        the Dask worker that wrote it
============  ======================================================================================

Table ``meta`` holds key/value pairs: ``map_config_hash``, ``config_hash``, ``store_uuid``, ``created``.
Transactions are short and the file uses WAL journaling, so ``status`` may read it while a run writes.

Every SQLite error (disk full, read-only file, corrupt database) is raised as a :class:`MisoError` naming the
file. :meth:`Manifest.reset_interrupted` still returns rows to pending on a full disk when it can: it folds
the WAL into the database (pages that exist already) and truncates it, which frees the WAL's space.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miso_mapper.errors import MisoError
from miso_mapper.grid import Chunk

STATUSES = ("pending", "running", "done", "failed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id TEXT PRIMARY KEY, tile TEXT NOT NULL, row INTEGER NOT NULL, col INTEGER NOT NULL,
    area_km2 REAL NOT NULL, status TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT, items TEXT, covariates TEXT,
    search_s REAL, read_s REAL, predict_s REAL, write_s REAL, total_s REAL,
    started TEXT, finished TEXT, checksum TEXT, worker TEXT, absent_keys TEXT
);
"""
#: Columns added after the first manifests were written: (name, SQL type), added to older files on opening.
_ADDED_COLUMNS = (("absent_keys", "TEXT"),)

_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]*@)?(?P<rest>[^\s'\"?#]*)[^\s'\"]*")


def one_line_error(exc: BaseException | str, limit: int = 300) -> str:
    """An error as one line of at most ``limit`` characters, URLs without query strings or user info.

    A :class:`MisoError` is its own message (written for the user); any other exception is ``Type: message``.
    Signed-URL tokens and keys live in query strings and user info; this is the manifest's version of
    :func:`miso_mapper.imagery.search.redact_href` applied to free text.
    """
    text = exc if isinstance(exc, str) else str(exc) if isinstance(exc, MisoError) else f"{type(exc).__name__}: {exc}"
    text = _URL.sub(lambda m: m["scheme"] + m["rest"], " ".join(str(text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ChunkRow:
    """One manifest row."""

    id: str
    tile: str
    row: int
    col: int
    area_km2: float
    status: str
    attempts: int
    last_error: str | None
    items: list[str] | None
    covariates: dict[str, list[str]] | None
    search_s: float | None
    read_s: float | None
    predict_s: float | None
    write_s: float | None
    total_s: float | None
    started: str | None
    finished: str | None
    checksum: str | None
    worker: str | None
    absent_keys: list[str] | None


class Manifest:
    """The SQLite run manifest at ``path`` (created with its tables if absent)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(_SCHEMA)
            have = {r[1] for r in self.db.execute("PRAGMA table_info(chunks)")}
            for name, kind in _ADDED_COLUMNS:
                if name not in have:
                    self.db.execute(f"ALTER TABLE chunks ADD COLUMN {name} {kind}")
        except sqlite3.Error as exc:
            raise MisoError(f"{self.path} is not a usable run manifest ({exc})") from None

    @contextlib.contextmanager
    def _sql(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """The connection, in a transaction when ``write``; SQLite errors become one line naming the file."""
        try:
            if write:
                with self.db:
                    yield self.db
            else:
                yield self.db
        except sqlite3.Error as exc:
            raise MisoError(f"run manifest {self.path}: {exc}") from None

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- meta ------------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """A meta value, or None."""
        with self._sql(write=False) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, **values: str) -> None:
        """Set meta values."""
        with self._sql() as db:
            db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    # ---- rows ------------------------------------------------------------------------------------------
    def add_chunks(self, chunks: Iterable[Chunk]) -> None:
        """Insert a pending row for every chunk not in the manifest yet (existing rows are kept)."""
        with self._sql() as db:
            db.executemany(
                "INSERT OR IGNORE INTO chunks (id, tile, row, col, area_km2) VALUES (?, ?, ?, ?, ?)",
                [(ch.id, ch.tile, ch.row, ch.col, ch.area_km2) for ch in chunks],
            )

    def record_inputs(self, chunk_id: str, items: list[str], covariates: dict[str, list[str]],
                      search_s: float) -> None:
        """Record the item ids and covariate sources chosen for a chunk by the planning search."""
        with self._sql() as db:
            db.execute("UPDATE chunks SET items = ?, covariates = ?, search_s = ? WHERE id = ?",
                       (json.dumps(items), json.dumps(covariates), search_s, chunk_id))

    def mark_running(self, chunk_id: str) -> None:
        """A new attempt was submitted: status running, attempts + 1, timings of the last attempt cleared."""
        with self._sql() as db:
            db.execute(
                "UPDATE chunks SET status = 'running', attempts = attempts + 1, started = ?, finished = NULL, "
                "read_s = NULL, predict_s = NULL, write_s = NULL, total_s = NULL WHERE id = ?",
                (now(), chunk_id),
            )

    def mark_done(self, chunk_id: str, checksum: str, worker: str | None = None, read_s: float | None = None,
                  predict_s: float | None = None, write_s: float | None = None,
                  total_s: float | None = None, absent_keys: list[str] | None = None) -> None:
        """The chunk's write completed and was re-read with ``checksum``; ``absent_keys``: its Zarr chunk keys
        left absent as all no data (None: not known, so only ``--verify`` can check the chunk)."""
        absent = None if absent_keys is None else json.dumps(absent_keys)
        with self._sql() as db:
            db.execute(
                "UPDATE chunks SET status = 'done', last_error = NULL, checksum = ?, worker = ?, read_s = ?, "
                "predict_s = ?, write_s = ?, total_s = ?, finished = ?, absent_keys = ? WHERE id = ?",
                (checksum, worker, read_s, predict_s, write_s, total_s, now(), absent, chunk_id),
            )

    def return_to_pending(self, chunk_id: str, reason: str) -> None:
        """A ``done`` chunk whose stored bytes failed a check is to be mapped again; ``reason`` is its last error."""
        with self._sql() as db:
            db.execute("UPDATE chunks SET status = 'pending', last_error = ?, checksum = NULL, absent_keys = NULL "
                       "WHERE id = ?", (one_line_error(reason), chunk_id))

    def mark_failed(self, chunk_id: str, error: BaseException | str, final: bool) -> None:
        """Record an attempt's error; status ``failed`` when no attempt is left (``final``), else pending."""
        with self._sql() as db:
            db.execute(
                "UPDATE chunks SET status = ?, last_error = ?, finished = ? WHERE id = ?",
                ("failed" if final else "pending", one_line_error(error), now(), chunk_id),
            )

    def reset_interrupted(self, ids: Iterable[str] | None = None) -> int:
        """Rows left ``running`` become ``pending``: all of them (left by a killed client), or those of ``ids``
        (the rows a client that stops had marked). Returns how many. On a full disk it frees the WAL's space
        (see the module doc) and tries once more."""
        wanted = None if ids is None else sorted(ids)
        query = "UPDATE chunks SET status = 'pending' WHERE status = 'running'"
        if wanted is not None:
            query += f" AND id IN ({', '.join('?' * len(wanted))})"
        try:
            with self._sql() as db:
                return db.execute(query, wanted or ()).rowcount
        except MisoError:
            self.compact()
            with self._sql() as db:
                return db.execute(query, wanted or ()).rowcount

    def compact(self) -> None:
        """Fold the WAL into the database file and truncate it (so its space is free again)."""
        with self._sql(write=False) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def rows(self, status: str | None = None) -> list[ChunkRow]:
        """All rows (or those with ``status``), in chunk order."""
        query = "SELECT * FROM chunks" + (" WHERE status = ?" if status else "") + " ORDER BY row, col"
        with self._sql(write=False) as db:
            cur = db.execute(query, (status,) if status else ())
            names = [d[0] for d in cur.description]
            found = cur.fetchall()
        out = []
        for values in found:
            rec: dict[str, Any] = dict(zip(names, values, strict=True))
            for key in ("items", "covariates"):
                rec[key] = json.loads(rec[key]) if rec[key] else None
            rec["absent_keys"] = json.loads(rec["absent_keys"]) if rec["absent_keys"] is not None else None
            out.append(ChunkRow(**rec))
        return out

    def row(self, chunk_id: str) -> ChunkRow | None:
        """One row by chunk id."""
        return next((r for r in self.rows() if r.id == chunk_id), None)

    def counts(self) -> dict[str, int]:
        """Number of rows per status (every status present, zero included)."""
        with self._sql(write=False) as db:
            got = dict(db.execute("SELECT status, COUNT(*) FROM chunks GROUP BY status").fetchall())
        return {s: int(got.get(s, 0)) for s in STATUSES}
