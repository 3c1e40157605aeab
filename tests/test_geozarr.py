"""maps.zarr carries the GeoZarr-style ``proj:`` / ``spatial`` convention attributes, agreeing with its CF
``spatial_ref`` in both Zarr formats."""

from __future__ import annotations

import json

import pytest
import zarr
from affine import Affine

from miso_mapper.config import load_workflow
from miso_mapper.grid import geobox_from_spatial_ref
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.geozarr import PROJ_CONVENTION, SPATIAL_CONVENTION
from miso_mapper.pipeline.store import create_store
from miso_mapper.plan import make_plan

from .helpers import WORKFLOWS


def _store(tmp_path, fmt):
    wf = load_workflow(WORKFLOWS / "demo.yaml", {"imagery": {"stac_url": "http://127.0.0.1:9/"},
                                                 "output": {"directory": str(tmp_path), "zarr_format": fmt},
                                                 "model": {"kind": "synthetic"}})
    create_store(RunLayout.of(wf).store, wf, make_plan(wf).chunks, {"map_config_hash": "x"})
    return RunLayout.of(wf).store


@pytest.mark.parametrize("fmt", [2, 3])
def test_proj_and_spatial_conventions_match_spatial_ref(tmp_path, fmt):
    path = _store(tmp_path, fmt)
    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    shape = group["permafrost_probability"].shape
    geobox = geobox_from_spatial_ref(dict(group["spatial_ref"].attrs), shape)
    uuids = {c["uuid"]: c["name"] for c in attrs["zarr_conventions"]}
    assert uuids == {"f17cb550-5864-4468-aeb7-f3180cfb622f": "proj:", "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4": "spatial"}
    assert attrs["zarr_conventions"] == [PROJ_CONVENTION, SPATIAL_CONVENTION]
    assert attrs["proj:code"] == "EPSG:3338" and "Alaska Albers" in attrs["proj:wkt2"]
    assert attrs["spatial:dimensions"] == ["y", "x"] and attrs["spatial:registration"] == "pixel"
    assert attrs["spatial:shape"] == list(shape)
    # Affine order [a, b, c, d, e, f]: pixel size and the upper-left corner, as GDAL's GeoTransform reordered
    t = Affine(*attrs["spatial:transform"])
    assert t == geobox.affine and (t.a, t.e) == (10.0, -10.0)
    gt = [float(v) for v in group["spatial_ref"].attrs["GeoTransform"].split()]
    assert attrs["spatial:transform"] == [gt[1], gt[2], gt[0], gt[4], gt[5], gt[3]]
    left, top = t * (0, 0)
    right, bottom = t * (shape[1], shape[0])
    assert attrs["spatial:bbox"] == [left, bottom, right, top]
    # the CF grid mapping stays, for GDAL and rioxarray
    assert group["permafrost_probability"].attrs["grid_mapping"] == "spatial_ref"


def test_conventions_are_plain_json_in_the_metadata_file(tmp_path):
    path = _store(tmp_path, 3)
    meta = json.loads((path / "zarr.json").read_text())
    assert meta["attributes"]["proj:code"] == "EPSG:3338"
    assert meta["attributes"]["spatial:transform"][2] == meta["attributes"]["spatial:bbox"][0]
