"""Imagery building blocks checked against independent computations (no servers needed)."""

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from rasterio.transform import from_origin

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.config import ImageryConfig
from miso_mapper.imagery.composite import composite_array, composite_blocks, valid_observations
from miso_mapper.imagery.covariates import _read_onto, derive_terrain
from miso_mapper.imagery.load import with_proj_epsg
from miso_mapper.imagery.normalize import normalize_covariate_array, normalize_s2_array
from miso_mapper.imagery.profiles import get_profile
from miso_mapper.imagery.search import lonlat_footprint, redact_href, select_items

RNG = np.random.default_rng(7)


def test_s2_normalisation_matches_the_reference_formulas():
    values = RNG.uniform(-500, 12000, size=(9, 4, 5)).astype(np.float32)
    valid = np.ones((4, 5), bool)
    valid[0, 0] = False
    got = normalize_s2_array(values, valid)
    # independent: the reference's published constants, written out again
    expected = np.empty_like(values)
    for i, (lo, hi) in enumerate([(78, 3318), (158, 3411), (167, 3335)]):
        expected[i] = np.clip((np.clip(values[i], 0, 10000) - lo) / (hi - lo), 0, 1)
    expected[3:] = np.clip(values[3:] / 8160.0, 0, 1)
    expected[:, 0, 0] = 0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float32 and got[:, 0, 0].tolist() == [0.0] * 9


def test_covariate_normalisation_matches_the_reference_formulas():
    # elevation 1000 m: clip (-18.2, 6161.18), mean 479.1046, std 531.0453, norm range (-0.93646, 10.69979)
    values = np.zeros((10, 1, 2), np.float32)
    values[1, 0, 0], values[1, 0, 1] = 1000.0, 7000.0  # second one is clipped at 6161.18
    got = normalize_covariate_array(values, np.ones((1, 2), bool))
    z = (1000.0 - 479.10458654439685) / 531.0453285390807
    assert got[1, 0, 0] == pytest.approx((z + 0.9364635367615312) / (10.6997936110033 + 0.9364635367615312), 1e-6)
    assert got[1, 0, 1] == pytest.approx(1.0, abs=1e-5)  # clip max maps to norm_max -> 1
    assert got.shape == (len(COVARIATES), 1, 2)


def test_median_composite_ignores_masked_observations_and_flags_empty_pixels():
    values = RNG.integers(1, 5000, size=(5, 9, 3, 4)).astype(np.float64)
    scl = RNG.choice([4, 5, 8, 9, 3], size=(5, 3, 4))
    scl[:, 0, 0] = 9  # cloudy in every scene
    ok = valid_observations(scl)
    comp, count = composite_array(values, ok)
    for r in range(3):
        for c in range(4):
            obs = values[ok[:, r, c], :, r, c]
            assert count[r, c] == len(obs)
            if len(obs) == 0:
                assert np.isnan(comp[:, r, c]).all()
            else:
                np.testing.assert_array_equal(comp[:, r, c], np.median(obs, axis=0).astype(np.float32))
    assert np.isnan(comp[:, 0, 0]).all() and count[0, 0] == 0


def test_blockwise_composite_equals_whole_composite():
    values = RNG.integers(1, 5000, size=(7, 9, 20, 6)).astype(np.float64)
    scl = RNG.choice([4, 6, 9], size=(7, 20, 6))
    whole, whole_count = composite_array(values, valid_observations(scl))
    values[2, 4, 3, 1] = np.nan  # no data in one band of one scene: not observed there
    values[:, :, 5, 2] = np.nan  # never observed
    whole, whole_count = composite_array(values, valid_observations(scl) & np.isfinite(values).all(axis=1))
    blocks, block_count, observed = composite_blocks(
        lambda rows: (values[:, :, rows], scl[:, rows]), 7, 9, (20, 6), max_block_bytes=7 * 73 * 6 * 3
    )
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(block_count, whole_count)
    assert observed.dtype == np.uint16 and observed[3, 1] == 6 and observed[5, 2] == 0
    assert (np.delete(observed.ravel(), [3 * 6 + 1, 5 * 6 + 2]) == 7).all() and (block_count <= observed).all()
    assert (block_count < observed).any()  # clouds (SCL 9) are observed but not used


def test_geometric_median_is_robust_and_minimises_distance_sum():
    base = np.array([1000.0, 2000.0, 3000.0])
    obs = np.stack([base + d for d in ([0, 0, 0], [10, -5, 3], [-8, 6, -2], [4000, 4000, 4000])])
    values = obs[:, :, None, None]
    comp, _ = composite_array(values, np.ones((4, 1, 1), bool), method="geomedian")
    gm = comp[:, 0, 0].astype(np.float64)

    def cost(p):
        return np.linalg.norm(obs - p, axis=1).sum()

    assert np.linalg.norm(gm - base) < 20  # the outlier does not drag it
    for delta in np.eye(3) * 1.0:
        assert cost(gm) <= cost(gm + delta) + 1e-3 and cost(gm) <= cost(gm - delta) + 1e-3


@pytest.mark.parametrize(
    ("profile", "props", "offset"),
    [
        ("earth-search-v1", {"s2:processing_baseline": "03.01"}, 0),
        ("earth-search-v1", {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": False}, -1000),
        ("earth-search-v1", {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}, 0),
        ("planetary-computer", {"s2:processing_baseline": "04.00"}, -1000),
        ("planetary-computer", {"s2:processing_baseline": "02.12"}, 0),
        ("planetary-computer", {}, 0),
    ],
)
def test_baseline_offset_follows_item_metadata(profile, props, offset):
    assert get_profile(profile).dn_offset(props) == offset


def test_select_items_least_cloudy_first_and_ceiling():
    items = [
        {"id": f"i{k}", "properties": {"eo:cloud_cover": cc, "datetime": f"2021-07-{10 + k}T00:00:00Z"}}
        for k, cc in enumerate([50, 5, 90, 5, 20])
    ]
    items.append({"id": "nocc", "properties": {"datetime": "2021-07-01T00:00:00Z"}})
    assert [i["id"] for i in select_items(items, 60, 3)] == ["i1", "i3", "i4"]
    assert [i["id"] for i in select_items(items, 60, 10)] == ["i1", "i3", "i4", "i0"]


def test_redact_href_strips_tokens_and_credentials():
    href = "https://user:secret@example.blob.core.windows.net/c/B04.tif?st=2026&se=2027&sig=abc%3D"
    shown = redact_href(href)
    assert shown == "https://example.blob.core.windows.net/c/B04.tif"
    assert "sig" not in shown and "secret" not in shown


def test_footprint_splits_at_the_antimeridian():
    # a 50 km box in EPSG:3338 around the antimeridian in the Aleutians (lon 180, lat 51.5)
    from pyproj import Transformer

    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(180.0, 51.7)
    gb = GeoBox((500, 500), Affine(100, 0, x - 25_000, 0, -100, y + 25_000), "EPSG:3338")
    fp = lonlat_footprint(gb)
    assert fp.geom_type == "MultiPolygon" and len(fp.geoms) == 2
    lons = sorted(g.bounds[0] for g in fp.geoms)
    assert lons[0] < -179 and lons[1] > 179
    for g in fp.geoms:
        assert -180 <= g.bounds[0] and g.bounds[2] <= 180
    # an ordinary box stays one polygon
    fairbanks = GeoBox((100, 100), Affine(10, 0, 297_000, 0, -10, 1_668_000), "EPSG:3338")
    assert lonlat_footprint(fairbanks).geom_type == "Polygon"


def test_proj_code_gains_proj_epsg():
    item = {"id": "a", "properties": {"proj:code": "EPSG:32606"}, "assets": {"red": {"proj:code": "EPSG:32606"}}}
    fixed = with_proj_epsg(item)
    assert fixed["properties"]["proj:epsg"] == 32606 and fixed["assets"]["red"]["proj:epsg"] == 32606
    assert "proj:epsg" not in item["properties"]  # the input is not modified


def test_aspect_is_averaged_on_the_circle(tmp_path):
    # columns of aspect 359 then 1 degrees, resampled bilinearly onto a pixel centred on their boundary
    path = tmp_path / "aspct_4.tif"
    data = np.array([[359.0] * 4 + [1.0] * 4] * 8, np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="float32",
                       crs="EPSG:3338", transform=from_origin(0, 160, 20, 20), nodata=-3e38) as dst:
        dst.write(data, 1)
    gb = GeoBox((1, 1), Affine(20, 0, 70, 0, -20, 90), "EPSG:3338")
    got = _read_onto(str(path), gb, circular=True)[0, 0]
    assert min(got, 360 - got) < 0.5  # 0 deg, not 180
    linear = _read_onto(str(path), gb, circular=False)[0, 0]
    assert abs(linear - 180) < 0.5  # what a naive average gives


def test_derived_terrain_on_a_tilted_plane():
    # z rises 1 m per 10 m pixel eastwards: slope atan(0.1), downslope faces west (270 deg)
    z = np.tile(np.arange(20, dtype=np.float64), (15, 1))
    t = derive_terrain(z, 10.0)
    assert t["sl_4"][7, 10] == pytest.approx(np.degrees(np.arctan(0.1)), rel=1e-6)
    assert t["aspct_4"][7, 10] == pytest.approx(270.0)
    assert abs(t["tpi_4"][7, 10]) < 1e-9  # a plane has no relative position


def test_imagery_config_windows():
    cfg = ImageryConfig(stac_url="http://x", years=[2022, 2021])
    assert [(a.isoformat(), b.isoformat()) for a, b in cfg.date_windows()] == [
        ("2021-07-01", "2021-08-31"), ("2022-07-01", "2022-08-31")]
    assert len(S2_BANDS) == 9


def test_observation_spool_on_disk_equals_in_memory():
    from miso_mapper.imagery.chunk import _ObservationSpool

    data = RNG.integers(0, 60000, size=(3, 4, 10, 7)).astype(np.uint16)
    memory, disk = _ObservationSpool(data.shape, 10**9), _ObservationSpool(data.shape, 100)
    assert disk._file is not None and memory._file is None
    for t in range(3):
        memory.write(t, data[t])
        disk.write(t, data[t])
    for rows in (slice(0, 10), slice(3, 8), slice(9, 10)):
        np.testing.assert_array_equal(disk.rows(rows), data[:, :, rows])
        np.testing.assert_array_equal(memory.rows(rows), data[:, :, rows])
    disk.close()
