"""Serve a demo world, or any catalog folder: a STAC API (``rustac serve``) and an HTTP asset server, both on
127.0.0.1.

``serve_world(world_dir)`` starts both as subprocesses (so Dask workers and GDAL in other processes reach
them like any remote service) and returns a :class:`ServedWorld`, usable as a context manager. Items are
served with absolute asset hrefs ``http://127.0.0.1:<asset port>/<path relative to the world dir>``.
``serve_folder(folder)`` does the same for a folder holding a catalog on disk (a static catalog,
ItemCollection or stac-geoparquet file; :mod:`miso_mapper.imagery.catalog`) and its assets: hrefs of files
inside the folder become asset-server URLs; others are served as they are.

What the rustac (0.9, memory backend) STAC API supports, as checked by ``tests/test_serve.py``:
``collections``, ``ids``, ``bbox``, ``intersects``, ``datetime`` (instants and intervals; items with only
start/end_datetime match by overlap), ``limit`` with ``next`` paging, GET and POST ``/search``. It does NOT
advertise or implement the Query, Filter (CQL2) or Sort extensions: a search with ``query`` or ``filter``
returns NO items (silently), and ``sortby`` is ignored. Filter ``eo:cloud_cover`` client-side.

Lifetime: the servers and their temporary folder go with the ``with`` block (or :meth:`ServedWorld.stop`), on
exceptions and Ctrl-C too, on SIGTERM inside :func:`miso_mapper.signals.unwind_on_signals`, and at interpreter
exit. On Linux a server also ends when the thread that started it does, even by SIGKILL (its temporary folder
is left then): call :func:`serve_world` from a thread that outlives the servers.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from miso_mapper.errors import MisoError
from miso_mapper.signals import die_with_parent, unwind_on_signals
from miso_mapper.world.generate import load_manifest

HOST = "127.0.0.1"
DEFAULT_STAC_PORT = 7822
DEFAULT_ASSET_PORT = 7823
START_TIMEOUT_S = 30.0


def _rustac_exe() -> str:
    here = Path(sys.executable).parent / "rustac"
    if here.is_file():
        return str(here)
    found = shutil.which("rustac")
    if not found:
        raise MisoError("rustac is not installed (pip install rustac); it serves the demo STAC API")
    return found


def _check_port(port: int) -> int:
    """``port`` if free on 127.0.0.1 (a free port chosen by the OS when 0); MisoError naming it otherwise."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise MisoError(f"port {port} on {HOST} is already in use") from None
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - local URLs only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


@dataclass
class ServedWorld:
    """A running world: ``stac_url`` (STAC API root, ends with '/'), ``asset_url`` (asset server root, ends
    with '/'), ``log_path`` (asset request log, JSON lines), ``faults_path`` (fault table the asset server
    watches). Stop with :meth:`stop` or by leaving a ``with`` block."""

    world_dir: Path
    stac_url: str
    asset_url: str
    log_path: Path
    faults_path: Path
    stac_port: int
    asset_port: int
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _tmp: Path | None = field(default=None, repr=False)

    def __enter__(self) -> ServedWorld:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Process ids of the server subprocesses (STAC, assets)."""
        return [p.pid for p in self._procs]

    def alive(self) -> bool:
        """True while every server subprocess is running."""
        return bool(self._procs) and all(p.poll() is None for p in self._procs)

    def stop(self) -> None:
        """Terminate both servers (SIGTERM, then SIGKILL after 5 s) and remove the temporary files. Idempotent."""
        for p in self._procs:
            if p.poll() is None:
                p.terminate()
        for p in self._procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
            for stream in (p.stdout, p.stderr):
                if stream:
                    stream.close()
        self._procs = []
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        atexit.unregister(self.stop)

    def asset_href(self, rel: str) -> str:
        """Absolute URL of a world file given its path relative to the world dir."""
        return self.asset_url + rel.lstrip("/")

    def requests(self) -> list[dict[str, Any]]:
        """Asset requests answered so far: dicts with method, path, range, status, bytes (see ``assets``)."""
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the asset server's fault rules (format: :mod:`miso_mapper.world.assets`); [] clears them.

        Takes effect on the next request (the server reloads the file when its mtime changes)."""
        tmp = self.faults_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rules": rules}))
        os.replace(tmp, self.faults_path)
        st = self.faults_path.stat()  # make sure the mtime moves even within one clock tick
        os.utime(self.faults_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


def _served_items(world_dir: Path, asset_url: str, out: Path) -> list[Path]:
    """Write the world's STAC collections and, per collection, one FeatureCollection of its items with
    absolute asset hrefs into ``out``; return the files to load (collections first)."""
    manifest = load_manifest(world_dir)
    colls, per_coll = [], {}
    for rel in manifest.stac_collections:
        c = json.loads((world_dir / rel).read_text())
        c["links"] = []
        dst = out / f"collection-{c['id']}.json"
        dst.write_text(json.dumps(c))
        colls.append(dst)
        per_coll[c["id"]] = []
    for rel in manifest.stac_items:
        item = json.loads((world_dir / rel).read_text())
        item["links"] = []
        for asset in item["assets"].values():
            if "://" not in asset["href"]:
                asset["href"] = asset_url + asset["href"]
        per_coll.setdefault(item["collection"], []).append(item)
    files = list(colls)
    for cid, items in per_coll.items():
        dst = out / f"items-{cid}.json"
        dst.write_text(json.dumps({"type": "FeatureCollection", "features": items}))
        files.append(dst)
    return files


def _wait_ready(proc: subprocess.Popen[bytes], what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip()
            last = err.splitlines()[-1] if err else f"exit code {proc.returncode}"
            raise MisoError(f"{what} failed to start: {last}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise MisoError(f"{what} did not answer within {timeout:.0f} s")


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start one server: stderr piped (its last line explains a failed start), in a session of its own so a
    terminal's Ctrl-C reaches only us (we stop it in order), ended by the kernel if we die without stopping it.
    """
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True,
                            preexec_fn=functools.partial(die_with_parent, os.getpid()))  # noqa: PLW1509


def serve_world(world_dir: Path, stac_port: int = 0, asset_port: int = 0,
                timeout_s: float = START_TIMEOUT_S) -> ServedWorld:
    """Start the STAC API and the asset server for ``world_dir`` on 127.0.0.1 and wait until both answer.

    Port 0 picks a free port. Raises :class:`MisoError` (one line) if a port is in use, the directory is
    not a world, or a server does not come up within ``timeout_s`` seconds; nothing is left running then.
    The returned :class:`ServedWorld` is a context manager; servers are also stopped at interpreter exit.
    """
    world_dir = Path(world_dir).resolve()
    load_manifest(world_dir)
    return _serve(world_dir, "world.json", functools.partial(_served_items, world_dir), stac_port, asset_port,
                  timeout_s)


def serve_folder(folder: Path, stac_port: int = 0, asset_port: int = 0, timeout_s: float = START_TIMEOUT_S,
                 catalog: Path | None = None) -> ServedWorld:
    """:func:`serve_world` for a folder holding a catalog on disk and its assets (``miso-mapper serve``).

    ``catalog``: the catalog file or folder, inside ``folder`` (default: ``folder`` itself; see
    :func:`miso_mapper.imagery.catalog.catalog_file`). :class:`MisoError` (one line) when there is no readable
    catalog or it lies outside ``folder``, or as :func:`serve_world`.
    """
    from miso_mapper.imagery.catalog import catalog_file, read_catalog

    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise MisoError(f"{folder} is not a folder")
    file = catalog_file(Path(catalog) if catalog is not None else folder).resolve()
    if not file.is_relative_to(folder):
        raise MisoError(f"catalog {file} is not inside the served folder {folder}")
    items, collections = read_catalog(file)
    return _serve(folder, file.relative_to(folder).as_posix(),
                  functools.partial(_catalog_items, folder, items, collections), stac_port, asset_port, timeout_s)


def _asset_url(href: str, folder: Path, asset_url: str) -> str:
    """The asset server's URL for a local file under ``folder``; any other href as it is."""
    path = Path(href) if "://" not in href else None
    return asset_url + path.relative_to(folder).as_posix() if path and path.is_relative_to(folder) else href


def _catalog_items(folder: Path, items: list[dict[str, Any]], collections: list[dict[str, Any]],
                   asset_url: str, out: Path) -> list[Path]:
    """Like :func:`_served_items` for a catalog's ``items`` (absolute local hrefs) and ``collections``; a
    collection the items name without a document gets one made from its items."""
    import rustac

    per_coll: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        cid = item.get("collection") or "items"
        assets = {key: asset | {"href": _asset_url(asset["href"], folder, asset_url)}
                  for key, asset in item.get("assets", {}).items()}
        per_coll.setdefault(cid, []).append(item | {"links": [], "collection": cid, "assets": assets})
    docs = {c["id"]: c | {"links": []} for c in collections}
    files = []
    for cid, members in per_coll.items():
        doc = docs.get(cid) or rustac.collection_from_id_and_items(cid, members)
        files.append(out / f"collection-{cid}.json")
        files[-1].write_text(json.dumps(doc | {"links": []}))
    for cid, members in per_coll.items():
        files.append(out / f"items-{cid}.json")
        files[-1].write_text(json.dumps({"type": "FeatureCollection", "features": members}))
    return files


def _serve(root: Path, probe: str, stac_files: Any, stac_port: int, asset_port: int,
           timeout_s: float) -> ServedWorld:
    """Start the asset server for ``root`` (ready when it serves ``probe``, a path under ``root``), then
    rustac on the files ``stac_files(asset_url, tmp_dir)`` writes (collections first)."""
    stac_port, asset_port = _check_port(stac_port), _check_port(asset_port)
    if stac_port == asset_port:
        raise MisoError(f"STAC and asset server cannot share port {stac_port}")
    tmp = Path(tempfile.mkdtemp(prefix="miso-world-serve-"))
    served = ServedWorld(root, f"http://{HOST}:{stac_port}/", f"http://{HOST}:{asset_port}/",
                         tmp / "requests.jsonl", tmp / "faults.json", stac_port, asset_port, _tmp=tmp)
    atexit.register(served.stop)
    try:
        served.faults_path.write_text('{"rules": []}')
        assets = _start(
            [sys.executable, "-m", "miso_mapper.world.assets", "--root", str(root), "--host", HOST,
             "--port", str(asset_port), "--faults", str(served.faults_path), "--log", str(served.log_path)])
        served._procs.append(assets)
        _wait_ready(assets, f"asset server on port {asset_port}",
                    lambda: _get(served.asset_url + probe)[0] == 200, timeout_s)
        served.log_path.write_text("")  # the readiness probe is not a client request
        files = stac_files(served.asset_url, tmp)
        stac = _start([_rustac_exe(), "serve", *map(str, files), "--addr", f"{HOST}:{stac_port}"])
        served._procs.append(stac)
        n_coll = sum(1 for f in files if f.name.startswith("collection-"))

        def stac_ready() -> bool:
            status, body = _get(served.stac_url + "collections")
            return status == 200 and len(json.loads(body).get("collections", [])) == n_coll

        _wait_ready(stac, f"STAC API (rustac) on port {stac_port}", stac_ready, timeout_s)
    except BaseException:
        served.stop()
        raise
    return served


def serve_forever(world_dir: Path, stac_port: int = DEFAULT_STAC_PORT,
                  asset_port: int = DEFAULT_ASSET_PORT, serve: Any = serve_world) -> None:
    """Serve ``world_dir`` until Ctrl-C or SIGTERM (used by ``miso-mapper world serve DIR``; with
    ``serve=serve_folder`` by ``miso-mapper serve FOLDER``).

    Prints the STAC API and asset URLs, then waits. Ctrl-C or SIGTERM stops both servers, removes their
    temporary folder and then propagates as KeyboardInterrupt or :class:`miso_mapper.signals.Terminated`
    (exit status 130 / 143 in the CLI). Raises :class:`MisoError` if a server cannot start or dies while
    serving.
    """
    with unwind_on_signals(), serve(world_dir, stac_port, asset_port) as served:
        print(f"STAC API:  {served.stac_url}", flush=True)
        print(f"assets:    {served.asset_url}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while served.alive():
            time.sleep(0.5)
        raise MisoError("a STAC or asset server exited unexpectedly")
