"""``miso-mapper demo --quick`` end to end, as a user runs it, with a Dask worker killed during ``run``.

One demo (about 5 minutes on 2 cores) is checked for everything the products promise: exit 0, a complete store,
COGs valid for rio-cogeo, VRTs GDAL reads (and equal to the store), a map that agrees with the world's truth
well above a majority-class map, and a report that opens in headless Chromium without errors. The session's
demo world is linked in as ``<out>/world`` so the demo reuses it instead of generating it again.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
import zarr

from miso_mapper.demo import load_demo_workflow
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.store import LAYERS, NODATA

from .helpers import WORKFLOWS, check_page_in_chromium

DEMO_TIMEOUT_S = 900
# the module fixture runs the whole demo inside the first test's time limit (pyproject's default is 600 s)
pytestmark = pytest.mark.timeout(DEMO_TIMEOUT_S + 300)


def _running_chunks(manifest: Path) -> int:
    try:
        with sqlite3.connect(f"file:{manifest}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM chunks WHERE status = 'running'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _dask_workers(pid: int) -> list[psutil.Process]:
    """Worker processes of the demo's LocalCluster (spawned children of the demo process)."""
    out = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmd or "distributed" in cmd:
            out.append(child)
    return out


@pytest.fixture(scope="module")
def demo_run(demo_world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run ``miso-mapper demo --quick`` in a subprocess; kill one Dask worker while a chunk is running."""
    out = tmp_path_factory.mktemp("demo")
    (out / "world").symlink_to(demo_world, target_is_directory=True)
    workflow = load_demo_workflow(WORKFLOWS / "demo.yaml", out, quick=True)
    exe = Path(sys.executable).with_name("miso-mapper")
    log = out / "demo.log"
    started = time.monotonic()
    with log.open("w") as sink:
        proc = subprocess.Popen([str(exe), "demo", "--quick", "--out", str(out)], stdout=sink, stderr=subprocess.STDOUT)
        killed: list[int] = []
        try:
            while proc.poll() is None and time.monotonic() - started < DEMO_TIMEOUT_S:
                manifest = RunLayout.of(workflow).manifest
                if not killed and manifest.exists() and _running_chunks(manifest):
                    workers = _dask_workers(proc.pid)
                    if workers:
                        victim = max(workers, key=lambda p: p.create_time())
                        victim.kill()
                        killed.append(victim.pid)
                time.sleep(0.5)
            if proc.poll() is None:
                proc.kill()
                pytest.fail(f"demo --quick did not finish in {DEMO_TIMEOUT_S} s; log:\n{log.read_text()[-3000:]}")
        finally:
            if proc.poll() is None:
                proc.kill()
    return {"rc": proc.returncode, "log": log.read_text(), "killed": killed, "workflow": workflow,
            "seconds": time.monotonic() - started}


def test_demo_finishes_after_a_worker_is_killed(demo_run: dict) -> None:
    assert demo_run["rc"] == 0, demo_run["log"][-4000:]
    assert demo_run["killed"], "no Dask worker was found running a chunk to kill"
    for word in ("[1/7] world", "[3/7] train", "[4/7] evaluate", "[5/7] run", "[6/7] export", "[7/7] report",
                 "demo finished", "report:", "COGs:", "Zarr store:", "field sites:", "✓ sample-sites"):
        assert word in demo_run["log"], word


def test_store_is_complete(demo_run: dict) -> None:
    """Every chunk done, its bytes in the store equal to what the manifest recorded at write time, and no
    data only where the inputs have none (the world's always-cloudy patch: a few % of a chunk at most)."""
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.pipeline.store import open_store
    from miso_mapper.plan import make_plan

    wf = demo_run["workflow"]
    with sqlite3.connect(RunLayout.of(wf).manifest) as db:
        rows = dict(db.execute("SELECT id, status FROM chunks").fetchall())
        checksums = dict(db.execute("SELECT id, checksum FROM chunks").fetchall())
    assert len(rows) == 4 and set(rows.values()) == {"done"}
    group = zarr.open_group(str(RunLayout.of(wf).store), mode="r")
    store = open_store(RunLayout.of(wf).store, AlaskaGrid(wf.grid))
    for chunk in make_plan(wf).chunks:
        assert store.checksum(chunk) == checksums[chunk.id], chunk.id
        rows_, cols_ = store.region(chunk)
        for name in LAYERS:
            block = np.asarray(group[name][..., rows_, cols_])
            assert (block == NODATA).mean() < 0.05, (chunk.id, name)


def test_cogs_validate_and_vrts_read(demo_run: dict) -> None:
    from rio_cogeo.cogeo import cog_validate

    products = RunLayout.of(demo_run["workflow"]).products
    cogs = sorted((products / "cogs").rglob("*.tif"))
    assert len(cogs) >= 3
    for path in cogs:
        valid, errors, _ = cog_validate(str(path), quiet=True)
        assert valid, (path, errors)
    vrts = sorted((products / "mosaic").glob("*.vrt"))
    assert len(vrts) >= 3
    group = zarr.open_group(str(RunLayout.of(demo_run["workflow"]).store), mode="r")
    for vrt in vrts:
        with rasterio.open(vrt) as src:
            assert src.crs.to_epsg() == 3338
            data = src.read(1)
        if vrt.stem == "permafrost_probability":
            assert np.array_equal(data, np.asarray(group["permafrost_probability"][...]))


def test_map_agrees_with_truth_above_majority(demo_run: dict) -> None:
    from miso_mapper.report import map_accuracy

    acc = map_accuracy(demo_run["workflow"])
    for task in ("permafrost", "soil_order"):
        a = acc[task]
        assert a["pixels"] > 500_000
        assert a["accuracy"] > a["majority_accuracy"] + 0.05, (task, a)


def test_report_opens_in_chromium(demo_run: dict, tmp_path: Path) -> None:
    report = RunLayout.of(demo_run["workflow"]).report
    assert report.is_file()
    sites = RunLayout.of(demo_run["workflow"]).sample_sites
    assert len(json.loads(sites.geojson.read_text())["features"]) == 20 and sites.csv.is_file()
    section = report.read_text().split("<h2>Field-sampling guidance</h2>")[1].split("<h2>")[0]
    assert 'alt="field sites over the map' in section and section.count("<tr>") == 21
    check_page_in_chromium(report, tmp_path)
