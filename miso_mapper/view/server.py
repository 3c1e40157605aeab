"""The viewer's HTTP server on 127.0.0.1 (threads of the standard library's ``ThreadingHTTPServer``).

Routes (all GET):

=================================  ====================================================================
``/``                              the page (:mod:`.page`)
``/static/<path>``                 Leaflet, ``viewer.js``, ``viewer.css`` (files of this package only)
``/layers.json``                   ``{"title", "bounds": [west, south, east, north] (degrees), "layers"}``
``/tiles/<layer>/<z>/<x>/<y>.png`` a 256 px Web Mercator tile (:func:`.render.render_tile`)
``/point?lat=..&lon=..``           ``{"lat", "lon", "values"}``: every layer there (:func:`.render.sample_point`)
``/chunks.geojson``                chunk status from the run manifest (:mod:`.chunks`)
=================================  ====================================================================

Bad requests answer 400 (404 for unknown paths and layers) with a one-line JSON ``{"error": ...}``.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import rasterio
from rasterio.warp import transform_bounds

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.layout import RunLayout
from miso_mapper.view.catalog import ViewLayer, find_layers
from miso_mapper.view.chunks import chunk_status_geojson
from miso_mapper.view.page import viewer_page
from miso_mapper.view.render import render_tile, sample_point

HOST = "127.0.0.1"
DEFAULT_PORT = 7830
STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class ViewerData:
    """What the server serves: the workflow's name, its shown layers, the manifest path and the grid."""

    title: str
    layers: dict[str, ViewLayer]
    manifest: Path
    grid: AlaskaGrid

    @classmethod
    def of(cls, workflow: Workflow) -> ViewerData:
        """The exported products of ``workflow``; :class:`MisoError` when ``export`` has written none."""
        layout = RunLayout.of(workflow)
        layers = find_layers(layout.products)
        if not layers:
            raise MisoError(f"no exported maps in {layout.products} (no mosaic/<layer>.vrt with data); "
                            "run `miso-mapper export CONFIG` first")
        return cls(workflow.name, {layer.name: layer for layer in layers}, layout.manifest,
                   AlaskaGrid(workflow.grid))

    def bounds(self) -> list[float]:
        """West, south, east, north (degrees) of the first layer's mosaic."""
        with rasterio.open(next(iter(self.layers.values())).mosaic) as src:
            return [round(v, 6) for v in transform_bounds(src.crs, "EPSG:4326", *src.bounds)]

    def layer_list(self) -> dict[str, Any]:
        """The body of ``/layers.json``."""
        return {"title": self.title, "bounds": self.bounds(),
                "layers": [layer.describe() for layer in self.layers.values()]}


class _Handler(BaseHTTPRequestHandler):
    data: ViewerData  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: a map view asks for hundreds of tiles."""

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        parts = [p for p in url.path.split("/") if p]
        try:
            self._route(parts, parse_qs(url.query))
        except _Reply as reply:
            self._send(reply.status, json.dumps({"error": reply.message}).encode(), "application/json")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser moved on (a tile scrolled out of view)

    def _route(self, parts: list[str], query: dict[str, list[str]]) -> None:
        if not parts or parts == ["index.html"]:
            self._send(200, viewer_page(self.data.title).encode(), "text/html; charset=utf-8")
        elif parts[0] == "static":
            self._static(parts[1:])
        elif parts == ["layers.json"]:
            self._json(self.data.layer_list())
        elif parts == ["chunks.geojson"]:
            self._json(chunk_status_geojson(self.data.manifest, self.data.grid))
        elif parts == ["point"]:
            lat, lon = _number(query, "lat", -90, 90), _number(query, "lon", -180, 180)
            self._json({"lat": lat, "lon": lon, "values": sample_point(list(self.data.layers.values()), lon, lat)})
        elif len(parts) == 5 and parts[0] == "tiles" and parts[4].endswith(".png"):
            self._tile(parts[1], parts[2], parts[3], parts[4].removesuffix(".png"))
        else:
            raise _Reply(404, f"no such page: /{'/'.join(parts)}")

    def _tile(self, name: str, z: str, x: str, y: str) -> None:
        layer = self.data.layers.get(name)
        if layer is None or not layer.drawn:
            raise _Reply(404, f"no drawn layer {name!r}")
        if not (z.isdigit() and x.isdigit() and y.isdigit()) or int(z) > 24:
            raise _Reply(400, f"bad tile {z}/{x}/{y}")
        zi, xi, yi = int(z), int(x), int(y)
        if xi >= 2**zi or yi >= 2**zi:
            raise _Reply(400, f"tile {z}/{x}/{y} is outside zoom {z}")
        self._send(200, render_tile(layer, zi, xi, yi), "image/png")

    def _static(self, parts: list[str]) -> None:
        path = STATIC.joinpath(*parts).resolve()
        if not path.is_relative_to(STATIC) or not path.is_file():
            raise _Reply(404, f"no static file {'/'.join(parts)}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), kind)

    def _json(self, body: Any) -> None:
        self._send(200, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _Reply(Exception):
    """An error answer: HTTP ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _number(query: dict[str, list[str]], key: str, low: float, high: float) -> float:
    """Query parameter ``key`` as a float in [low, high]; a 400 answer otherwise."""
    try:
        value = float(query[key][0])
    except (KeyError, ValueError):
        raise _Reply(400, f"{key} must be a number") from None
    if not low <= value <= high:
        raise _Reply(400, f"{key} must be in [{low}, {high}]")
    return value


class ViewerServer:
    """The viewer served on ``127.0.0.1:port`` from a background thread (port 0: any free one); use as a
    context manager or call :meth:`stop`. :attr:`url` ends with '/'."""

    def __init__(self, data: ViewerData, port: int = DEFAULT_PORT) -> None:
        handler = type("Handler", (_Handler,), {"data": data})
        try:
            self._server = ThreadingHTTPServer((HOST, port), handler)
        except OSError:
            raise MisoError(f"port {port} on {HOST} is already in use; choose another with --port") from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://{HOST}:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="miso-viewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> ViewerServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
