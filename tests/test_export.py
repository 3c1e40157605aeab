"""The export stage on a small synthetic store (no imagery, no model): COGs, VRTs, overviews, STAC, CLI.

The grid is shrunk to 500 px tiles (chunks 250 px, Zarr chunks 125 px, COG blocks 128 px, overview 50 m =
5 px) over three tiles of which two hold data; one chunk of the second tile is never written (sparse).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import yaml
import zarr
from rio_cogeo.cogeo import cog_validate
from typer.testing import CliRunner

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import load_workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.export import export_workflow
from miso_mapper.export.layers import LAYERS as EXPORTED
from miso_mapper.export.layers import SOIL_ORDER_COLOURS
from miso_mapper.export.run import overview_factor
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.extra_layers import EXTRA_LAYERS
from miso_mapper.pipeline.store import create_store, stored_layers
from miso_mapper.plan import make_plan

from .helpers import WORKFLOWS

TILES = ["AK005H493V148", "AK005H494V148"]
EMPTY_TILE = "AK005H495V148"
LAYER_NAMES = ("permafrost_probability", "taxonomy_class", "taxonomy_probability")
CHECKPOINTS = {"permafrost": "a" * 64, "taxonomy": "b" * 64}
OVERRIDES = {
    "imagery": {"stac_url": "http://127.0.0.1:9/"},
    "model": {"kind": "synthetic"},
    "grid": {"tile_size": 500, "chunk_size": 250, "zarr_chunk": 125, "tiles_x": 740, "tiles_y": 480,
             "tile_prefix": "AK005"},
    "region": {"bbox": [260000, 1660000, 275000, 1665000]},
    "cluster": {"n_workers": 1},
    "export": {"blocksize": 128, "overview_resolution": 50, "compress": "zstd"},
}


def _overrides(out: Path, fmt: int = 2, products: Path | None = None) -> dict:
    over = {k: dict(v) for k, v in OVERRIDES.items()}
    over["output"] = {"directory": str(out), "zarr_format": fmt}
    if products is not None:
        over["export"]["directory"] = str(products)
    return over


def _workflow(out: Path, fmt: int = 2, products: Path | None = None):
    return load_workflow(WORKFLOWS / "demo.yaml", _overrides(out, fmt, products))


def _layers(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic layers of one 250 px chunk: noisy probabilities, blocky classes, no-data patches."""
    rng = np.random.default_rng(seed)
    pf = rng.integers(0, 251, (250, 250)).astype(np.uint8)
    tx = rng.integers(0, 251, (7, 250, 250)).astype(np.uint8)
    coarse = rng.integers(0, 7, (25, 25))
    cls = np.kron(coarse, np.ones((10, 10), int)).astype(np.uint8)
    flip = rng.random((250, 250)) < 0.3
    cls[flip] = rng.integers(0, 7, int(flip.sum()))
    for a in (pf, cls, tx):
        a[..., 3:17, 40:61] = 255  # a hole of no data straddling overview cells
    return pf, tx, cls


#: The extra layers :func:`make_store` writes (the others stay no data, as when their source is absent).
EXTRA_WRITTEN = ("permafrost_spread", "valid_observations", "taxonomy_aoa", "taxonomy_set")


def _extra(seed: int) -> dict[str, np.ndarray]:
    """Extra layers of one chunk: a noisy spread, counts, a blocky 0/1 AOA mask and conformal sets."""
    rng = np.random.default_rng(seed + 100)
    aoa = np.kron(rng.integers(0, 2, (25, 25)), np.ones((10, 10), int)).astype(np.uint8)
    out = {"permafrost_spread": rng.integers(0, 251, (250, 250)).astype(np.uint8),
           "valid_observations": rng.integers(0, 30, (250, 250)).astype(np.uint8), "taxonomy_aoa": aoa,
           "taxonomy_set": rng.choice([1, 4, 5, 20, 127], (250, 250)).astype(np.uint8)}
    for a in out.values():
        a[3:17, 40:61] = 255
    return out


def make_store(out: Path, fmt: int = 2, products: Path | None = None, threshold: float = 0.5):
    """A store over three 500 px tiles: TILES written (one chunk left out), EMPTY_TILE never written; its
    permafrost decision threshold is ``threshold``."""
    wf = _workflow(out, fmt, products)
    plan = make_plan(wf)
    assert plan.tiles == [*TILES, EMPTY_TILE]
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "cafe", "model_kind": "miso",
                                                            "model_checkpoints": CHECKPOINTS, "workflow": "demo"},
                         decision_threshold=threshold)
    written = [ch for ch in plan.chunks if ch.tile in TILES][:-1]
    for i, ch in enumerate(written):
        store.write_layers(ch, stored_layers(ch.geobox, *_layers(i), _extra(i)))
    return wf


def _zarr(wf, name: str) -> np.ndarray:
    return np.asarray(zarr.open_group(str(RunLayout.of(wf).store), mode="r")[name][:])


def _tile_slices(j: int) -> tuple[slice, slice]:
    return slice(0, 500), slice(500 * j, 500 * (j + 1))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _avg(a: np.ndarray, f: int) -> np.ndarray:
    """Independent mean of valid values over f x f blocks, rounded half up; 255 where none."""
    *lead, h, w = a.shape
    m = np.ma.masked_equal(a.reshape(*lead, h // f, f, w // f, f).astype(float), 255)
    mean = m.mean(axis=(-3, -1))
    return np.where(np.ma.getmaskarray(mean), 255, np.floor(mean.filled(0) + 0.5)).astype(np.uint8)


def _mode(a: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent f x f block mode of classes 0..6 and where it is unique (ties excluded)."""
    h, w = a.shape
    b = a.reshape(h // f, f, w // f, f).swapaxes(1, 2).reshape(h // f, w // f, f * f)
    counts = np.stack([(b == k).sum(-1) for k in range(7)], -1)
    top = counts.max(-1)
    mode = np.where(top > 0, counts.argmax(-1), 255).astype(np.uint8)
    return mode, (counts == top[..., None]).sum(-1) == 1


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    wf = make_store(out)
    return wf, export_workflow(wf)


def test_result_lists_files_and_tiles(exported):
    wf, res = exported
    assert res.tiles == TILES and res.empty_tiles == [EMPTY_TILE]
    assert set(res.tile_seconds) == set(TILES) and all(s > 0 for s in res.tile_seconds.values())
    assert res.products == wf.output.directory / "products"  # the path on disk did not move
    on_disk = {p for p in res.products.rglob("*") if p.is_file()}
    assert on_disk == set(res.files)  # every file reported, nothing else (no temp file) left
    assert not [p for p in res.products.rglob(".*")]
    for layer in LAYER_NAMES:
        assert not (res.products / "cogs" / layer / f"{EMPTY_TILE}.tif").exists()


def test_cogs_are_valid_and_equal_the_store(exported):
    wf, res = exported
    for layer in LAYER_NAMES:
        store = _zarr(wf, layer)
        for j, tile in enumerate(TILES):
            path = res.products / "cogs" / layer / f"{tile}.tif"
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, errors
            rows, cols = _tile_slices(j)
            with rasterio.open(path) as src:
                assert src.crs.to_epsg() == 3338 and src.dtypes[0] == "uint8" and src.nodata == 255
                assert tuple(src.transform)[:6] == (10.0, 0.0, 260000.0 + 5000 * j, 0.0, -10.0, 1665000.0)
                assert src.block_shapes[0] == (128, 128) and src.overviews(1) == [2, 4]
                assert src.compression.name == "zstd"
                assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"
                assert src.tags()["MISO_STORE_UUID"] == zarr.open_group(str(RunLayout.of(wf).store)).attrs["store_uuid"]
                data = src.read()
                if layer == "taxonomy_probability":
                    assert src.count == 7 and src.descriptions == tuple(SOIL_ORDERS)
                    np.testing.assert_array_equal(data, store[:, rows, cols])
                else:
                    assert src.count == 1
                    np.testing.assert_array_equal(data[0], store[rows, cols])
                if layer == "taxonomy_class":
                    assert src.scales == (1.0,) and src.offsets == (0.0,)
                    cmap = src.colormap(1)
                    for i, name in enumerate(SOIL_ORDERS):
                        assert bytes(cmap[i][:3]).hex().upper() == SOIL_ORDER_COLOURS[name] and cmap[i][3] == 255
                else:
                    assert src.scales == (0.004,) * src.count and src.offsets == (0.0,) * src.count
        assert (store[:, 1000:] == 255).all() if store.ndim == 2 else (store[:, :, 1000:] == 255).all()


def test_extra_layers_are_cogs_vrts_and_stac_assets_with_their_scale(exported):
    """Every uncertainty / quality / AOA / conformal layer: a valid COG equal to the store (all no data when
    never written), its GDAL scale the store's, AOA masks and sets as classes, a VRT, a described STAC asset."""
    from pystac.extensions.raster import RasterExtension

    wf, res = exported
    scales = {"permafrost_spread": 0.002, "taxonomy_spread": 0.002, "taxonomy_entropy": 0.004,
              "masked_fraction": 0.004, "permafrost_aoa_index": 0.02, "taxonomy_aoa_index": 0.02}
    for layer in EXTRA_LAYERS:
        store = _zarr(wf, layer.name)
        assert (store[:, :1000] != 255).any() == (layer.name in EXTRA_WRITTEN), layer.name
        for j, tile in enumerate(TILES):
            path = res.products / "cogs" / layer.name / f"{tile}.tif"
            valid, errors, _ = cog_validate(str(path), quiet=True)
            assert valid, (layer.name, errors)
            with rasterio.open(path) as src:
                assert src.nodata == 255 and src.scales == (scales.get(layer.name, 1.0),)
                np.testing.assert_array_equal(src.read(1), store[_tile_slices(j)])
                if layer.name == "taxonomy_aoa":
                    assert bytes(src.colormap(1)[1][:3]).hex().upper() == "1A9850"
        with rasterio.open(res.mosaics[layer.name]) as src:
            np.testing.assert_array_equal(src.read(1), store[:, :1000])
        assert cog_validate(str(res.overviews[layer.name]), quiet=True)[0]
    import xml.etree.ElementTree as ET

    sidecar = res.products / "cogs" / "taxonomy_set" / f"{TILES[0]}.tif.aux.xml"
    names = [c.text for c in ET.parse(sidecar).getroot().find("PAMRasterBand[@band='1']").find("CategoryNames")]
    assert len(names) == 128 and names[0] == "empty" and names[5] == "Andisols+Gelisols"
    item = next(pystac.Collection.from_file(str(res.stac)).get_items(recursive=True))
    asset = item.assets["permafrost_spread"]
    assert RasterExtension.ext(asset).bands[0].scale == 0.002 and "standard deviation" in asset.title


def test_class_category_names_sidecar(exported):
    import xml.etree.ElementTree as ET

    _, res = exported
    for path in [res.products / "cogs" / "taxonomy_class" / f"{t}.tif" for t in TILES] + [
            res.products / "overview" / "taxonomy_class.tif"]:
        root = ET.parse(path.with_name(path.name + ".aux.xml")).getroot()
        band = root.find("PAMRasterBand[@band='1']")
        assert [c.text for c in band.find("CategoryNames")] == list(SOIL_ORDERS)


def test_overviews_average_probabilities_mode_classes(exported):
    wf, res = exported
    for layer in LAYER_NAMES:
        store = _zarr(wf, layer)
        for j, tile in enumerate(TILES):
            rows, cols = _tile_slices(j)
            with rasterio.open(res.products / "cogs" / layer / f"{tile}.tif", overview_level=0) as ov:
                level = ov.read()
            assert level.shape[-2:] == (250, 250)
            if layer == "taxonomy_class":
                mode, unique = _mode(store[rows, cols], 2)
                np.testing.assert_array_equal(level[0][unique], mode[unique])
                assert unique.mean() > 0.5
            elif layer == "taxonomy_probability":
                np.testing.assert_array_equal(level, _avg(store[:, rows, cols], 2))
            else:
                np.testing.assert_array_equal(level[0], _avg(store[rows, cols], 2))


def test_vrt_mosaic_equals_store(exported):
    wf, res = exported
    for layer in LAYER_NAMES:
        store = _zarr(wf, layer)
        with rasterio.open(res.mosaics[layer]) as src:
            assert src.crs.to_epsg() == 3338 and src.nodata == 255
            assert tuple(src.transform)[:6] == (10.0, 0.0, 260000.0, 0.0, -10.0, 1665000.0)
            assert (src.height, src.width) == (500, 1000)
            data = src.read()
            if layer == "taxonomy_probability":
                assert src.descriptions == tuple(SOIL_ORDERS) and src.scales == (0.004,) * 7
                np.testing.assert_array_equal(data, store[:, :, :1000])
            else:
                np.testing.assert_array_equal(data[0], store[:, :1000])
            if layer == "taxonomy_class":
                assert src.colormap(1)[2][:3] == (0x6F, 0xA8, 0xDC)
            if layer == "permafrost_probability":
                assert src.scales == (0.004,) and src.offsets == (0.0,)
                assert src.overviews(1) == [2, 4]  # the tiles' internal overviews, seen through the VRT


def test_statewide_overview(exported):
    wf, res = exported
    for layer in LAYER_NAMES:
        path = res.overviews[layer]
        assert cog_validate(str(path), quiet=True)[0]
        store = _zarr(wf, layer)
        with rasterio.open(path) as src:
            assert (src.height, src.width) == (100, 200) and src.nodata == 255
            assert tuple(src.transform)[:6] == (50.0, 0.0, 260000.0, 0.0, -50.0, 1665000.0)
            data = src.read()
        if layer == "taxonomy_class":
            mode, unique = _mode(store[:, :1000], 5)
            np.testing.assert_array_equal(data[0][unique], mode[unique])
        elif layer == "taxonomy_probability":
            np.testing.assert_array_equal(data, _avg(store[:, :, :1000], 5))
        else:
            np.testing.assert_array_equal(data[0], _avg(store[:, :1000], 5))
            assert (data[0, 50:, 150:] == 255).all()  # the chunk never written


def test_stac_collection_reads_back(exported):
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import RasterExtension

    wf, res = exported
    collection = pystac.Collection.from_file(str(res.stac))
    items = list(collection.get_items(recursive=True))
    assert sorted(i.id for i in items) == TILES
    assert collection.get_root() is collection
    assert collection.extent.temporal.intervals[0][0].isoformat() == "2021-07-01T00:00:00+00:00"
    bbox = collection.extent.spatial.bboxes[0]
    assert -149 < bbox[0] < bbox[2] < -148 and 64 < bbox[1] < bbox[3] < 65
    for item in items:
        j = TILES.index(item.id)
        assert item.properties["miso:checkpoint_sha256"] == CHECKPOINTS
        assert item.properties["start_datetime"] == "2021-07-01T00:00:00Z"
        assert item.properties["end_datetime"] == "2022-08-31T23:59:59Z"
        proj = ProjectionExtension.ext(item)
        assert proj.code == "EPSG:3338" and proj.shape == [500, 500]
        assert proj.transform == [10.0, 0.0, 260000.0 + 5000 * j, 0.0, -10.0, 1665000.0]
        assert set(item.assets) == {*LAYER_NAMES, "permafrost_class", *(spec.name for spec in EXTRA_LAYERS)}
        for key, asset in item.assets.items():
            assert not os.path.isabs(asset.href)
            target = Path(asset.get_absolute_href())
            assert target.is_file() and target == res.products / "cogs" / key / f"{item.id}.tif"
            bands = RasterExtension.ext(asset).bands
            assert len(bands) == (7 if key == "taxonomy_probability" else 1)
            assert bands[0].nodata == 255 and bands[0].data_type == "uint8"
            assert bands[0].scale == (None if key.endswith("_class") else EXPORTED[key].scale)
        classes = ClassificationExtension.ext(item.assets["taxonomy_class"]).classes
        assert [(c.value, c.name, c.color_hint) for c in classes] == [
            (i, n, SOIL_ORDER_COLOURS[n]) for i, n in enumerate(SOIL_ORDERS)]
    for key, asset in collection.assets.items():
        assert Path(asset.get_absolute_href()).is_file(), key
    assert {"permafrost_probability_mosaic", "taxonomy_class_overview"} <= set(collection.assets)


@pytest.fixture(scope="module")
def exported_at_03(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-0.3")
    wf = make_store(out, threshold=0.3)
    return wf, export_workflow(wf)


@pytest.mark.parametrize(("which", "threshold", "cut"), [("exported", 0.5, 125), ("exported_at_03", 0.3, 75)])
def test_permafrost_class_layer_at_the_stores_threshold(request, which, threshold, cut):
    import xml.etree.ElementTree as ET

    wf, res = request.getfixturevalue(which)
    pf = _zarr(wf, "permafrost_probability")
    # the class of a pixel: its stored probability x 0.004 >= the threshold (0.3 -> stored 75, 0.5 -> 125)
    expected = np.where(pf == 255, 255, pf >= cut).astype(np.uint8)
    assert 0.2 < (expected[pf != 255] == 1).mean() < 0.8
    for j, tile in enumerate(TILES):
        path = res.products / "cogs" / "permafrost_class" / f"{tile}.tif"
        assert cog_validate(str(path), quiet=True)[0]
        rows, cols = _tile_slices(j)
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(src.read(1), expected[rows, cols])
            assert src.nodata == 255 and src.scales == (1.0,) and src.overviews(1) == [2, 4]
            assert src.tags()["MISO_DECISION_THRESHOLD"] == str(threshold)
            assert src.colormap(1)[1] == (0x3B, 0x6F, 0xB6, 255) and src.colormap(1)[255][3] == 0
        with rasterio.open(path, overview_level=0) as ov:
            mode, unique = _mode(expected[rows, cols], 2)
            np.testing.assert_array_equal(ov.read(1)[unique], mode[unique])
        band = ET.parse(path.with_name(path.name + ".aux.xml")).getroot().find("PAMRasterBand[@band='1']")
        assert [c.text for c in band.find("CategoryNames")] == ["no permafrost", "permafrost"]
    with rasterio.open(res.mosaics["permafrost_class"]) as src:
        np.testing.assert_array_equal(src.read(1), expected[:, :1000])
        assert src.colormap(1)[0][:3] == (0xE8, 0xE2, 0xC8)
    with rasterio.open(res.overviews["permafrost_class"]) as src:
        mode, unique = _mode(expected[:, :1000], 5)
        np.testing.assert_array_equal(src.read(1)[unique], mode[unique])
    collection = pystac.Collection.from_file(str(res.stac))
    for item in collection.get_items(recursive=True):
        asset = item.assets["permafrost_class"]
        assert asset.extra_fields["miso:decision_threshold"] == threshold
        assert item.properties["miso:decision_threshold"] == threshold
        assert [(c["value"], c["name"]) for c in asset.extra_fields["classification:classes"]] == [
            (0, "no permafrost"), (1, "permafrost")]
    assert collection.assets["permafrost_class_overview"].extra_fields["miso:decision_threshold"] == threshold


def test_dask_export_is_byte_identical_to_serial(exported, tmp_path):
    from distributed import Client, LocalCluster

    wf, res = exported
    other = _workflow(wf.output.directory, products=tmp_path / "dask-products")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        dres = export_workflow(other, client=client)
    assert dres.tiles == TILES
    assert _files(dres.products) == _files(res.products)


def test_no_overwrite_without_permission(tmp_path):
    wf = make_store(tmp_path)
    first = export_workflow(wf, tiles=[TILES[1]])
    assert first.tiles == [TILES[1]]
    before = _files(first.products)
    mtimes = {p: p.stat().st_mtime_ns for p in first.files}
    with pytest.raises(MisoError, match=f"{first.products}.*--overwrite"):
        export_workflow(wf)
    assert _files(first.products) == before and {p: p.stat().st_mtime_ns for p in first.files} == mtimes
    # overwrite: the mosaic and STAC now cover both tiles; re-exporting one tile keeps the other
    export_workflow(wf, overwrite=True)
    again = export_workflow(wf, tiles=[TILES[0]], overwrite=True)
    assert again.tiles == [TILES[0]] and again.reused_tiles == [TILES[1]]
    assert len(list(pystac.Collection.from_file(str(again.stac)).get_items(recursive=True))) == 2
    with rasterio.open(again.mosaics["permafrost_probability"]) as src:
        np.testing.assert_array_equal(src.read(1), _zarr(wf, "permafrost_probability")[:, :1000])


def test_bad_requests_and_stores(tmp_path):
    wf = make_store(tmp_path)
    with pytest.raises(MisoError, match="not in the store"):
        export_workflow(wf, tiles=["AK005H001V001"])
    with pytest.raises(MisoError, match="not a tile id"):
        export_workflow(wf, tiles=["H1V1"])
    with pytest.raises(MisoError, match="no tile .* holds data"):
        export_workflow(wf, tiles=[EMPTY_TILE])
    # a corrupt chunk: a clear error naming the store, and nothing half-written left behind
    chunk = RunLayout.of(wf).store / "taxonomy_probability" / "0.0.2"
    chunk.write_bytes(b"not a zarr chunk")
    with pytest.raises(MisoError, match=r"maps.zarr/taxonomy_probability: cannot read"):
        export_workflow(wf, tiles=[TILES[0]])
    products = RunLayout.of(wf).products
    assert not [p for p in products.rglob("*") if p.is_file()]
    # corrupt metadata, then no store at all
    (RunLayout.of(wf).store / ".zmetadata").write_text("{ broken")
    (RunLayout.of(wf).store / ".zgroup").write_text("{ broken")
    with pytest.raises(MisoError, match="not a readable map store"):
        export_workflow(wf)
    missing = _workflow(tmp_path / "nothing")
    with pytest.raises(MisoError, match="no map store"):
        export_workflow(missing)


def _set_spatial_ref(wf, **attrs) -> None:
    """Edit the store's ``spatial_ref`` attributes in place (and its consolidated metadata)."""
    import warnings

    zarr.open_group(str(RunLayout.of(wf).store), mode="r+")["spatial_ref"].attrs.update(attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(RunLayout.of(wf).store))


@pytest.mark.parametrize("fmt", [2, 3])
def test_store_moved_by_whole_tiles_is_followed(tmp_path, fmt):
    """The store's spatial_ref is the truth: a store one tile east and one south exports there, renamed."""
    wf = make_store(tmp_path, fmt=fmt)
    _set_spatial_ref(wf, GeoTransform="265000.0 10.0 0.0 1660000.0 0.0 -10.0")
    res = export_workflow(wf)
    moved = ["AK005H494V149", "AK005H495V149"]
    assert res.tiles == moved and res.empty_tiles == ["AK005H496V149"]
    for layer in LAYER_NAMES:
        store = _zarr(wf, layer)
        for j, tile in enumerate(moved):
            with rasterio.open(res.products / "cogs" / layer / f"{tile}.tif") as src:
                assert tuple(src.transform)[:6] == (10.0, 0.0, 265000.0 + 5000 * j, 0.0, -10.0, 1660000.0)
                np.testing.assert_array_equal(src.read(), store[..., _tile_slices(j)[0], _tile_slices(j)[1]]
                                              .reshape(src.count, 500, 500))
        with rasterio.open(res.mosaics[layer]) as src:
            assert tuple(src.transform)[:6] == (10.0, 0.0, 265000.0, 0.0, -10.0, 1660000.0)
        with rasterio.open(res.overviews[layer]) as src:
            assert tuple(src.transform)[:6] == (50.0, 0.0, 265000.0, 0.0, -50.0, 1660000.0)
    items = {i.id: i for i in pystac.Collection.from_file(str(res.stac)).get_items(recursive=True)}
    assert sorted(items) == moved
    assert items[moved[1]].properties["proj:transform"] == [10.0, 0.0, 270000.0, 0.0, -10.0, 1660000.0]
    assert items[moved[1]].properties["proj:bbox"] == [270000.0, 1655000.0, 275000.0, 1660000.0]


@pytest.mark.parametrize(("attrs", "reason"), [
    ({"GeoTransform": "260005.0 10.0 0.0 1665000.0 0.0 -10.0"}, r"off the output grid's pixel lattice by \(0.500"),
    ({"GeoTransform": "261250.0 10.0 0.0 1665000.0 0.0 -10.0"}, "is not whole 500 px tiles"),
    ({"GeoTransform": "260000.0 20.0 0.0 1665000.0 0.0 -20.0"}, "is not on the 10.0 m output grid"),
    ({"crs_wkt": "EPSG:3413", "spatial_ref": "EPSG:3413"}, "is not on the EPSG:3338 output grid"),
], ids=["half-pixel", "not-whole-tiles", "resolution", "crs"])
def test_store_off_the_workflow_grid_is_refused(tmp_path, attrs, reason):
    from pyproj import CRS

    wf = make_store(tmp_path)
    if "crs_wkt" in attrs:
        attrs = {k: CRS.from_user_input(v).to_wkt() for k, v in attrs.items()}
    _set_spatial_ref(wf, **attrs)
    with pytest.raises(MisoError) as err:
        export_workflow(wf)
    message = str(err.value)
    assert "\n" not in message and re.search(reason, message), message
    store_grid = "EPSG:3413" if "crs_wkt" in attrs else "EPSG:3338"
    assert re.search(rf"the store's grid \(\d+ x \d+ px from x [-\d.]+, y [-\d.]+, pixels [-\d.]+ x [-\d.]+, "
                     rf"{store_grid}\)", message), message
    assert ("the workflow's grid (240000 x 370000 px from x -2200000, y 2400000, pixels 10 x -10, EPSG:3338)"
            in message)
    products = RunLayout.of(wf).products
    assert not products.exists() or not [p for p in products.rglob("*") if p.is_file()]


def test_zarr_v3_store(tmp_path):
    wf = make_store(tmp_path, fmt=3)
    res = export_workflow(wf, tiles=[TILES[0]])
    with rasterio.open(res.products / "cogs" / "taxonomy_probability" / f"{TILES[0]}.tif") as src:
        np.testing.assert_array_equal(src.read(), _zarr(wf, "taxonomy_probability")[:, :, :500])


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="blocksize"):
        load_workflow(WORKFLOWS / "demo.yaml", _overrides(tmp_path) | {"export": {"blocksize": 100}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_workflow(WORKFLOWS / "demo.yaml", _overrides(tmp_path) | {"export": {"compresion": "zstd"}})
    wf = load_workflow(WORKFLOWS / "demo.yaml", _overrides(tmp_path) | {"export": {"overview_resolution": 30}})
    with pytest.raises(ConfigError, match="overview_resolution"):
        overview_factor(wf)
    assert overview_factor(_workflow(tmp_path)) == 5


def test_cli_export_exit_codes(tmp_path):
    from miso_mapper.cli import app

    make_store(tmp_path)
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    for key, value in _overrides(tmp_path).items():
        raw[key] = (raw.get(key) or {}) | value if key != "region" else value
    raw.pop("world")
    raw["imagery"]["stac_url"] = "http://127.0.0.1:9/"
    config = tmp_path / "wf.yaml"
    config.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    ok = runner.invoke(app, ["export", str(config), "--tiles", TILES[0]])
    assert ok.exit_code == 0, ok.output
    assert "export" in ok.output and (tmp_path / "products" / "stac" / "collection.json").is_file()
    again = runner.invoke(app, ["export", str(config)])
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(app, ["export", str(config), "--overwrite"]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text() + "\nexport: {compress: lzw}\n")
    assert runner.invoke(app, ["export", str(bad)]).exit_code == 2
