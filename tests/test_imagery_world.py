"""Imagery against the served demo world: composites, loaders, covariates, samples and injected faults."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import odc.geo.xr  # noqa: F401 - the .odc accessor
import pytest
import rasterio

from miso_mapper.bands import COVARIATE_FILE_STEMS, COVARIATES, S2_BAND_IDS, S2_BANDS
from miso_mapper.config import CovariatesConfig, load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.imagery.chunk import composite_items, read_inputs
from miso_mapper.imagery.covariates import find_covariate_sources, folder_sources, load_covariates
from miso_mapper.imagery.load import read_all, stack_items
from miso_mapper.imagery.sample import sample_points
from miso_mapper.imagery.search import cached_search, search_items

from .helpers import WORKFLOWS, numpy_composite

CHUNK_ID = "r0146c0493"  # the demo chunk that holds the world's always-cloudy patch
KEEP = (4, 5, 6, 11)


@pytest.fixture(scope="module")
def workflow(served_world):
    wf = load_workflow(WORKFLOWS / "demo.yaml", {"imagery": {"stac_url": served_world.stac_url, "max_items": 50}})
    return wf


@pytest.fixture(scope="module")
def chunk(workflow):
    return AlaskaGrid(workflow.grid).chunk_by_id(CHUNK_ID)


@pytest.fixture(scope="module")
def items(workflow, chunk):
    return search_items(chunk.halo_geobox, workflow.imagery)


def independent_composite(world: Path, geobox, manifest) -> tuple[np.ndarray, np.ndarray]:
    """From the world's own files and its known per-year DN offset (not the items' metadata)."""
    offset_year = manifest.spec.boa_offset_from_year
    scenes = []
    for item_id in manifest.items:
        year = int(item_id.split("_")[2][:4])
        offset = 1000 if offset_year is not None and year >= offset_year else 0
        names = [*(S2_BAND_IDS[b] for b in S2_BANDS), "SCL"]
        scenes.append(([world / "scenes" / item_id / f"{name}.tif" for name in names], offset))
    return numpy_composite(scenes, geobox)


def test_search_finds_the_scenes_over_the_chunk(items, demo_manifest):
    assert 0 < len(items) <= len(demo_manifest.items)
    assert {i["id"] for i in items} <= set(demo_manifest.items)
    clouds = [i["properties"]["eo:cloud_cover"] for i in items]
    assert clouds == sorted(clouds)


@pytest.fixture(scope="module")
def composite(items, chunk, workflow):
    return composite_items(items, chunk.halo_geobox, workflow.imagery)


def test_composite_matches_independent_numpy_composite(composite, chunk, demo_world, demo_manifest):
    got = composite
    want, count = independent_composite(demo_world, chunk.halo_geobox, demo_manifest)
    valid = ~np.isnan(want).any(axis=0)
    assert valid.mean() > 0.9
    np.testing.assert_array_equal(got["valid"].values, valid)
    np.testing.assert_array_equal(got["reflectance"].values[:, valid], want[:, valid])  # to the last digit
    np.testing.assert_array_equal(got["count"].values, count)


def test_always_cloudy_pixels_are_no_data(composite, demo_manifest):
    got = composite
    cx, cy = demo_manifest.persistent_cloud_xy
    r = demo_manifest.persistent_cloud_radius_m - 30  # stay clear of the 20 m SCL pixel edges
    xx, yy = np.meshgrid(got["x"].values, got["y"].values)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
    assert inside.sum() > 100
    assert not got["valid"].values[inside].any()
    assert np.isnan(got["reflectance"].values[:, inside]).all()  # never zero reflectance
    assert (got["count"].values[inside] == 0).all()


def test_stackstac_and_odc_agree_on_served_items(items, chunk):
    """Same items, same grid, same values, but for nearest-neighbour ties.

    Both loaders warp with GDAL's approximate transformer (0.125 px error) but fit it over different source
    windows (odc-stac crops the source to the overlap first), so where a target pixel centre lies within that
    error of a source pixel edge they may pick the neighbouring source pixel: here ~0.05 % of values, along
    one tile's edge. On an aligned local grid they agree exactly (tests/test_imagery_profiles.py).
    """
    assets = [*S2_BANDS, "scl"]
    some = items[:4]
    a = read_all(stack_items(some, assets, chunk.halo_geobox, "stackstac"))
    b = read_all(stack_items(some, assets, chunk.halo_geobox, "odc"))
    assert a.shape == b.shape == (4, 10, 850, 850)  # 500 px chunk + 2 x 175 px halo
    differ = a != b
    assert differ.mean() < 1e-3
    # ties move a pick by a source pixel, they do not bias the data
    for band in range(10):
        sa, sb = a[:, band].astype(float), b[:, band].astype(float)
        assert abs(sa.mean() - sb.mean()) <= 1e-3 * sa.mean()
        assert (a[:, band] == 0).sum() == pytest.approx((b[:, band] == 0).sum(), rel=1e-3)  # same footprints


def test_covariates_from_stac_equal_the_local_files(workflow, chunk, served_world, demo_world):
    sources = find_covariate_sources(workflow.covariates, chunk.halo_geobox, served_world.stac_url)
    assert all(href.startswith("http://127.0.0.1") for hrefs in sources.values() for href in hrefs)
    served = load_covariates(sources, chunk.halo_geobox)
    local = load_covariates(folder_sources(demo_world / "covariates"), chunk.halo_geobox)
    np.testing.assert_array_equal(served["covariates"].values, local["covariates"].values)
    # the chunk grid is the covariates' own grid, so values are the files' pixels (bilinear at pixel centres)
    with rasterio.open(demo_world / "covariates" / f"{COVARIATE_FILE_STEMS['elevation']}.tif") as src:
        window = src.window(*chunk.halo_geobox.boundingbox)
        direct = src.read(1, window=window)
    np.testing.assert_allclose(served["covariates"].sel(band="elevation").values, direct, rtol=1e-6)
    assert served["valid"].values.all()
    assert served.odc.geobox == local.odc.geobox == chunk.halo_geobox


@pytest.fixture(scope="module")
def inputs(items, chunk, workflow, served_world):
    sources = find_covariate_sources(workflow.covariates, chunk.halo_geobox, served_world.stac_url)
    return read_inputs(chunk.halo_geobox, items, sources, workflow.imagery)


def test_read_inputs_gives_the_model_input(inputs, composite, chunk):
    ds = inputs
    np.testing.assert_array_equal(ds["reflectance"].values, composite["reflectance"].values)
    assert ds["s2"].shape == (9, 850, 850) and ds["cov"].shape == (10, 850, 850)
    assert list(ds["s2_band"].values) == list(S2_BANDS) and list(ds["cov_band"].values) == list(COVARIATES)
    s2 = ds["s2"].values
    assert s2.dtype == np.float32 and s2.min() >= 0 and s2.max() <= 1
    assert (s2[:, ~ds["valid"].values] == 0).all() and (~ds["valid"].values).sum() > 0
    np.testing.assert_array_equal(ds["x"].values, chunk.halo_geobox.coords["x"].values)
    np.testing.assert_array_equal(ds["y"].values, chunk.halo_geobox.coords["y"].values)


def test_inputs_carry_the_halo_geobox(inputs, composite, chunk):
    # one georeferencing: the spatial_ref coordinate, no WKT or transform attributes beside it
    for ds in (inputs, composite):
        assert ds.odc.geobox == chunk.halo_geobox and ds.odc.geobox != chunk.geobox
        assert not {"crs", "transform"} & set(ds.attrs)
    h = chunk.halo_geobox.shape[0] - chunk.geobox.shape[0]
    assert h > 0
    interior = inputs.isel(y=slice(h // 2, -(h // 2)), x=slice(h // 2, -(h // 2)))
    assert interior.odc.geobox == chunk.geobox


def test_point_samples_equal_the_chunk_pixels(workflow, inputs, chunk, demo_world):
    grid = AlaskaGrid(workflow.grid)
    x0, y0, x1, y1 = chunk.geobox.boundingbox
    points = [
        p for p in json.loads((demo_world / "points" / "points.geojson").read_text())["features"]
        if x0 <= p["properties"]["x_3338"] < x1 and y0 < p["properties"]["y_3338"] <= y1
    ][:40]
    assert len(points) >= 10
    x = np.array([p["properties"]["x_3338"] for p in points])
    y = np.array([p["properties"]["y_3338"] for p in points])
    asked = []

    def read_chunk(ch):
        asked.append(ch.id)
        return inputs

    pixels, windows = sample_points(grid, x, y, read_chunk, window=64)
    assert asked == [chunk.id]  # every point of one chunk: one read
    assert pixels.sizes["point"] == len(x) and windows["image"].shape == (len(x), 19, 64, 64)
    for k in range(len(x)):
        # independent pixel lookup: row/col from the halo grid's origin and the 10 m pixel size
        hx0, _, _, hy1 = chunk.halo_geobox.boundingbox
        row, col = int((hy1 - y[k]) // 10), int((x[k] - hx0) // 10)
        np.testing.assert_array_equal(pixels["covariates"].values[k], inputs["covariates"].values[:, row, col])
        np.testing.assert_array_equal(pixels["reflectance"].values[k], inputs["reflectance"].values[:, row, col])
        # the window's centre pixel is the point's pixel; channels are 9 S2 then 10 covariates
        np.testing.assert_array_equal(windows["image"].values[k, :9, 32, 32], inputs["s2"].values[:, row, col])
        np.testing.assert_array_equal(windows["image"].values[k, 9:, 31, 31], inputs["cov"].values[:, row - 1, col - 1])


def test_search_is_recorded_and_replayed(workflow, chunk, tmp_path, served_world):
    record = tmp_path / "search" / f"{chunk.id}.json"
    first = cached_search(chunk.halo_geobox, workflow.imagery, record)
    n_requests = len(served_world.requests())
    again = cached_search(chunk.halo_geobox, workflow.imagery.model_copy(update={"stac_url": "http://127.0.0.1:9"}),
                          record)
    assert again == first and record.exists()
    assert len(served_world.requests()) == n_requests  # replay touched no server


def test_stac_api_down_is_a_clear_error(workflow, chunk):
    down = workflow.imagery.model_copy(update={"stac_url": "http://127.0.0.1:9/"})
    with pytest.raises(MisoError, match="unreachable"):
        search_items(chunk.halo_geobox, down)
    with pytest.raises(MisoError, match="unreachable"):
        find_covariate_sources(CovariatesConfig(source="stac", collection="covariates"), chunk.halo_geobox,
                               "http://127.0.0.1:9/")


class TestInjectedFaults:
    """Faults served by the asset server; each test clears its rules."""

    @pytest.fixture(autouse=True)
    def _clear(self, served_world):
        served_world.set_faults([])
        yield
        served_world.set_faults([])

    def _one_item(self, items):
        """One item whose hrefs carry a fresh query string: GDAL caches what it has read per URL, and the
        fixtures above already read every asset once, so a fault on the bare URL could be served from cache."""
        item = json.loads(json.dumps(next(i for i in items if "WVS" in i["id"])))
        fresh = uuid.uuid4().hex
        for asset in item["assets"].values():
            asset["href"] += f"?fresh={fresh}"
        return [item]

    def _red_path(self, item):
        href = item["assets"]["red"]["href"]
        return href.split("/", 3)[3].split("?")[0]

    def test_503_twice_then_200_is_read(self, items, chunk, workflow, served_world):
        item = self._one_item(items)
        clean = composite_items(item, chunk.halo_geobox, workflow.imagery)
        served_world.set_faults([{"path": self._red_path(item[0]), "statuses": [503, 503]}])
        got = composite_items(item, chunk.halo_geobox, workflow.imagery)
        np.testing.assert_array_equal(got["reflectance"].values, clean["reflectance"].values)
        statuses = [r["status"] for r in served_world.requests() if r["path"].endswith(self._red_path(item[0]))]
        assert statuses.count(503) == 2 and statuses[-1] in (200, 206)

    def test_404_fails_the_chunk_naming_the_href(self, items, chunk, workflow, served_world):
        item = self._one_item(items)
        path = self._red_path(item[0])
        served_world.set_faults([{"path": path, "statuses": [404] * 20}])
        with pytest.raises(MisoError) as err:
            composite_items(item, chunk.halo_geobox, workflow.imagery)
        assert path in str(err.value) and "\n" not in str(err.value)

    def test_truncated_cog_fails_with_a_clear_message(self, items, chunk, workflow, served_world):
        item = self._one_item(items)
        path = self._red_path(item[0])
        served_world.set_faults([{"path": path, "truncate": 2000, "times": 50}])
        with pytest.raises(MisoError) as err:
            composite_items(item, chunk.halo_geobox, workflow.imagery)
        assert path in str(err.value)

    def test_token_never_shown(self, items, chunk, workflow, served_world):
        item = json.loads(json.dumps(self._one_item(items)))
        path = self._red_path(item[0])
        item[0]["assets"]["red"]["href"] += "&sig=SECRETTOKEN&se=2030"
        served_world.set_faults([{"path": path, "statuses": [404] * 20}])
        with pytest.raises(MisoError) as err:
            composite_items(item, chunk.halo_geobox, workflow.imagery)
        assert "SECRETTOKEN" not in str(err.value) and path in str(err.value)
