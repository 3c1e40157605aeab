"""The Zarr store and the run manifest without a cluster: layout, alignment, GDAL, redaction."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import xarray as xr

from miso_mapper.config import load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.pipeline.manifest import Manifest, one_line_error
from miso_mapper.pipeline.store import NODATA, MapStore, create_store, encode_prediction, to_uint8
from miso_mapper.plan import make_plan

from .helpers import WORKFLOWS

GDAL_VERSION = tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2])


def _workflow(tmp_path, fmt=3):
    return load_workflow(WORKFLOWS / "demo.yaml", {"imagery": {"stac_url": "http://127.0.0.1:9/"},
                                                   "output": {"directory": str(tmp_path), "zarr_format": fmt},
                                                   "model": {"kind": "synthetic"}})


def _store(tmp_path, fmt=3):
    wf = _workflow(tmp_path, fmt)
    plan = make_plan(wf)
    return wf, plan, create_store(wf.output.store, wf, plan.chunks, {"map_config_hash": "x"})


def _layers(value=100):
    return (np.full((500, 500), value, np.uint8), np.full((7, 500, 500), 30, np.uint8),
            np.full((500, 500), 2, np.uint8))


def test_uint8_scaling():
    p = np.array([0.0, 0.5, 1.0, np.nan, 0.0021, 1.2, -0.1], np.float32)
    assert to_uint8(p).tolist() == [0, 125, 250, 255, 1, 250, 0]
    import xarray as xr

    tx = np.full((7, 1, 2), 1 / 7, np.float32)
    tx[3, 0, 0] = 0.5
    tx[:, 0, 1] = np.nan
    pred = xr.Dataset({"permafrost_probability": (("y", "x"), np.array([[0.2, np.nan]], np.float32)),
                       "taxonomy_probability": (("class", "y", "x"), tx)},
                      coords={"class": ["Andisols", "Entisols", "Gelisols", "Histosols", "Inceptisols",
                                        "Mollisols", "Spodosols"]})
    pf, t, cls = encode_prediction(pred)
    assert pf.tolist() == [[50, 255]] and cls.tolist() == [[3, 255]] and t[:, 0, 1].tolist() == [255] * 7


def test_store_extent_is_whole_tiles_and_sparse(tmp_path):
    wf, plan, store = _store(tmp_path)
    assert store.extent.height == store.extent.width == wf.grid.tile_size
    assert store.extent.row0 % wf.grid.tile_size == 0 and store.extent.col0 % wf.grid.tile_size == 0
    # nothing but metadata: no chunk files before a write
    assert not [p for p in (wf.output.store / "permafrost_probability").rglob("c/*") if p.is_file()]
    assert (store.read_chunk(plan.chunks[0])[0] == NODATA).all()
    with pytest.raises(MisoError, match="already exists"):
        create_store(wf.output.store, wf, plan.chunks, {})


def test_write_is_aligned_and_checksummed(tmp_path):
    wf, plan, store = _store(tmp_path)
    chunk = plan.chunks[0]
    checksum = store.write_chunk(chunk, *_layers())
    assert checksum == store.checksum(chunk)
    assert (store.read_chunk(chunk)[0] == 100).all()
    assert (store.read_chunk(plan.chunks[1])[0] == NODATA).all()  # the neighbour is untouched
    with pytest.raises(MisoError, match="unaligned"):
        store.grid.check_aligned(slice(10, 510), slice(0, 500))
    with pytest.raises(MisoError, match="shape"):
        store.write_chunk(chunk, np.zeros((10, 10), np.uint8), *_layers()[1:])
    far = store.grid.chunk(0, 0)
    with pytest.raises(MisoError, match="outside the store"):
        store.write_chunk(far, *_layers())
    reopened = MapStore(wf.output.store, AlaskaGrid(wf.grid))
    assert reopened.uuid == store.uuid and reopened.checksum(chunk) == checksum


@pytest.mark.parametrize("fmt", [2, 3])
def test_xarray_rioxarray_see_crs(tmp_path, fmt):
    import rioxarray  # noqa: F401

    wf, plan, store = _store(tmp_path, fmt)
    store.write_chunk(plan.chunks[0], *_layers())
    ds = xr.open_zarr(wf.output.store)
    assert ds["permafrost_probability"].rio.crs.to_epsg() == 3338
    t = ds["permafrost_probability"].rio.transform()
    assert (t.a, t.e, t.c, t.f) == (10.0, -10.0, 250_000.0, 1_700_000.0)
    assert ds.attrs["map_config_hash"] == "x"


def _gdal_check(path):
    with rasterio.open(f'ZARR:"{path}":/permafrost_probability') as src:
        assert src.crs.to_epsg() == 3338
        assert tuple(src.transform)[:6] == (10.0, 0.0, 250_000.0, 0.0, -10.0, 1_700_000.0)
        assert src.nodata == NODATA
        assert src.scales[0] == pytest.approx(0.004)
        a = src.read(1)
    assert set(np.unique(a)) == {100, NODATA}


def test_gdal_opens_zarr_v2_store(tmp_path):
    wf, plan, store = _store(tmp_path, 2)
    store.write_chunk(plan.chunks[0], *_layers())
    _gdal_check(wf.output.store)


@pytest.mark.skipif(GDAL_VERSION < (3, 11), reason=f"GDAL {rasterio.__gdal_version__} < 3.11 cannot read zarr-python "
                    "3's v3 arrays (codec 'bytes', OSGeo/gdal#11787); use output.zarr_format: 2 for such GDALs")
def test_gdal_opens_zarr_v3_store(tmp_path):
    wf, plan, store = _store(tmp_path, 3)
    store.write_chunk(plan.chunks[0], *_layers())
    _gdal_check(wf.output.store)


def test_manifest_rows_and_redaction(tmp_path):
    wf, plan, _ = _store(tmp_path)
    with Manifest(wf.output.manifest) as m:
        m.add_chunks(plan.chunks)
        m.add_chunks(plan.chunks)  # idempotent
        assert m.counts() == {"pending": 4, "running": 0, "done": 0, "failed": 0}
        cid = plan.chunks[0].id
        m.mark_running(cid)
        m.mark_failed(cid, RuntimeError("GET https://user:pw@host/a.tif?X-Amz-Signature=abc&token=s3cr3t\nboom"),
                      final=False)
        row = m.row(cid)
        assert row.status == "pending" and row.attempts == 1
        assert "s3cr3t" not in row.last_error and "pw" not in row.last_error and "\n" not in row.last_error
        assert "https://host/a.tif" in row.last_error
        m.mark_running(cid)
        assert m.reset_interrupted() == 1
        m.mark_running(cid)
        m.mark_done(cid, "abc", "w:1", 1.0, 2.0, 0.5, 3.5)
        assert m.row(cid).status == "done" and m.row(cid).attempts == 3 and m.row(cid).last_error is None
    assert one_line_error("x" * 500).endswith("…") and len(one_line_error("x" * 500)) == 300
