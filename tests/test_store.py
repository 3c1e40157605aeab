"""The Zarr store and the run manifest without a cluster: layout, alignment, GDAL, redaction."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import odc.geo.xr  # noqa: F401 - the .odc accessor
import pytest
import rasterio
import xarray as xr
import zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid, describe_geobox
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest, one_line_error
from miso_mapper.pipeline.store import (
    LAYERS,
    NODATA,
    MapStore,
    create_store,
    encode_prediction,
    permafrost_class,
    read_decision_threshold,
    stored_layers,
    threshold_code,
    to_uint8,
)
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
    return wf, plan, create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "x"})


def _prediction(chunk, pf=0.4, geobox=None):
    """A predictor's output for ``chunk``: permafrost ``pf`` everywhere (100 stored at 0.4), Gelisols the most
    probable order (0.4 -> 100, the other orders 0.1 -> 25); on ``geobox`` (default: the chunk's interior)."""
    geobox = geobox or chunk.geobox
    tx = np.full((7, *geobox.shape), 0.1, np.float32)
    tx[2] = 0.4
    return xr.Dataset({"permafrost_probability": (("y", "x"), np.full(geobox.shape, pf, np.float32)),
                       "taxonomy_probability": (("class", "y", "x"), tx)},
                      coords={"class": list(SOIL_ORDERS), **xr_coords(geobox, crs_coord_name="spatial_ref")})


def test_uint8_scaling():
    p = np.array([0.0, 0.5, 1.0, np.nan, 0.0021, 1.2, -0.1], np.float32)
    assert to_uint8(p).tolist() == [0, 125, 250, 255, 1, 250, 0]
    tx = np.full((7, 1, 2), 1 / 7, np.float32)
    tx[3, 0, 0] = 0.5
    tx[:, 0, 1] = np.nan
    pred = xr.Dataset({"permafrost_probability": (("y", "x"), np.array([[0.2, np.nan]], np.float32)),
                       "taxonomy_probability": (("class", "y", "x"), tx)},
                      coords={"class": ["Andisols", "Entisols", "Gelisols", "Histosols", "Inceptisols",
                                        "Mollisols", "Spodosols"], "y": [5.0], "x": [5.0, 15.0]})
    enc = encode_prediction(pred)
    assert enc["permafrost_probability"].values.tolist() == [[50, 255]]
    assert enc["taxonomy_class"].values.tolist() == [[3, 255]]
    assert enc["taxonomy_probability"].values[:, 0, 1].tolist() == [255] * 7
    assert all(enc[name].dtype == np.uint8 for name in LAYERS)
    np.testing.assert_array_equal(enc["x"].values, [5.0, 15.0])  # on the prediction's own coordinates


def test_permafrost_class_at_the_stores_precision():
    # the class is "stored x 0.004 >= threshold": 0.3 -> 75, 0.5 -> 125 (the report's former fixed cut), 0.302 -> 76
    assert [threshold_code(t) for t in (0.0, 0.3, 0.302, 0.5, 0.9, 1.0)] == [0, 75, 76, 125, 225, 250]
    stored = np.array([0, 74, 75, 76, 124, 125, 250, NODATA], np.uint8)
    np.testing.assert_array_equal(permafrost_class(stored, 0.3), [0, 0, 1, 1, 1, 1, 1, NODATA])
    np.testing.assert_array_equal(permafrost_class(stored, 0.5), [0, 0, 0, 0, 0, 1, 1, NODATA])
    # every float probability >= 0.3 is a class-1 pixel once stored
    p = np.linspace(0, 1, 10001, dtype=np.float32)
    assert permafrost_class(to_uint8(p), 0.3)[p >= 0.3].all()


@pytest.mark.parametrize("threshold", [0.3, None])
def test_store_records_the_decision_threshold(tmp_path, threshold):
    wf = _workflow(tmp_path)
    plan = make_plan(wf)
    extra = {} if threshold is None else {"decision_threshold": threshold}
    create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "x"}, **extra)
    attrs = zarr.open_group(str(RunLayout.of(wf).store), mode="r")["permafrost_probability"].attrs
    assert attrs["decision_threshold"] == (threshold or 0.5)
    assert read_decision_threshold(attrs, "here") == (threshold or 0.5)
    assert read_decision_threshold({}, "old store") == 0.5


def test_bad_decision_threshold_is_refused(tmp_path):
    wf = _workflow(tmp_path)
    with pytest.raises(MisoError, match=r"decision threshold 1.5 is not a probability in \[0, 1\]"):
        create_store(RunLayout.of(wf).store, wf, make_plan(wf).chunks, {}, decision_threshold=1.5)
    assert not RunLayout.of(wf).store.exists()
    with pytest.raises(MisoError, match=r"^maps.zarr/permafrost_probability: decision threshold 'x'"):
        read_decision_threshold({"decision_threshold": "x"}, "maps.zarr/permafrost_probability")


def test_store_extent_is_whole_tiles_and_sparse(tmp_path):
    wf, plan, store = _store(tmp_path)
    grid = AlaskaGrid(wf.grid)
    t = wf.grid.tile_size
    assert store.geobox == grid.tiles_geobox(plan.chunks) and store.geobox.shape == (t, t)
    assert store.offset[0] % t == 0 and store.offset[1] % t == 0
    # the on-disk georeferencing is what the store has always written
    assert store.group["spatial_ref"].attrs["GeoTransform"] == "250000.0 10.0 0.0 1700000.0 0.0 -10.0"
    assert (store.attrs["grid_row0"], store.attrs["grid_col0"]) == store.offset == (70_000, 245_000)
    np.testing.assert_array_equal(store.group["x"][:3], [250_005.0, 250_015.0, 250_025.0])
    np.testing.assert_array_equal(store.group["y"][:3], [1_699_995.0, 1_699_985.0, 1_699_975.0])
    # nothing but metadata: no chunk files before a write
    assert not [p for p in (RunLayout.of(wf).store / "permafrost_probability").rglob("c/*") if p.is_file()]
    assert (store.read_chunk(plan.chunks[0])[0] == NODATA).all()
    with pytest.raises(MisoError, match="already exists"):
        create_store(RunLayout.of(wf).store, wf, plan.chunks, {})


def test_write_is_aligned_and_checksummed(tmp_path):
    wf, plan, store = _store(tmp_path)
    chunk = plan.chunks[0]
    checksum = store.write_chunk(chunk, _prediction(chunk))
    assert checksum == store.checksum(chunk)
    pf, tx, cls = store.read_chunk(chunk)
    assert (pf == 100).all() and (cls == 2).all() and (tx[2] == 100).all() and (tx[[0, 1, 3, 4, 5, 6]] == 25).all()
    assert (store.read_chunk(plan.chunks[1])[0] == NODATA).all()  # the neighbour is untouched
    with pytest.raises(MisoError, match="unaligned"):
        store.grid.check_aligned(slice(10, 510), slice(0, 500))
    far = store.grid.chunk(0, 0)
    with pytest.raises(MisoError, match="outside the store"):
        store.write_chunk(far, _prediction(far))
    # chosen bytes go through the same checks
    layers = stored_layers(chunk.geobox, *_layers(7))
    assert store.write_layers(chunk, layers) != checksum and (store.read_chunk(chunk)[0] == 7).all()
    with pytest.raises(MisoError, match="not the chunk's"):
        store.write_layers(plan.chunks[1], layers)
    with pytest.raises(MisoError, match="dtype"):
        store.write_layers(chunk, stored_layers(chunk.geobox, *(a.astype(np.float32) for a in _layers())))
    reopened = MapStore(RunLayout.of(wf).store, AlaskaGrid(wf.grid))
    assert reopened.uuid == store.uuid and reopened.geobox == store.geobox
    assert reopened.checksum(chunk) == store.checksum(chunk)


def _layers(value=100):
    return (np.full((500, 500), value, np.uint8), np.full((7, 500, 500), 30, np.uint8),
            np.full((500, 500), 2, np.uint8))


def _misregistered(chunk):
    """Predictions for ``chunk`` on grids that are not its interior, by name."""
    gb = chunk.geobox
    bare = _prediction(chunk).drop_vars("spatial_ref")
    bare = bare.assign_coords(y=bare["y"].values, x=bare["x"].values)  # coordinates without any CRS
    return {
        "one pixel east": _prediction(chunk, geobox=gb.translate_pix(1, 0)),
        "one pixel south": _prediction(chunk, geobox=gb.translate_pix(0, 1)),
        "half a pixel": _prediction(chunk, geobox=gb.translate_pix(0.5, 0)),
        "other CRS": _prediction(chunk, geobox=GeoBox(gb.shape, gb.affine, "EPSG:3413")),
        "other shape": _prediction(chunk, geobox=gb[:250, :]),
        "halo grid": _prediction(chunk, geobox=chunk.halo_geobox),
        "no CRS": bare,
        "no coordinates": _prediction(chunk).drop_vars(["spatial_ref", "y", "x"]),
    }


def test_misregistered_prediction_is_refused_and_nothing_written(tmp_path):
    wf, plan, store = _store(tmp_path)
    chunk = plan.chunks[0]
    for name, pred in _misregistered(chunk).items():
        with pytest.raises(MisoError) as err:
            store.write_chunk(chunk, pred)
        msg = str(err.value)
        assert "\n" not in msg and f"chunk {chunk.id}" in msg, name
        # both grids are named: the chunk's, and what the prediction brought
        assert "500 x 500 px from x 260000, y 1670000, pixels 10 x -10, EPSG:3338" in msg, name
        found = pred.odc.geobox if {"y", "x"} <= set(pred.dims) else None
        assert describe_geobox(found) in msg.split("the chunk's")[0], name
    assert "x 260005," in describe_geobox(_misregistered(chunk)["half a pixel"].odc.geobox)
    assert "EPSG:3413" in describe_geobox(_misregistered(chunk)["other CRS"].odc.geobox)
    assert describe_geobox(None) == "no georeferencing"
    for pf, tx, cls in [store.read_chunk(ch) for ch in plan.chunks]:
        assert (pf == NODATA).all() and (tx == NODATA).all() and (cls == NODATA).all()
    assert not [p for name in LAYERS for p in (RunLayout.of(wf).store / name).rglob("c/*") if p.is_file()]
    store.write_chunk(chunk, _prediction(chunk))  # the right grid is written
    assert (store.read_chunk(chunk)[0] == 100).all()


def test_store_off_the_workflow_grid_is_refused(tmp_path):
    wf, plan, store = _store(tmp_path)
    shifted = AlaskaGrid(wf.grid.model_copy(update={"origin_x": wf.grid.origin_x + 5.0}))
    with pytest.raises(MisoError, match="not on this workflow's grid.*off the output grid's pixel lattice"):
        MapStore(RunLayout.of(wf).store, shifted)
    # a store opened on a grid whose origin is a whole tile away: its spatial_ref says where it is
    t = wf.grid.tile_size * wf.grid.resolution
    moved = AlaskaGrid(wf.grid.model_copy(update={"origin_x": wf.grid.origin_x - t}))
    assert MapStore(RunLayout.of(wf).store, moved).offset == (store.offset[0], store.offset[1] + wf.grid.tile_size)
    del store.group["spatial_ref"].attrs["GeoTransform"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(RunLayout.of(wf).store))
    with pytest.raises(MisoError, match="no readable CRS and GeoTransform"):
        MapStore(RunLayout.of(wf).store, AlaskaGrid(wf.grid))


@pytest.mark.parametrize("fmt", [2, 3])
def test_xarray_rioxarray_see_crs(tmp_path, fmt):
    import rioxarray  # noqa: F401

    wf, plan, store = _store(tmp_path, fmt)
    store.write_chunk(plan.chunks[0], _prediction(plan.chunks[0]))
    ds = xr.open_zarr(RunLayout.of(wf).store)
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
    with rasterio.open(f'ZARR:"{path}":/permafrost_spread') as src:  # an extra layer: its own CF scale
        assert src.crs.to_epsg() == 3338 and src.nodata == NODATA and src.scales[0] == pytest.approx(0.002)
        assert set(np.unique(src.read(1))) == {25, NODATA}


def _with_spread(chunk):
    """:func:`_prediction` with a permafrost spread of 0.05 (stored 25)."""
    pred = _prediction(chunk)
    return pred.assign(permafrost_spread=pred["permafrost_probability"] * 0 + np.float32(0.05))


def test_gdal_opens_zarr_v2_store(tmp_path):
    wf, plan, store = _store(tmp_path, 2)
    store.write_chunk(plan.chunks[0], _with_spread(plan.chunks[0]))
    _gdal_check(RunLayout.of(wf).store)


def test_default_store_format_opens_in_the_gdal_at_hand(tmp_path):
    """The default ``output.zarr_format`` is the one the users' GDALs read (rasterio's 3.10, Debian's 3.6)."""
    wf = _default_workflow(tmp_path)
    assert wf.output.zarr_format == 2
    plan = make_plan(wf)
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "x"})
    store.write_chunk(plan.chunks[0], _with_spread(plan.chunks[0]))
    _gdal_check(RunLayout.of(wf).store)


def _default_workflow(tmp_path):
    """The demo workflow with ``output.zarr_format`` left at its default."""
    overrides = {"imagery": {"stac_url": "http://127.0.0.1:9/"}, "output": {"directory": str(tmp_path)},
                 "model": {"kind": "synthetic"}}
    return load_workflow(WORKFLOWS / "demo.yaml", overrides)


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="no gdalinfo command (e.g. Debian's gdal-bin) here")
@pytest.mark.parametrize("fmt", [None, 3])
def test_command_line_gdal_reads_the_default_store(tmp_path, fmt):
    """The system GDAL (Debian bookworm: 3.6) reads a store in the default format with its CRS, origin, no data
    and scale; a v3 one only from GDAL 3.11."""
    wf = _workflow(tmp_path, fmt) if fmt else _default_workflow(tmp_path)
    plan = make_plan(wf)
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "x"})
    store.write_chunk(plan.chunks[0], _with_spread(plan.chunks[0]))
    version = subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True).stdout.split()[1]
    proc = subprocess.run(["gdalinfo", f'ZARR:"{RunLayout.of(wf).store}":/permafrost_probability'],
                          capture_output=True, text=True)
    if fmt == 3 and tuple(int(p) for p in version.split(".")[:2]) < (3, 11):
        assert proc.returncode != 0  # the README's table: v3 needs GDAL >= 3.11
        return
    assert proc.returncode == 0, proc.stderr
    assert 'ID["EPSG",3338]' in proc.stdout and "Origin = (250000.0" in proc.stdout
    assert "NoData Value=255" in proc.stdout and "Scale:0.004" in proc.stdout


@pytest.mark.skipif(GDAL_VERSION < (3, 11), reason=f"GDAL {rasterio.__gdal_version__} < 3.11 cannot read zarr-python "
                    "3's v3 arrays (codec 'bytes', OSGeo/gdal#11787); use output.zarr_format: 2 for such GDALs")
def test_gdal_opens_zarr_v3_store(tmp_path):
    wf, plan, store = _store(tmp_path, 3)
    store.write_chunk(plan.chunks[0], _with_spread(plan.chunks[0]))
    _gdal_check(RunLayout.of(wf).store)


def test_manifest_rows_and_redaction(tmp_path):
    wf, plan, _ = _store(tmp_path)
    with Manifest(RunLayout.of(wf).manifest) as m:
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


def test_extra_layers_scaling_aoa_masks_cf_attrs_and_checksum(tmp_path):
    """The uncertainty / quality / AOA / conformal layers: packed as the shared table says, the AOA masks derived
    from the float index and the thresholds recorded at creation, CF attributes that xarray decodes, and every
    layer in the chunk checksum."""
    from miso_mapper.pipeline.extra_layers import EXTRA_LAYERS

    wf = _workflow(tmp_path)
    plan = make_plan(wf)
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "x"},
                         aoa_thresholds={"taxonomy": 0.8, "permafrost": None})
    assert store.extra_layers == tuple(layer.name for layer in EXTRA_LAYERS)
    assert store.aoa_thresholds == {"taxonomy": 0.8}
    chunk = plan.chunks[0]
    pred = _prediction(chunk)
    col = np.linspace(0, 1, 500, dtype=np.float32)[None].repeat(500, 0)
    col[:, 0] = np.nan
    pred = pred.assign({
        "permafrost_spread": (("y", "x"), col * 0.3), "taxonomy_entropy": (("y", "x"), col),
        "taxonomy_aoa_index": (("y", "x"), col * 8), "taxonomy_set": (("y", "x"), np.where(col > 0.5, 5.0, 4.0)),
        "valid_observations": (("y", "x"), np.full((500, 500), 300, np.float32)),
        "masked_fraction": (("y", "x"), col),
        "permafrost_aoa_index": (("y", "x"), col),  # a permafrost index without a threshold: mask stays no data
    })
    before = store.write_chunk(chunk, _prediction(chunk))
    checksum = store.write_chunk(chunk, pred)
    assert checksum != before and checksum == store.checksum(chunk)
    got = store.read_extra(chunk)
    assert got["permafrost_spread"][0, [0, 1, 499]].tolist() == [NODATA, round(0.3 / 499 * 500), 150]
    assert got["taxonomy_entropy"][0, [0, 499]].tolist() == [NODATA, 250]
    assert got["masked_fraction"][0, 250] == round(250 / 499 * 250)
    assert (got["valid_observations"] == 254).all()  # capped
    di = col[0] * 8
    assert got["taxonomy_aoa_index"][0, -1] == 254 and got["taxonomy_aoa_index"][0, 10] == round(di[10] / 0.02)
    np.testing.assert_array_equal(got["taxonomy_aoa"][0, 1:], (di[1:] <= 0.8).astype(np.uint8))
    assert got["taxonomy_aoa"][0, 0] == NODATA and (got["permafrost_aoa"] == NODATA).all()
    assert set(np.unique(got["taxonomy_set"])) == {4, 5}
    assert (got["taxonomy_spread"] == NODATA).all()  # absent from the prediction: no data
    ds = xr.open_zarr(RunLayout.of(wf).store)
    assert ds["taxonomy_aoa"].attrs["aoa_threshold"] == 0.8 and "aoa_threshold" not in ds["permafrost_aoa"].attrs
    assert ds["taxonomy_aoa"].attrs["flag_meanings"] == "outside inside"
    raw = zarr.open_group(str(RunLayout.of(wf).store), mode="r")
    assert raw["permafrost_spread"].attrs["scale_factor"] == pytest.approx(0.002)
    lr, lc = store.region(chunk)
    region = ds["taxonomy_entropy"].isel(y=lr.start, x=lc).values
    assert np.isnan(region[0]) and region[499] == pytest.approx(1.0)  # CF-decoded
    with pytest.raises(MisoError, match="area-of-applicability threshold -1"):
        create_store(tmp_path / "other.zarr", wf, plan.chunks, {}, aoa_thresholds={"taxonomy": -1})


def test_store_made_before_the_extra_layers_still_takes_writes(tmp_path):
    """A store without the extra arrays (made by an earlier version): writes and checksums cover its own layers."""
    from miso_mapper.pipeline.extra_layers import EXTRA_LAYERS
    from miso_mapper.pipeline.store import checksum_arrays

    wf, plan, store = _store(tmp_path, 2)
    for layer in EXTRA_LAYERS:
        del store.group[layer.name]
    old = MapStore(RunLayout.of(wf).store, AlaskaGrid(wf.grid))
    assert old.extra_layers == () and old.read_extra(plan.chunks[0]) == {}
    checksum = old.write_chunk(plan.chunks[0], _with_spread(plan.chunks[0]))
    assert checksum == checksum_arrays(*old.read_chunk(plan.chunks[0]))
    assert not (RunLayout.of(wf).store / "permafrost_spread").exists()
