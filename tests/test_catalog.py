"""Catalogs on disk: the demo world's items as a static catalog or stac-geoparquet file (relative hrefs to its
COGs), searched locally with no server (``imagery.catalog``), and served by ``miso-mapper serve``."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from pystac_client import Client
from shapely.geometry import box

from miso_mapper.checks import workflow_problems
from miso_mapper.config import load_workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.imagery.catalog import open_catalog
from miso_mapper.imagery.covariates import find_covariate_sources
from miso_mapper.imagery.search import search_items
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.world import serve_folder
from miso_mapper.world.catalog import export_catalog

from .helpers import WORKFLOWS
from .test_pipeline import FAST, _merge, store_arrays

CHUNK_ID = "r0146c0493"  # the demo chunk with the world's always-cloudy patch


@pytest.fixture(scope="module")
def staged(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo world (hard links) with its items as a static catalog in ``catalog/`` and as
    ``geoparquet/items.parquet``, both with asset hrefs relative to the files that hold them."""
    root = tmp_path_factory.mktemp("staged") / "world"
    shutil.copytree(demo_world, root, copy_function=os.link)
    export_catalog(root, root / "catalog")
    export_catalog(root, root / "geoparquet", "geoparquet")
    return root


def _workflow(tmp: Path, imagery: dict, **extra: dict):
    over = _merge(FAST, {"imagery": imagery | {"max_items": 50}, "output": {"directory": str(tmp / "out")}})
    return load_workflow(WORKFLOWS / "demo.yaml", _merge(over, extra))


def test_export_writes_relative_hrefs(staged: Path) -> None:
    item_files = sorted((staged / "catalog" / "sentinel-2-l2a").glob("*/*.json"))
    assert len(item_files) == 12
    href = json.loads(item_files[0].read_text())["assets"]["red"]["href"]
    assert href.startswith("../../../scenes/") and (item_files[0].parent / href).resolve().is_file()


@pytest.mark.parametrize("form", ["catalog/catalog.json", "catalog", "geoparquet/items.parquet"])
def test_local_search_equals_the_stac_api(staged: Path, served_world, tmp_path: Path, form: str) -> None:
    local = _workflow(tmp_path, {"catalog": str(staged / form)})
    api = _workflow(tmp_path, {"stac_url": served_world.stac_url})
    grid = AlaskaGrid(local.grid)
    for chunk in [grid.chunk_by_id(c) for c in ("r0146c0492", "r0146c0493", "r0147c0492", "r0147c0493")]:
        mine = search_items(chunk.halo_geobox, local.imagery)
        theirs = search_items(chunk.halo_geobox, api.imagery)
        assert [i["id"] for i in mine] == [i["id"] for i in theirs] and mine
        for a, b in zip(mine, theirs, strict=True):  # the same files, by path vs by URL
            assert a["assets"]["red"]["href"] == str(staged / b["assets"]["red"]["href"].split("/", 3)[3])
            assert Path(a["assets"]["red"]["href"]).is_file()
        cov = find_covariate_sources(local.covariates, chunk.halo_geobox, None, local.imagery.catalog)
        assert cov["elevation"] == [str(staged / "covariates" / Path(h).name)
                                    for h in find_covariate_sources(api.covariates, chunk.halo_geobox,
                                                                    api.imagery.stac_url)["elevation"]]


def test_search_windows_and_cloud_ceiling(staged: Path, tmp_path: Path) -> None:
    """The yearly season windows and the cloud ceiling select from the catalog as from an API."""
    catalog = open_catalog(staged / "catalog")
    all_s2 = [i for i in catalog.items if i["collection"] == "sentinel-2-l2a"]
    wf = _workflow(tmp_path, {"catalog": str(staged / "catalog"), "years": [2021], "max_cloud_cover": 30})
    chunk = AlaskaGrid(wf.grid).chunk_by_id(CHUNK_ID)
    found = search_items(chunk.halo_geobox, wf.imagery)
    assert found and all(i["properties"]["datetime"].startswith("2021") for i in found)
    assert all(i["properties"]["eo:cloud_cover"] <= 30 for i in found)
    clouds = [i["properties"]["eo:cloud_cover"] for i in found]
    assert clouds == sorted(clouds) and len(found) < len(all_s2)


def test_catalog_on_disk_maps_like_the_served_world(staged: Path, served_world, client, tmp_path: Path) -> None:
    """One chunk mapped from the static catalog (no server) equals the same chunk mapped through the STAC API;
    the catalog's workflow file names it by a path relative to the file."""
    api = load_workflow(WORKFLOWS / "demo.yaml", _merge(FAST, {"imagery": {"stac_url": served_world.stac_url},
                                                              "output": {"directory": str(tmp_path / "api")}}))
    run_workflow(api, only=[CHUNK_ID], client=client)
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw = _merge(raw, _merge(FAST, {"imagery": {"catalog": "world/catalog/catalog.json"},
                                    "output": {"directory": "out"}}))
    raw.pop("world")
    path = staged.parent / "catalog-workflow.yaml"
    path.write_text(yaml.safe_dump(raw))
    local = load_workflow(path)
    assert local.imagery.catalog == staged / "catalog" / "catalog.json" and local.imagery.stac_url is None
    summary = run_workflow(local, only=[CHUNK_ID], client=client)
    assert summary.done == [CHUNK_ID] and not summary.failed
    mine, theirs = store_arrays(RunLayout.of(local).store), store_arrays(RunLayout.of(api).store)
    for name, array in theirs.items():
        np.testing.assert_array_equal(mine[name], array, err_msg=name)
    assert (mine["permafrost_probability"] != 255).sum() > 200_000  # the chunk was mapped, not left empty


def test_exactly_one_imagery_source(tmp_path: Path, staged: Path) -> None:
    with pytest.raises(ConfigError, match="imagery: give one of stac_url and catalog, not both"):
        _workflow(tmp_path, {"stac_url": "http://x/", "catalog": str(staged / "catalog")})
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw.pop("world")
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="imagery.stac_url or imagery.catalog is required"):
        load_workflow(path)


@pytest.mark.parametrize("case,message", [
    ("missing", "catalog .*nowhere.json not found"),
    ("not-stac", "is not STAC"),
    ("not-json", "cannot be read as STAC"),
    ("no-collection", "has no items of collection 'sentinel-2-l2a' \\(it has: covariates\\)"),
])
def test_validate_names_the_catalog_problem(tmp_path: Path, staged: Path, case: str, message: str) -> None:
    paths = {"missing": tmp_path / "nowhere.json", "not-stac": tmp_path / "x.json", "not-json": tmp_path / "y.json",
             "no-collection": staged / "catalog" / "covariates" / "collection.json"}
    (tmp_path / "x.json").write_text('{"type": "Topology"}')
    (tmp_path / "y.json").write_text("{not json")
    wf = _workflow(tmp_path, {"catalog": str(paths[case])})
    problems = [p for p in workflow_problems(wf) if p.field == "imagery.catalog"]
    assert len(problems) == 1 and re.search(message, problems[0].message), problems
    chunk = AlaskaGrid(wf.grid).chunk_by_id(CHUNK_ID)
    with pytest.raises(MisoError, match=message):
        search_items(chunk.halo_geobox, wf.imagery)


def test_valid_catalog_has_no_problems(tmp_path: Path, staged: Path) -> None:
    wf = _workflow(tmp_path, {"catalog": str(staged / "geoparquet")})
    assert [p for p in workflow_problems(wf) if "catalog" in p.field] == []


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
        return r.status, dict(r.headers), r.read()


@pytest.mark.parametrize("form", ["catalog/catalog.json", "geoparquet"])
def test_serve_folder_answers_search_and_ranges(staged: Path, form: str) -> None:
    with serve_folder(staged, catalog=staged / form) as served:
        client = Client.open(served.stac_url)
        assert {c.id for c in client.get_collections()} == {"sentinel-2-l2a", "covariates"}
        status, _, body = _get(served.stac_url + "search?collections=sentinel-2-l2a&limit=100")
        found = json.loads(body)["features"]
        assert status == 200 and len(found) == 12
        href = found[0]["assets"]["red"]["href"]
        assert href.startswith(served.asset_url + "scenes/") and href.endswith("/B04.tif")
        file = staged / href.removeprefix(served.asset_url)
        status, headers, part = _get(href, {"Range": "bytes=100-1099"})
        assert status == 206 and headers["Content-Range"] == f"bytes 100-1099/{file.stat().st_size}"
        assert part == file.read_bytes()[100:1100]
        bbox = (-148.45, 64.84, -148.38, 64.86)
        ids = {i.id for i in client.search(collections=["sentinel-2-l2a"], bbox=bbox,
                                           datetime="2021-07-01/2021-08-31").items()}
        local = open_catalog(staged / form).search(["sentinel-2-l2a"], box(*bbox), dt.datetime(2021, 7, 1),
                                                   dt.datetime(2021, 8, 31, 23, 59, 59))
        assert ids == {i["id"] for i in local} and ids


def test_serve_keeps_hrefs_outside_the_folder(staged: Path) -> None:
    with serve_folder(staged / "catalog") as served:
        item = next(Client.open(served.stac_url).search(collections=["sentinel-2-l2a"], max_items=1).items())
        assert item.assets["red"].href.startswith(str(staged / "scenes"))


def test_serve_refuses_a_folder_without_catalog(staged: Path, tmp_path: Path) -> None:
    with pytest.raises(MisoError, match="has no catalog.json, collection.json or single"):
        serve_folder(staged)
    with pytest.raises(MisoError, match="is not inside the served folder"):
        serve_folder(tmp_path, catalog=staged / "catalog")


def test_serve_command_stops_on_sigterm(staged: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "miso_mapper.cli", "serve", str(staged), "--catalog",
                             str(staged / "geoparquet"), "--port", "0", "--asset-port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert lines[0].startswith("STAC API:") and lines[1].startswith("assets:")
        assert len(list(Client.open(lines[0].split()[-1]).search(collections=["covariates"]).items())) == 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_validate_command_names_a_missing_catalog(tmp_path: Path) -> None:
    """A relative ``imagery.catalog`` resolves against the workflow file; a missing one fails validate (exit 2)."""
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw.pop("world")
    raw["imagery"]["catalog"] = "staged/catalog.json"
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "miso_mapper.cli", "validate", str(path)], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 2
    assert f"imagery.catalog: catalog {tmp_path / 'staged' / 'catalog.json'} not found" in " ".join(
        done.stderr.split()), done.stderr
