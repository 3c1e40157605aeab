"""Composites from items in the JSON layout of real Earth Search v1 and Planetary Computer L2A items.

The items' hrefs point at local COGs written here; the expected composite is computed independently: each
file warped onto the chunk grid by GDAL (nearest), the known per-scene offset removed, SCL-masked, median.
"""

from __future__ import annotations

import copy
import sys
import types

import numpy as np
import pytest
import rasterio
from affine import Affine
from odc.geo.geobox import GeoBox
from pyproj import Transformer
from rasterio.transform import from_origin

from miso_mapper.bands import S2_BAND_GSD, S2_BAND_IDS, S2_BANDS
from miso_mapper.config import ImageryConfig
from miso_mapper.errors import MisoError
from miso_mapper.imagery.chunk import composite_items

from .helpers import numpy_composite

GEOBOX = GeoBox((40, 40), Affine(10, 0, 297_000, 0, -10, 1_667_400), "EPSG:3338")  # Fairbanks, EPSG:3338
UTM = "EPSG:32606"
KEEP = (4, 5, 6, 11)

# (name, date, baseline, offset in the data, Earth Search's boa_offset_applied flag)
SCENES = [
    ("A", "2021-07-10", "03.01", 0, False),
    ("B", "2022-07-15", "04.00", 1000, False),
    ("C", "2022-08-01", "04.00", 0, True),  # Earth Search already removed the offset
]


def _utm_origin() -> tuple[float, float]:
    t = Transformer.from_crs("EPSG:3338", UTM, always_xy=True)
    xs, ys = t.transform([297_000, 297_400, 297_000, 297_400], [1_667_000, 1_667_000, 1_667_400, 1_667_400])
    return (np.floor(min(xs) / 20) * 20 - 200, np.ceil(max(ys) / 20) * 20 + 200)


def _write(path, data, transform, nodata=0):
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype.name,
                   crs=UTM, transform=transform, nodata=nodata, tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2a")
    rng = np.random.default_rng(3)
    x0, y0 = _utm_origin()
    size10 = 100  # 1 km at 10 m covers the 400 m chunk with margin whatever the rotation
    out = []
    for name, date, baseline, offset, applied in SCENES:
        files = {}
        for band in [*S2_BANDS, "scl"]:
            gsd = S2_BAND_GSD[band]
            n = size10 * 10 // gsd
            if band == "scl":
                data = rng.choice(np.array([4, 5, 6, 8, 9, 3, 11], np.uint8), size=(n, n),
                                  p=[0.4, 0.15, 0.1, 0.1, 0.1, 0.1, 0.05])
                data[: n // 4, : n // 4] = 9  # a cloud over the same corner in every scene
            else:
                data = (rng.integers(50, 6000, size=(n, n)) + offset).astype(np.uint16)
            path = root / f"{name}_{band}.tif"
            _write(path, data, from_origin(x0, y0, gsd, gsd))
            files[band] = (str(path), gsd, n)
        out.append((name, date, baseline, offset, applied, files))
    return out


def earth_search_item(scene) -> dict:
    name, date, baseline, _, applied, files = scene
    assets = {}
    for band, (href, gsd, n) in files.items():
        x0, y0 = _utm_origin()
        asset = {
            "href": href,
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "roles": ["data"],
            "gsd": gsd,
            "proj:shape": [n, n],
            "proj:transform": [gsd, 0, x0, 0, -gsd, y0],
            "raster:bands": [{"nodata": 0, "data_type": "uint8" if band == "scl" else "uint16",
                              "spatial_resolution": gsd}
                             | ({} if band == "scl" else {"scale": 0.0001, "offset": -0.1, "bits_per_sample": 15})],
        }
        if band != "scl":
            asset["eo:bands"] = [{"name": S2_BAND_IDS[band], "common_name": band}]
        assets[band] = asset
    props = {
        "datetime": f"{date}T21:10:00Z", "platform": "sentinel-2a", "constellation": "sentinel-2",
        "instruments": ["msi"], "eo:cloud_cover": 20.0, "mgrs:utm_zone": 6, "mgrs:latitude_band": "W",
        "mgrs:grid_square": "VS", "s2:processing_baseline": baseline, "earthsearch:boa_offset_applied": applied,
    }
    # Earth Search items of today carry projection v2's proj:code only: the stackstac trap
    props["proj:code"] = UTM
    return {
        "type": "Feature", "stac_version": "1.1.0", "id": f"S2A_06WVS_{date.replace('-', '')}_0_L2A",
        "collection": "sentinel-2-l2a", "bbox": [-148, 64.8, -147.6, 64.9],
        "geometry": {"type": "Polygon", "coordinates": [[[-148, 64.8], [-147.6, 64.8], [-147.6, 64.9],
                                                         [-148, 64.9], [-148, 64.8]]]},
        "properties": props, "assets": assets, "links": [],
        "stac_extensions": ["https://stac-extensions.github.io/projection/v2.0.0/schema.json",
                            "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
                            "https://stac-extensions.github.io/raster/v1.1.0/schema.json"],
    }


def planetary_computer_item(scene) -> dict:
    item = earth_search_item(scene)
    name, date, baseline, *_ = scene
    item["id"] = f"S2A_MSIL2A_{date.replace('-', '')}T211000_R000_T06WVS"
    item["properties"] = {
        "datetime": f"{date}T21:10:00Z", "platform": "Sentinel-2A", "eo:cloud_cover": 20.0,
        "proj:epsg": 32606, "s2:mgrs_tile": "06WVS", "s2:processing_baseline": baseline,
    }
    item["assets"] = {("SCL" if band == "scl" else S2_BAND_IDS[band]): asset
                      for band, asset in item["assets"].items()}
    for asset in item["assets"].values():
        asset.pop("raster:bands", None)  # PC puts no raster:bands on L2A assets
    return item


def expected_composite(scenes, offsets) -> tuple[np.ndarray, np.ndarray]:
    """Independent composite of the scenes written here, minus each scene's true offset."""
    return numpy_composite(
        [([scene[5][band][0] for band in [*S2_BANDS, "scl"]], offset) for scene, offset in zip(scenes, offsets,
                                                                                             strict=True)],
        GEOBOX,
    )


@pytest.mark.parametrize("loader", ["stackstac", "odc"])
def test_earth_search_layout(scenes, loader):
    items = [earth_search_item(s) for s in scenes]
    cfg = ImageryConfig(stac_url="http://unused", profile="earth-search-v1", loader=loader)
    got = composite_items(items, GEOBOX, cfg)
    # Earth Search: B carries the offset (flag false), C was already harmonised (flag true)
    want, count = expected_composite(scenes, [0, 1000, 0])
    valid = ~np.isnan(want).any(axis=0)
    assert valid.sum() > 1000 and (~valid).sum() > 50  # both kinds of pixel are exercised
    np.testing.assert_array_equal(got["reflectance"].values[:, valid], want[:, valid])
    assert np.isnan(got["reflectance"].values[:, ~valid]).all()
    np.testing.assert_array_equal(got["valid"].values, valid)
    np.testing.assert_array_equal(got["count"].values, count)
    assert list(got["band"].values) == list(S2_BANDS)


BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2"


def _blob_items(scenes) -> list[dict]:
    """Planetary Computer items whose hrefs are blob URLs (as PC's are) standing for the local files."""
    items = [planetary_computer_item(s) for s in scenes]
    for item in items:
        for asset in item["assets"].values():
            asset["href"] = BLOB + asset["href"]
    return items


def test_planetary_computer_layout_is_signed_before_reading(scenes, monkeypatch):
    """A public cloud signing API cannot be reached here, so ``planetary_computer`` is a stand-in module: its
    ``sign`` records each href and returns one GDAL can read (the local file the blob URL stands for), as the
    real one returns the URL with a SAS token. Unsigned, the blob URLs are unreadable: the composite shows
    the signer was called on every asset href before the read."""
    signed: list[str] = []

    def sign(href: str) -> str:
        signed.append(href)
        return href.removeprefix(BLOB)

    monkeypatch.setitem(sys.modules, "planetary_computer", types.SimpleNamespace(sign=sign))
    # Planetary Computer is never harmonised: every 04.00 scene is read as carrying the offset
    pc_scenes = scenes[:2]
    items = _blob_items(pc_scenes)
    before = copy.deepcopy(items)
    cfg = ImageryConfig(stac_url="http://unused", profile="planetary-computer")
    got = composite_items(items, GEOBOX, cfg)
    want, _ = expected_composite(pc_scenes, [0, 1000])
    valid = ~np.isnan(want).any(axis=0)
    assert valid.sum() > 1000
    np.testing.assert_array_equal(got["reflectance"].values[:, valid], want[:, valid])
    assert sorted(signed) == sorted(a["href"] for item in before for a in item["assets"].values())
    assert items == before  # the manifest keeps unsigned items: tokens expire


def test_planetary_computer_without_its_package_is_one_clear_error(scenes, monkeypatch, tmp_path):
    from miso_mapper.checks import input_problems
    from miso_mapper.config import load_workflow

    from .helpers import WORKFLOWS

    monkeypatch.setitem(sys.modules, "planetary_computer", None)  # not importable, installed or not
    cfg = ImageryConfig(stac_url="http://unused", profile="planetary-computer")
    with pytest.raises(MisoError, match=r"pip install 'miso-mapper\[planetary-computer\]'"):
        composite_items(_blob_items(scenes[:1]), GEOBOX, cfg)
    workflow = load_workflow(WORKFLOWS / "demo.yaml", {"imagery": {"profile": "planetary-computer"},
                                                       "output": {"directory": str(tmp_path)}})
    assert any(p.field == "imagery.profile" and "planetary-computer" in p.message
               for p in input_problems(workflow))


def test_loaders_agree(scenes):
    from miso_mapper.imagery.load import read_all, stack_items

    items = [earth_search_item(s) for s in scenes]
    assets = [*S2_BANDS, "scl"]
    a = read_all(stack_items(items, assets, GEOBOX, "stackstac"))
    b = read_all(stack_items(items, assets, GEOBOX, "odc"))
    assert a.shape == b.shape == (3, 10, 40, 40)
    np.testing.assert_array_equal(a, b)
