"""End-to-end ``run`` on the served demo world with a LocalCluster of 2 worker processes.

The predictor here is ``model.kind: synthetic`` (:class:`~miso_mapper.pipeline.synthetic.SyntheticPredictor`),
a deterministic stand-in that is NOT a model: it derives probabilities from the Gaussian-smoothed inputs, so
it exercises reading, halo/interior handling, scaling, region writes and resume exactly like MISO would, in
seconds. A MISO-network run of the same pipeline is in ``test_pipeline_miso.py`` (slow).
Overrides keep the demo's 4 chunks but read 2 scenes per chunk with a 16 px halo to stay fast.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import xarray as xr
import yaml

from miso_mapper.config import Workflow, load_workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.commands import run_command, status_command
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.progress import ChunkReport, RunProgress, RunStart, RunSummary
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.pipeline.store import LAYERS, NODATA
from miso_mapper.runlock import unlock

from .helpers import WORKFLOWS

FAST = {
    "imagery": {"max_items": 2},
    "grid": {"halo": 16},
    "model": {"kind": "synthetic"},
    "cluster": {"n_workers": 2, "threads_per_worker": 1, "memory_limit": "1.5GB", "window": 4},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def demo_workflow(served_world, out: Path, **overrides: Any) -> Workflow:
    """The demo workflow against the served world, fast settings, output in ``out``."""
    over = _merge(FAST, {"imagery": {"stac_url": served_world.stac_url}, "output": {"directory": str(out)}})
    return load_workflow(WORKFLOWS / "demo.yaml", _merge(over, overrides))


def write_yaml(workflow: Workflow, path: Path) -> Path:
    """The workflow as a YAML file (all paths absolute)."""
    path.write_text(yaml.safe_dump(workflow.model_dump(mode="json"), sort_keys=False))
    return path


def store_arrays(store: Path) -> dict[str, np.ndarray]:
    """The raw uint8 layers of a store."""
    import zarr

    g = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(g[name][...]) for name in LAYERS}


def write_counts(workflow: Workflow) -> dict[str, int]:
    """Completed writes per chunk, from the write log."""
    counts: dict[str, int] = {}
    for f in RunLayout.of(workflow).write_log.glob("*.json"):
        cid = f.name.split("--")[0]
        counts[cid] = counts.get(cid, 0) + 1
    return counts


class Recorder(RunProgress):
    """Keeps every callback of a run, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def started(self, start: RunStart) -> None:
        self.events.append(("started", start))

    def chunk_finished(self, report: ChunkReport) -> None:
        self.events.append(("chunk_finished", report))

    def finished(self, summary: RunSummary) -> None:
        self.events.append(("finished", summary))


@pytest.fixture(scope="module")
def baseline_progress() -> Recorder:
    """The callbacks :func:`baseline`'s run made."""
    return Recorder()


@pytest.fixture(scope="module")
def baseline(served_world, client, baseline_progress, tmp_path_factory):
    """An uninterrupted run: (workflow, summary, raw arrays)."""
    out = tmp_path_factory.mktemp("baseline")
    wf = demo_workflow(served_world, out)
    summary = run_workflow(wf, client=client, progress=baseline_progress)
    return wf, summary, store_arrays(RunLayout.of(wf).store)


def test_run_fills_every_chunk(baseline):
    wf, summary, arrays = baseline
    assert sorted(summary.done) == ["r0146c0492", "r0146c0493", "r0147c0492", "r0147c0493"]
    assert not summary.failed
    with Manifest(RunLayout.of(wf).manifest) as m:
        rows = m.rows()
        assert [r.status for r in rows] == ["done"] * 4
        assert all(r.checksum and r.items and r.covariates and r.attempts == 1 for r in rows)
    # every chunk written once, predictor loaded once per worker process
    assert write_counts(wf) == {r.id: 1 for r in rows}
    assert all(r["predictor_loads"] == 1 for r in summary.results)
    # the 10 km region (1000 x 1000 px) is filled; the rest of the tile stays absent (no data, no chunk files)
    pf = arrays["permafrost_probability"]
    g = wf.grid
    xr_ds = xr.open_zarr(RunLayout.of(wf).store, mask_and_scale=False)
    x = xr_ds["x"].values
    y = xr_ds["y"].values
    cols = np.flatnonzero((x > 260_000) & (x < 270_000))
    rows_ = np.flatnonzero((y > 1_660_000) & (y < 1_670_000))
    region = pf[rows_[0]:rows_[-1] + 1, cols[0]:cols[-1] + 1]
    assert region.shape == (1000, 1000)
    assert (region != NODATA).mean() > 0.9  # the world's always-cloudy patch is no data
    outside = pf.copy()
    outside[rows_[0]:rows_[-1] + 1, cols[0]:cols[-1] + 1] = NODATA
    assert (outside == NODATA).all()
    n_chunk_files = sum(1 for p in (RunLayout.of(wf).store / "permafrost_probability").rglob("*") if p.is_file()
                        and p.name not in ("zarr.json", ".zarray", ".zattrs"))
    assert n_chunk_files == (1000 // g.zarr_chunk) ** 2
    assert arrays["taxonomy_probability"].shape[0] == 7
    cls = arrays["taxonomy_class"]
    assert set(np.unique(cls)) <= set(range(7)) | {NODATA}


def test_input_quality_layers_are_written_for_every_predictor(baseline):
    """valid_observations / masked_fraction come from the composite's counts (here the synthetic predictor):
    where the probability is no data (the world's always-cloudy patch) no observation was valid and all that were
    observed were masked; elsewhere at least one was used. The predictor's own uncertainty layers are no data."""
    wf, _, arrays = baseline
    pf, n_valid, masked = arrays["permafrost_probability"], arrays["valid_observations"], arrays["masked_fraction"]
    mapped = pf != NODATA
    assert mapped.sum() > 0.9 * 1000 * 1000 and (n_valid[mapped] >= 1).all() and (n_valid[mapped] <= 2).all()
    assert (masked[mapped] < 250).all() and (masked[mapped] >= 0).all()
    cloudy = (pf == NODATA) & (n_valid != NODATA)
    assert cloudy.sum() > 1000 and (n_valid[cloudy] == 0).all() and (masked[cloudy] == 250).all()
    assert (n_valid[n_valid != NODATA] <= 2).all()  # imagery.max_items: 2
    for name in ("permafrost_spread", "taxonomy_entropy", "taxonomy_aoa_index", "taxonomy_aoa", "taxonomy_set"):
        assert (arrays[name] == NODATA).all(), name


def test_run_reports_every_chunk_through_the_callbacks(baseline, baseline_progress):
    wf, summary, _ = baseline
    kinds = [kind for kind, _ in baseline_progress.events]
    assert kinds == ["started"] + ["chunk_finished"] * 4 + ["finished"]
    start = baseline_progress.events[0][1]
    assert (start.workflow, start.chunks) == ("demo", 4)
    assert start.km2 == pytest.approx(100.0)  # four 5 km chunks
    reports = [event for kind, event in baseline_progress.events if kind == "chunk_finished"]
    assert sorted(r.chunk_id for r in reports) == sorted(summary.done)
    assert [r.chunk_id for r in reports] == summary.done  # reported in the order they were recorded
    with Manifest(RunLayout.of(wf).manifest) as m:
        checksums = {r.id: r.checksum for r in m.rows()}
    for r in reports:
        assert (r.status, r.attempt, r.error) == ("done", 1, None)
        assert r.km2 == pytest.approx(25.0)
        assert r.seconds > 0 and r.seconds >= r.result["predict_s"]
        assert r.result["checksum"] == checksums[r.chunk_id]
    assert baseline_progress.events[-1][1] is summary
    assert summary.todo == 4 and summary.manifest_counts["done"] == 4
    assert sum(summary.manifest_counts.values()) == 4


def test_checksums_match_store(baseline):
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.pipeline.store import MapStore

    wf, _, _ = baseline
    store = MapStore(RunLayout.of(wf).store, AlaskaGrid(wf.grid))
    with Manifest(RunLayout.of(wf).manifest) as m:
        for r in m.rows():
            assert store.checksum(store.grid.chunk_by_id(r.id)) == r.checksum


def test_store_opens_with_crs_and_transform(baseline):
    import rioxarray  # noqa: F401 - registers .rio

    wf, _, arrays = baseline
    ds = xr.open_zarr(RunLayout.of(wf).store)
    pf = ds["permafrost_probability"]
    assert ds.rio.crs.to_epsg() == 3338
    assert pf.rio.crs.to_epsg() == 3338
    t = pf.rio.transform()
    assert (t.a, t.e) == (10.0, -10.0)
    assert t.c == wf.grid.origin_x + ds.attrs["grid_col0"] * 10.0
    assert t.f == wf.grid.origin_y - ds.attrs["grid_row0"] * 10.0
    assert list(ds["class"].values) == ["Andisols", "Entisols", "Gelisols", "Histosols", "Inceptisols",
                                        "Mollisols", "Spodosols"]
    # one GeoBox: what xarray/odc-geo read, what the store reads back from its spatial_ref, the planned tiles
    import odc.geo.xr  # noqa: F401 - registers .odc

    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.pipeline.store import MapStore
    from miso_mapper.plan import make_plan

    grid = AlaskaGrid(wf.grid)
    assert ds.odc.geobox == MapStore(RunLayout.of(wf).store, grid).geobox == grid.tiles_geobox(make_plan(wf).chunks)
    # CF decoding gives probabilities in [0, 1] with NaN for no data
    sub = pf.sel(x=slice(260_000, 270_000), y=slice(1_670_000, 1_660_000)).values
    assert np.nanmin(sub) >= 0 and np.nanmax(sub) <= 1 and np.isnan(sub).any()
    raw = arrays["permafrost_probability"]
    np.testing.assert_allclose(pf.values[raw != NODATA], raw[raw != NODATA] / 250, atol=1e-6)
    for key in ("software_version", "config_hash", "map_config_hash", "imagery_date_range", "created",
                "model_kind"):
        assert ds.attrs[key]
    assert ds.attrs["config_hash"] == wf.config_hash()
    assert ds.attrs["imagery_date_range"] == "2021-07-01/2022-08-31"


def _edge_vs_elsewhere(a: np.ndarray, axis: int, edges: list[int]) -> tuple[float, float]:
    """Mean |difference| between neighbours across chunk edges, and the 95th percentile over other lines."""
    a = np.moveaxis(a.astype(np.float64), axis, 0)
    ok = (a[1:] != NODATA) & (a[:-1] != NODATA)
    d = np.abs(np.diff(a, axis=0))
    per_line = np.array([d[i][ok[i]].mean() if ok[i].any() else np.nan for i in range(d.shape[0])])
    at_edges = float(np.nanmean(per_line[[e - 1 for e in edges]]))
    others = np.delete(per_line, [e - 1 for e in edges])
    return at_edges, float(np.nanpercentile(others, 95))


def test_no_seam_across_chunk_edges(baseline):
    wf, _, arrays = baseline
    ds = xr.open_zarr(RunLayout.of(wf).store, mask_and_scale=False)
    c0 = int(np.flatnonzero(ds["x"].values > 260_000)[0])
    r0 = int(np.flatnonzero(ds["y"].values < 1_670_000)[0])
    n = wf.grid.chunk_size
    for name in ("permafrost_probability", "taxonomy_probability"):
        a = arrays[name]
        a = a[3] if a.ndim == 3 else a
        area = a[r0:r0 + 2 * n, c0:c0 + 2 * n]
        for axis in (0, 1):
            edge, p95 = _edge_vs_elsewhere(area, axis, [n])
            assert edge <= p95, f"{name}: seam across chunk edges (axis {axis}): {edge:.2f} > p95 {p95:.2f}"


def test_resume_after_complete_run_does_nothing(baseline, client):
    wf, _, arrays = baseline
    progress = Recorder()
    summary = run_workflow(wf, resume=True, client=client, progress=progress)
    assert summary.done == [] and summary.skipped == 4 and summary.todo == 0
    assert progress.events == [("finished", summary)]  # nothing started, no chunk reported
    assert all(np.array_equal(arrays[k], v) for k, v in store_arrays(RunLayout.of(wf).store).items())


def test_status_command(baseline, tmp_path, capsys):
    wf, _, _ = baseline
    status_command(write_yaml(wf, tmp_path / "wf.yaml"))
    out = capsys.readouterr().out
    assert "done" in out and "4" in out


def test_worker_killed_midway_resumes_to_same_bytes(served_world, client, baseline, tmp_path):
    _, _, expected = baseline
    wf = demo_workflow(served_world, tmp_path)
    killed: list[int] = []

    class KillABusyWorker(RunProgress):
        """When the first chunk is done, SIGKILL a worker that is still busy."""

        def chunk_finished(self, report: ChunkReport) -> None:
            if killed or report.status != "done":
                return
            busy = [addr for addr, keys in client.processing().items() if keys]
            if not busy:
                return
            pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    summary = run_workflow(wf, client=client, progress=KillABusyWorker())
    assert killed, "no worker was busy when the first chunk finished"
    if summary.failed:  # a worker death that exhausted Dask's retries: the manifest says so; resume finishes
        summary = run_workflow(wf, resume=True, client=client)
    assert not summary.failed
    with Manifest(RunLayout.of(wf).manifest) as m:
        assert [r.status for r in m.rows()] == ["done"] * 4
    assert write_counts(wf) == {cid: 1 for cid in ("r0146c0492", "r0146c0493", "r0147c0492", "r0147c0493")}
    got = store_arrays(RunLayout.of(wf).store)
    assert all(np.array_equal(expected[k], got[k]) for k in LAYERS)
    client.wait_for_workers(2, timeout=60)


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_client_killed_midway_resumes_to_same_bytes(served_world, client, baseline, tmp_path):
    _, _, expected = baseline
    wf = demo_workflow(served_world, tmp_path / "out", cluster={"window": 1})
    path = write_yaml(wf, tmp_path / "wf.yaml")
    code = textwrap.dedent(f"""
        from pathlib import Path
        from miso_mapper.pipeline.commands import run_command
        if __name__ == "__main__":
            run_command(Path({str(path)!r}))
    """)
    script = tmp_path / "client.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 240
        done = 0
        while time.monotonic() < deadline and proc.poll() is None:
            children = _children(proc.pid) or children
            if RunLayout.of(wf).manifest.exists():
                try:
                    with sqlite3.connect(RunLayout.of(wf).manifest, timeout=5) as db:
                        done = db.execute("SELECT COUNT(*) FROM chunks WHERE status = 'done'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 1:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the client finished before it could be killed"
        assert 1 <= done < 4
        children = _children(proc.pid) or children
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gone, alive = psutil.wait_procs(children, timeout=20)
        for p in alive:  # worker processes of the killed client that did not notice their parent's death
            p.kill()
    with Manifest(RunLayout.of(wf).manifest) as m:
        before = {r.id: r.status for r in m.rows()}
    assert "done" in before.values() and set(before.values()) != {"done"}
    wf2 = load_workflow(path)
    # a client killed with SIGKILL cannot release the run lock: the next run names it stale until it is cleared
    with pytest.raises(MisoError, match=f"stale lock .*: pid {proc.pid} is not running on this host"):
        run_workflow(wf2, resume=True, client=client)
    assert unlock(RunLayout.of(wf2), wf2.output.lock_stale_after).pid == proc.pid
    summary = run_workflow(wf2, resume=True, client=client)
    assert not summary.failed
    assert sorted(summary.done + summary.recovered) == sorted(c for c, s in before.items() if s != "done")
    with Manifest(RunLayout.of(wf).manifest) as m:
        assert [r.status for r in m.rows()] == ["done"] * 4
    assert write_counts(wf) == {cid: 1 for cid in before}
    got = store_arrays(RunLayout.of(wf).store)
    assert all(np.array_equal(expected[k], got[k]) for k in LAYERS)


# ---- bad input stops before any work -----------------------------------------------------------------------
def _run_expect_error(wf: Workflow, tmp_path: Path, match: str, **kwargs: Any) -> MisoError:
    path = write_yaml(wf, tmp_path / "bad.yaml")
    with pytest.raises(MisoError, match=match) as info:
        run_command(path, **kwargs)
    assert info.value.exit_code == 1
    return info.value


def test_missing_checkpoint_stops_before_work(served_world, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out", grid={"halo": 175},
                       model={"kind": "miso", "permafrost_checkpoint": str(tmp_path / "nope.safetensors")})
    _run_expect_error(wf, tmp_path, r"model\.permafrost_checkpoint: checkpoint .*nope\.safetensors does not exist")
    assert not (tmp_path / "out").exists()


def test_halo_too_small_for_the_predictor_is_refused_when_the_workflow_loads(served_world, tmp_path):
    with pytest.raises(ConfigError, match="model.predictor: grid.halo is 125 px but the predictor needs at least "
                                          "175 px") as info:
        demo_workflow(served_world, tmp_path / "out", grid={"halo": 125},
                      model={"kind": "miso", "size": "tiny", "permafrost_checkpoint": "pf.safetensors"})
    assert info.value.exit_code == 2
    assert not (tmp_path / "out").exists()


def test_empty_region_stops_before_work(served_world, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out", region={"bbox": [5e6, 5e6, 5.01e6, 5.01e6]})
    _run_expect_error(wf, tmp_path, "outside the grid|contains no chunk of the grid")
    assert not (tmp_path / "out").exists()


def test_stac_api_down_stops_before_work(served_world, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out", imagery={"stac_url": "http://127.0.0.1:9/"})
    _run_expect_error(wf, tmp_path, "STAC API .* is unreachable")
    assert not (tmp_path / "out" / "maps.zarr").exists()


def test_store_of_another_config_stops_before_work(served_world, baseline, tmp_path):
    wf, _, arrays = baseline
    other = demo_workflow(served_world, wf.output.directory, model={"synthetic": {"seed": 1}})
    for resume in (False, True):
        _run_expect_error(other, tmp_path, "was made by another config", resume=resume)
    assert all(np.array_equal(arrays[k], v) for k, v in store_arrays(RunLayout.of(wf).store).items())


def test_existing_store_needs_overwrite(served_world, client, baseline, tmp_path):
    wf0, _, arrays = baseline
    out = tmp_path / "copy"
    shutil.copytree(wf0.output.directory, out)
    wf = demo_workflow(served_world, out)
    _run_expect_error(wf, tmp_path, "already exists: use --resume .* or --overwrite")
    assert all(np.array_equal(arrays[k], v) for k, v in store_arrays(RunLayout.of(wf).store).items())
    # --overwrite replaces it: a new store in which only the chunk run now is written
    summary = run_workflow(wf, overwrite=True, only=["r0146c0492"], client=client)
    assert summary.done == ["r0146c0492"]
    got = store_arrays(RunLayout.of(wf).store)
    assert (got["permafrost_probability"] != NODATA).sum() < (arrays["permafrost_probability"] != NODATA).sum()
    with Manifest(RunLayout.of(wf).manifest) as m:
        assert m.counts()["done"] == 1 and m.counts()["pending"] == 3
    assert write_counts(wf) == {"r0146c0492": 1}


def test_only_and_max_chunks_validate(served_world, baseline, tmp_path):
    wf, _, _ = baseline
    path = write_yaml(wf, tmp_path / "wf.yaml")
    with pytest.raises(MisoError, match="not in the planned region"):
        run_command(path, resume=True, only=["r0001c0001"])
    with pytest.raises(MisoError, match="not a chunk id"):
        run_command(path, resume=True, only=["bogus"])
    with pytest.raises(MisoError, match="at least 1"):
        run_command(path, resume=True, max_chunks=0)
