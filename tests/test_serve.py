"""Serving the demo world: STAC API search (rustac) and the range-honouring asset server."""

from __future__ import annotations

import datetime as dt
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pystac_client import Client
from rasterio.windows import Window
from shapely.geometry import box, shape

from miso_mapper.errors import MisoError
from miso_mapper.world import ServedWorld, WorldManifest, serve_world


def _expected_ids(world: Path, manifest: WorldManifest, bbox: tuple[float, ...], start: str, end: str) -> set[str]:
    q = box(*bbox)
    t0, t1 = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    out = set()
    for rel in manifest.stac_items:
        d = json.loads((world / rel).read_text())
        if d["collection"] != "sentinel-2-l2a":
            continue
        when = dt.datetime.fromisoformat(d["properties"]["datetime"].replace("Z", "+00:00"))
        if shape(d["geometry"]).intersects(q) and t0 <= when <= t1:
            out.add(d["id"])
    return out


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.parametrize(
    "bbox,start,end",
    [
        ((-148.56, 64.80, -148.52, 64.83), "2021-07-01T00:00:00+00:00", "2021-08-31T23:59:59+00:00"),  # west only
        ((-148.30, 64.85, -148.26, 64.88), "2022-01-01T00:00:00+00:00", "2022-12-31T23:59:59+00:00"),  # east only
        ((-148.45, 64.84, -148.38, 64.86), "2021-07-01T00:00:00+00:00", "2022-08-31T23:59:59+00:00"),  # both
    ],
)
def test_search_bbox_and_dates(served_world: ServedWorld, demo_world: Path, demo_manifest: WorldManifest,
                               bbox: tuple[float, ...], start: str, end: str) -> None:
    expected = _expected_ids(demo_world, demo_manifest, bbox, start, end)
    assert expected
    client = Client.open(served_world.stac_url)
    found = {i.id for i in client.search(collections=["sentinel-2-l2a"], bbox=bbox,
                                         datetime=f"{start}/{end}").items()}
    assert found == expected
    first = next(client.search(ids=sorted(expected)[:1]).items())
    assert first.assets["red"].href.startswith(served_world.asset_url)


def test_search_paging_collections_and_unsupported_extensions(served_world: ServedWorld,
                                                              demo_manifest: WorldManifest) -> None:
    client = Client.open(served_world.stac_url)
    assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "covariates"}
    pages = list(client.search(collections=["sentinel-2-l2a"], limit=5).pages())
    assert [len(p.items) for p in pages] == [5, 5, 2]
    cov = list(client.search(collections=["covariates"]).items())
    assert len(cov) == 1 and cov[0].properties["proj:code"] == "EPSG:3338"
    # rustac's memory backend implements neither Query nor Filter: it answers with no items (documented)
    with pytest.warns(Warning):
        got = list(client.search(collections=["sentinel-2-l2a"], query={"eo:cloud_cover": {"lt": 100}}).items())
    assert got == []


def test_rasterio_window_read_uses_ranges(served_world: ServedWorld, demo_world: Path,
                                          demo_manifest: WorldManifest) -> None:
    rel = f"scenes/{demo_manifest.items[0]}/B08.tif"
    win = Window(300, 400, 200, 150)
    with rasterio.open(demo_world / rel) as ds:
        local = ds.read(1, window=win)
    before = len(served_world.requests())
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_USE_HEAD="NO"):
        with rasterio.open(served_world.asset_href(rel)) as ds:
            remote = ds.read(1, window=win)
    np.testing.assert_array_equal(remote, local)
    reqs = [r for r in served_world.requests()[before:] if r["path"] == rel]
    partial = [r for r in reqs if r["status"] == 206]
    assert len(partial) >= 2
    size = (demo_world / rel).stat().st_size
    assert sum(r["bytes"] for r in reqs) < size  # only parts of the file were transferred


def test_range_semantics(served_world: ServedWorld, demo_world: Path) -> None:
    url = served_world.asset_href("world.json")
    data = (demo_world / "world.json").read_bytes()
    status, headers, body = _get(url, {"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20]
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}" and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(url, {"Range": "bytes=-5"})
    assert status == 206 and body == data[-5:]
    status, headers, _ = _get(url, {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = _get(url, method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(data)
    status, _, body = _get(url)
    assert status == 200 and body == data
    assert _get(served_world.asset_href("../etc/passwd"))[0] == 404
    assert _get(served_world.asset_href("nope.tif"))[0] == 404


def test_fault_injection(served_world: ServedWorld, demo_world: Path) -> None:
    url = served_world.asset_href("world.json")
    data = (demo_world / "world.json").read_bytes()
    try:
        served_world.set_faults([{"path": "world.json", "statuses": [503, 500]}])
        assert [_get(url)[0] for _ in range(3)] == [503, 500, 200]
        served_world.set_faults([{"prefix": "world", "truncate": 100, "times": 1}])
        with pytest.raises(Exception):  # noqa: B017 - IncompleteRead or connection reset
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
        status, _, body = _get(url)
        assert status == 200 and body == data
    finally:
        served_world.set_faults([])


def test_port_in_use_is_a_one_line_error(demo_world: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MisoError, match=f"port {port}") as e:
            serve_world(demo_world, stac_port=port)
        assert "\n" not in str(e.value)
        with pytest.raises(MisoError, match=f"port {port}"):
            serve_world(demo_world, asset_port=port)


def test_not_a_world(tmp_path: Path) -> None:
    with pytest.raises(MisoError, match="not a demo world"):
        serve_world(tmp_path)


def test_serve_forever_stops_on_sigterm(demo_world: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "miso_mapper.cli", "world", "serve", str(demo_world),
                             "--stac-port", "0", "--asset-port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert lines[0].startswith("STAC API:") and lines[1].startswith("assets:")
        stac_url = lines[0].split()[-1]
        assert Client.open(stac_url).id
        children = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                   text=True).stdout.split()]
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 143  # the servers are stopped, then SIGTERM is the exit status
        time.sleep(0.2)
        for pid in children:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
