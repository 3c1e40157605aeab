"""``miso-mapper view``: tiles, point values, chunk overlay and the page in headless Chromium, on a small store.

The store is test_export's grid (three 500 px tiles, 250 px chunks) with one constant value per chunk, so a
chunk's centre is a known place with a known colour. The browser screenshot is kept as a test artifact at
``tests/artifacts/viewer.png`` (git-ignored; the path is printed).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import morecantile
import numpy as np
import pytest
import yaml
import zarr
from PIL import Image
from pyproj import Transformer

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.errors import MisoError
from miso_mapper.export import export_workflow
from miso_mapper.export.layers import SOIL_ORDER_COLOURS
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.store import create_store, stored_layers
from miso_mapper.plan import make_plan
from miso_mapper.style import LAYER_RAMPS
from miso_mapper.view import ViewerData, ViewerServer

from .helpers import REPO
from .test_export import EMPTY_TILE, TILES, _overrides

ARTIFACTS = REPO / "tests" / "artifacts"
TMS = morecantile.tms.get("WebMercatorQuad")
ZOOM = 14


def _hex(colour: str) -> tuple[int, int, int, int]:
    return int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16), 255


def _chunk_layers(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Chunk i: permafrost 30 i + 20 (x250), soil order i mod 7, order probabilities 10 k + i, spread 7 i."""
    pf = np.full((250, 250), 30 * i + 20, np.uint8)
    tx = np.stack([np.full((250, 250), 10 * k + i, np.uint8) for k in range(7)])
    cls = np.full((250, 250), i % 7, np.uint8)
    return pf, tx, cls, {"permafrost_spread": np.full((250, 250), 7 * i, np.uint8)}


@pytest.fixture(scope="module")
def products(tmp_path_factory):
    """An exported store of 7 written chunks (constant per chunk) and a manifest: those done, one failed, the
    empty tile's pending. Returns (workflow, written chunks)."""
    from miso_mapper.config import load_workflow

    from .helpers import WORKFLOWS

    wf = load_workflow(WORKFLOWS / "demo.yaml", _overrides(tmp_path_factory.mktemp("view")))
    plan = make_plan(wf)
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "cafe", "model_kind": "miso",
                                                                  "workflow": "demo"}, decision_threshold=0.5)
    written = [ch for ch in plan.chunks if ch.tile in TILES][:-1]
    for i, ch in enumerate(written):
        pf, tx, cls, extra = _chunk_layers(i)
        store.write_layers(ch, stored_layers(ch.geobox, pf, tx, cls, extra))
    with Manifest(RunLayout.of(wf).manifest) as m:
        m.add_chunks(plan.chunks)
        for ch in written:
            m.mark_done(ch.id, "0" * 64)
        failed = [ch for ch in plan.chunks if ch.tile in TILES][-1]
        m.mark_failed(failed.id, "boom", final=True)
    export_workflow(wf)
    return wf, written


@pytest.fixture(scope="module")
def server(products):
    wf, _ = products
    with ViewerServer(ViewerData.of(wf), port=0) as served:
        yield served


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:  # noqa: S310 - the test's own server
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _lonlat(chunk) -> tuple[float, float]:
    x0, y0, x1, y1 = chunk.geobox.boundingbox
    to_wgs84 = Transformer.from_crs(chunk.geobox.crs.to_wkt(), "EPSG:4326", always_xy=True)
    return to_wgs84.transform((x0 + x1) / 2, (y0 + y1) / 2)


def _tile_pixel(lon: float, lat: float, z: int) -> tuple[morecantile.Tile, int, int]:
    """The Web Mercator tile holding lon/lat at zoom z and the pixel (col, row) of the point in it."""
    tile = TMS.tile(lon, lat, z)
    b = TMS.xy_bounds(tile)
    x, y = TMS.xy(lon, lat)
    return tile, int((x - b.left) / (b.right - b.left) * 256), int((b.top - y) / (b.top - b.bottom) * 256)


def test_layers_listed_with_the_export_colours(server):
    status, body = _get(server.url + "layers.json")
    info = json.loads(body)
    names = [layer["name"] for layer in info["layers"]]
    # written layers are listed; extra layers the store never filled (entropy, AOA) are not
    assert names[:4] == ["permafrost_probability", "taxonomy_class", "taxonomy_probability", "permafrost_class"]
    assert "permafrost_spread" in names and "taxonomy_entropy" not in names and "taxonomy_aoa" not in names
    tax = next(layer for layer in info["layers"] if layer["name"] == "taxonomy_class")
    assert {e["label"]: e["colour"] for e in tax["legend"]["entries"]} == {
        name: f"#{SOIL_ORDER_COLOURS[name]}" for name in SOIL_ORDERS}
    prob = next(layer for layer in info["layers"] if layer["name"] == "permafrost_probability")
    assert prob["legend"]["kind"] == "ramp" and prob["legend"]["max"] == 1.0
    assert prob["legend"]["stops"][0] == "#e8e2c8" and prob["legend"]["stops"][-1] == "#08306b"  # style.py's ramp
    assert not next(layer for layer in info["layers"] if layer["name"] == "taxonomy_probability")["drawn"]
    west, south, east, north = info["bounds"]
    assert -160 < west < east < -140 and 55 < south < north < 72


@pytest.mark.parametrize("i", [1, 5])
def test_tile_png_has_the_class_colour_at_a_known_place(server, products, i):
    _, written = products
    lon, lat = _lonlat(written[i])
    tile, col, row = _tile_pixel(lon, lat, ZOOM)
    status, png = _get(f"{server.url}tiles/taxonomy_class/{tile.z}/{tile.x}/{tile.y}.png")
    assert status == 200
    with Image.open(io.BytesIO(png)) as im:
        assert im.convert("RGBA").getpixel((col, row)) == _hex(SOIL_ORDER_COLOURS[SOIL_ORDERS[i % 7]])
    status, png = _get(f"{server.url}tiles/permafrost_probability/{tile.z}/{tile.x}/{tile.y}.png")
    expected = _ramp_colour(LAYER_RAMPS["permafrost_probability"], (30 * i + 20) * 0.004)
    with Image.open(io.BytesIO(png)) as im:
        got = im.convert("RGBA").getpixel((col, row))
    assert got[3] == 255 and all(abs(a - b) <= 2 for a, b in zip(got[:3], expected, strict=True)), (got, expected)


def _ramp_colour(ramp, value: float) -> tuple[int, int, int]:
    """The style ramp's colour at ``value``, interpolated linearly between its stops by hand (what the QGIS
    style and the report draw)."""
    stops = ramp.stops
    for (v0, c0), (v1, c1) in zip(stops, stops[1:], strict=False):
        if v0 <= value <= v1:
            f = (value - v0) / (v1 - v0)
            return tuple(round(a + (b - a) * f) for a, b in zip(_hex(c0)[:3], _hex(c1)[:3], strict=True))
    raise AssertionError(f"{value} outside the ramp")


def test_tiles_outside_and_bad_requests(server):
    status, png = _get(f"{server.url}tiles/taxonomy_class/{ZOOM}/0/0.png")  # the other side of the world
    assert status == 200
    with Image.open(io.BytesIO(png)) as im:
        assert im.convert("RGBA").getextrema()[3] == (0, 0)
    assert _get(f"{server.url}tiles/nope/1/0/0.png")[0] == 404
    assert _get(f"{server.url}tiles/taxonomy_class/1/5/0.png")[0] == 400
    assert _get(f"{server.url}point?lat=abc&lon=1")[0] == 400
    assert _get(f"{server.url}static/../server.py")[0] == 404


def test_point_returns_the_stored_values(server, products):
    wf, written = products
    group = zarr.open_group(str(RunLayout.of(wf).store), mode="r")
    for i in (0, 4):
        lon, lat = _lonlat(written[i])
        status, body = _get(f"{server.url}point?lat={lat}&lon={lon}")
        values = json.loads(body)["values"]
        r0, c0 = written[i].row * 250 + 125, written[i].col * 250 + 125
        origin_r, origin_c = (min(ch.row for ch in written) * 250, min(ch.col for ch in written) * 250)
        r, c = r0 - origin_r, c0 - origin_c
        assert values["permafrost_probability"]["stored"] == [int(group["permafrost_probability"][r, c])]
        assert values["permafrost_probability"]["value"] == [pytest.approx((30 * i + 20) * 0.004)]
        assert values["taxonomy_class"]["value"] == [SOIL_ORDERS[int(group["taxonomy_class"][r, c])]]
        assert values["taxonomy_probability"]["stored"] == [int(v) for v in group["taxonomy_probability"][:, r, c]]
        assert values["permafrost_class"]["value"] == ["permafrost" if 30 * i + 20 >= 125 else "no permafrost"]
        assert values["permafrost_spread"]["stored"] == [7 * i]
    assert json.loads(_get(f"{server.url}point?lat=0&lon=0")[1])["values"] == {}


def test_chunk_status_overlay(server, products):
    from shapely.geometry import Point, shape

    _, written = products
    features = json.loads(_get(server.url + "chunks.geojson")[1])["features"]
    by_status = {s: sorted(f["properties"]["id"] for f in features if f["properties"]["status"] == s)
                 for s in ("done", "failed", "pending")}
    assert by_status["done"] == sorted(ch.id for ch in written)
    assert len(by_status["failed"]) == 1 and len(by_status["pending"]) == 4
    assert all(f["properties"]["tile"] == EMPTY_TILE for f in features if f["properties"]["status"] == "pending")
    feature = next(f for f in features if f["properties"]["id"] == written[2].id)
    assert shape(feature["geometry"]).contains(Point(*_lonlat(written[2])))


def test_no_products_is_one_clear_error(tmp_path):
    from miso_mapper.config import load_workflow

    from .helpers import WORKFLOWS

    wf = load_workflow(WORKFLOWS / "demo.yaml", _overrides(tmp_path))
    with pytest.raises(MisoError, match=r"no exported maps in .*run `miso-mapper export CONFIG` first"):
        ViewerData.of(wf)


def _chromium() -> list[str]:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return [found, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--virtual-time-budget=15000"]


def test_page_in_headless_chromium_shows_the_class_colour(server, products, tmp_path):
    _, written = products
    i = 3
    lon, lat = _lonlat(written[i])
    page = f"{server.url}?layer=taxonomy_class&lat={lat}&lon={lon}&zoom=12&opacity=1&click={lat},{lon}"
    flags = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "viewer.png"
    shot.unlink(missing_ok=True)
    subprocess.run([*flags, f"--user-data-dir={tmp_path / 'p1'}", f"--screenshot={shot}", "--window-size=1000,800",
                    page], capture_output=True, timeout=180, check=False)
    print(f"viewer screenshot: {shot}")
    with Image.open(shot) as im:
        rgb = im.convert("RGB")
        assert rgb.size == (1000, 800)
        # the map is the page less the 280 px panel; Leaflet centres lat/lon in it (30 px right of the click's
        # marker; the chunk is ~150 px wide at zoom 12)
        assert rgb.getpixel(((1000 - 280) // 2 + 30, 800 // 2)) == _hex(SOIL_ORDER_COLOURS[SOIL_ORDERS[i]])[:3]
    dom = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'p2'}", "--dump-dom", page],
                         capture_output=True, timeout=180, check=False, text=True).stdout
    assert 'data-ready="1"' in dom and 'data-tiles="loaded"' in dom, dom[-2000:]
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom)
    assert "Gelisols" in dom and "7 done, 1 failed, 4 pending" in dom  # the legend and the overlay's counts
    # the values under the click, as the page shows them: class name and stored value, scaled probability
    assert "<td>taxonomy_class</td><td>Histosols (3)</td>" in dom, dom[-3000:]
    assert f"<td>permafrost_probability</td><td>{(30 * i + 20) * 0.004:g} ({30 * i + 20})</td>" in dom


def test_cli_serves_until_sigterm(products, tmp_path):
    wf, _ = products
    from .helpers import WORKFLOWS

    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    for key, value in _overrides(wf.output.directory).items():
        raw[key] = (raw.get(key) or {}) | value if key != "region" else value
    raw.pop("world")
    config = tmp_path / "view.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = os.environ | {"PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "miso_mapper.cli", "view", str(config), "--port", "0", "--no-browser"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read()
        assert json.loads(_get(url[0] + "layers.json")[1])["title"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
    finally:
        proc.kill()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url[0], timeout=5)  # noqa: S310


def test_zoomed_out_tiles_come_from_the_overview(products):
    from miso_mapper.view.render import render_tile, tile_source

    wf, written = products
    layer = ViewerData.of(wf).layers["taxonomy_class"]
    # 50 m overview: a zoom 9 tile pixel is ~305 m (x 1/cos(lat) over Alaska), a zoom 10 one ~153 m
    assert tile_source(layer, 9) == layer.overview and tile_source(layer, 10) == layer.mosaic
    lon, lat = _lonlat(written[4])
    tile, col, row = _tile_pixel(lon, lat, 9)
    with Image.open(io.BytesIO(render_tile(layer, tile.z, tile.x, tile.y))) as im:
        assert im.convert("RGBA").getpixel((col, row)) == _hex(SOIL_ORDER_COLOURS[SOIL_ORDERS[4]])


def test_cli_help_and_one_line_error_without_products(tmp_path):
    from typer.testing import CliRunner

    from miso_mapper.cli import app

    from .helpers import WORKFLOWS

    runner = CliRunner()
    shown = runner.invoke(app, ["view", "--help"])
    assert shown.exit_code == 0 and "--no-browser" in shown.output and "--port" in shown.output
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"] = {"directory": str(tmp_path / "empty")}
    raw.pop("world")
    raw["imagery"]["stac_url"] = "http://127.0.0.1:9/"
    config = tmp_path / "wf.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["view", str(config), "--no-browser"])
    assert result.exit_code == 1, result.output
    assert "no exported maps in" in result.output and "Traceback" not in result.output
