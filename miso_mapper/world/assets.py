"""Static HTTP file server for a world directory, with byte ranges, a request log and fault injection.

Run as ``python -m miso_mapper.world.assets --root DIR --port N [--faults F.json] [--log L.jsonl]``
(normally started by :func:`miso_mapper.world.serve.serve_world`). It serves the files under ``DIR`` at
``http://HOST:PORT/<relative path>`` with HTTP/1.1 keep-alive, ``Accept-Ranges: bytes``, single-range
``Range`` requests (206 with ``Content-Range``; 416 with ``Content-Range: bytes */SIZE`` when
unsatisfiable; multi-range requests get the whole file with 200) and ``HEAD``. Directories and paths
outside ``DIR`` are 404.

Request log (``--log``): one JSON object per line, written when a response is finished:
``{"method", "path", "range", "status", "bytes"}`` (``bytes`` = body bytes sent).

Fault injection (``--faults``): a JSON file, re-read whenever its modification time changes (so a test can
change faults while the server runs; counters restart on each reload)::

    {"rules": [
      {"path": "scenes/X/B04.tif", "statuses": [503, 500]},   # next 2 matching requests fail, then normal
      {"prefix": "scenes/", "truncate": 1000, "times": 1},     # send only 1000 body bytes, then drop
      {"prefix": "stac/", "delay_s": 2.0}                      # answer after a delay
    ]}

A rule matches a request by exact ``path`` or by ``prefix`` (relative to the root, no leading slash) and
optionally by ``methods`` (default all). The first matching rule that still has uses applies. ``statuses``
are returned (empty body) one per matching request until used up; ``truncate`` declares the normal
``Content-Length`` but sends only that many body bytes and closes the connection; ``times`` limits how
often a ``truncate``/``delay_s`` rule applies (default: always). Faulted requests are logged like others.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

CONTENT_TYPES = {
    ".tif": "image/tiff; application=geotiff", ".json": "application/json",
    ".geojson": "application/geo+json",
}
CHUNK = 1 << 16


class FaultTable:
    """Fault rules loaded from a JSON file (see the module docstring); thread-safe, reloads on change."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._rules: list[dict[str, Any]] = []
        self._used: list[int] = []
        self._lock = threading.Lock()

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime == self._mtime:
            return
        self._mtime = mtime
        rules = json.loads(self.path.read_text())["rules"] if mtime is not None else []
        self._rules, self._used = rules, [0] * len(rules)

    def take(self, method: str, path: str) -> dict[str, Any] | None:
        """The fault to apply to this request, if any: {'status': int} / {'truncate': int} / {'delay_s': s}."""
        with self._lock:
            self._reload()
            for i, rule in enumerate(self._rules):
                if "path" in rule and rule["path"] != path:
                    continue
                if "prefix" in rule and not path.startswith(rule["prefix"]):
                    continue
                if method not in rule.get("methods", [method]):
                    continue
                statuses = rule.get("statuses")
                if statuses is not None:
                    if self._used[i] < len(statuses):
                        self._used[i] += 1
                        return {"status": int(statuses[self._used[i] - 1])}
                    continue
                times = rule.get("times")
                if times is not None and self._used[i] >= times:
                    continue
                self._used[i] += 1
                return {k: rule[k] for k in ("truncate", "delay_s") if k in rule}
        return None


def parse_range(header: str, size: int) -> tuple[int, int] | None | str:
    """Parse a ``Range`` header against a file of ``size`` bytes.

    Returns (first, last) inclusive byte offsets, None to send the whole file (no/ignored/multi range), or
    'unsatisfiable' for a 416 answer.
    """
    if not header or not header.startswith("bytes="):
        return None
    spec = header[6:].strip()
    if "," in spec:
        return None
    first_s, _, last_s = spec.partition("-")
    try:
        if first_s == "":
            n = int(last_s)
            if n <= 0:
                return "unsatisfiable"
            return (max(0, size - n), size - 1) if size > 0 else "unsatisfiable"
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return "unsatisfiable"
    return first, min(last, size - 1)


def make_handler(root: Path, faults: FaultTable, log_path: Path | None) -> type[BaseHTTPRequestHandler]:
    """A request handler class serving ``root`` with ``faults`` applied and requests logged to ``log_path``."""
    log_lock = threading.Lock()
    log_file = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115 - lives with the server
    root = root.resolve()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "miso-world-assets/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access log
            pass

        def _log(self, rel: str, rng: str | None, status: int, nbytes: int) -> None:
            if log_file is None:
                return
            rec = {"method": self.command, "path": rel, "range": rng, "status": status, "bytes": nbytes}
            with log_lock:
                log_file.write(json.dumps(rec) + "\n")

        def _empty(self, rel: str, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._log(rel, self.headers.get("Range"), status, 0)

        def do_HEAD(self) -> None:  # noqa: N802
            self._serve(body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            rng_header = self.headers.get("Range")
            fault = faults.take(self.command, rel) or {}
            if "delay_s" in fault:
                threading.Event().wait(float(fault["delay_s"]))
            if "status" in fault:
                self._empty(rel, fault["status"])
                return
            path = (root / rel).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                self._empty(rel, HTTPStatus.NOT_FOUND)
                return
            size = path.stat().st_size
            rng = parse_range(rng_header or "", size)
            if rng == "unsatisfiable":
                self._empty(rel, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                            {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
                return
            first, last = rng if isinstance(rng, tuple) else (0, size - 1)
            length = last - first + 1
            status = HTTPStatus.PARTIAL_CONTENT if isinstance(rng, tuple) else HTTPStatus.OK
            self.send_response(status)
            self.send_header("Content-Type", CONTENT_TYPES.get(path.suffix, "application/octet-stream"))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(length))
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            sent = 0
            if body:
                limit = min(length, int(fault["truncate"])) if "truncate" in fault else length
                with open(path, "rb") as f:
                    f.seek(first)
                    while sent < limit:
                        data = f.read(min(CHUNK, limit - sent))
                        if not data:
                            break
                        self.wfile.write(data)
                        sent += len(data)
                if "truncate" in fault:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
            self._log(rel, rng_header, int(status), sent)

    return Handler


def make_server(root: Path, host: str, port: int, faults: Path | None = None,
                log: Path | None = None) -> ThreadingHTTPServer:
    """A bound (not yet serving) threaded HTTP server for ``root`` on ``host:port`` (port 0 = any free)."""
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    return ThreadingHTTPServer((host, port), make_handler(Path(root), FaultTable(faults), log))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m miso_mapper.world.assets``; prints ``READY <port>`` once listening."""
    p = argparse.ArgumentParser(prog="python -m miso_mapper.world.assets", description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--faults", type=Path)
    p.add_argument("--log", type=Path)
    a = p.parse_args(argv)
    try:
        server = make_server(a.root, a.host, a.port, a.faults, a.log)
    except OSError as e:
        print(f"cannot listen on {a.host}:{a.port}: {e.strerror}", file=sys.stderr, flush=True)
        return 1

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
