"""``miso-mapper sample-sites`` on a hand-made store: sites lie where the layers say.

The store is the demo workflow's (4 chunks of 5 km), made with ``create_store``, its probability layers
written as the pipeline writes them and the uncertainty / AOA layers added with zarr under the names and
scalings of the store design (uint8, 255 no data; spread x 500, entropy x 250, AOA 0/1, AOA index x 50).
The layers are :func:`tests.helpers.uncertainty_layers`: over a quiet background (score 0.2),

* ``AOA``: a 600 m square outside the permafrost area of applicability (score 1.2),
* ``ENTROPY``: a 300 m square of soil-order entropy 0.92 (score 0.92),
* ``SPREAD``: a 300 m square of permafrost spread 0.4 (score 0.8).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
import yaml
from pyproj import Transformer
from typer.testing import CliRunner

from miso_mapper.cli import app
from miso_mapper.config import Workflow, load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.store import create_store, open_store, stored_layers
from miso_mapper.plan import make_plan
from miso_mapper.sites.candidates import exact_keep, scan_store
from miso_mapper.sites.run import sample_sites
from miso_mapper.sites.select import greedy_sites

from .helpers import AOA_BLOCK, ENTROPY_BLOCK, SPREAD_BLOCK, WORKFLOWS, add_store_layers, uncertainty_layers

RES, X0, Y1, N = 10.0, 260_000.0, 1_670_000.0, 1000  # the demo region: 1000 x 1000 px
#: (row, col) slices of the region holding each feature.
AOA, ENTROPY, SPREAD = AOA_BLOCK, ENTROPY_BLOCK, SPREAD_BLOCK
TO_LL = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)


@dataclass
class Made:
    workflow: Workflow
    config: Path
    layers: dict[str, np.ndarray]
    """the added layers over the region, stored uint8 values"""


def _make_run(out: Path, layers: dict[str, np.ndarray] | None, zarr_format: int = 3) -> Workflow:
    wf = load_workflow(WORKFLOWS / "demo.yaml", {
        "imagery": {"stac_url": "http://127.0.0.1:9/"}, "output": {"directory": str(out), "zarr_format": zarr_format},
        "model": {"kind": "synthetic"}})
    chunks = make_plan(wf).chunks
    store = create_store(RunLayout.of(wf).store, wf, chunks, {"map_config_hash": "test"})
    for chunk in chunks:
        h, w = chunk.geobox.shape
        tx = np.zeros((7, h, w), np.uint8)
        tx[2] = 250
        store.write_layers(chunk, stored_layers(chunk.geobox, np.full((h, w), 100, np.uint8), tx,
                                                np.full((h, w), 2, np.uint8)))
    if layers is not None:
        add_store_layers(store.path, *_store_slices(store), layers, wf.grid.zarr_chunk)
    return wf


def _store_slices(store) -> tuple[slice, slice]:
    a = store.geobox.affine
    r0, c0 = int(round((a.f - Y1) / RES)), int(round((X0 - a.c) / RES))
    return slice(r0, r0 + N), slice(c0, c0 + N)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    base = tmp_path_factory.mktemp("sites")
    layers = uncertainty_layers()
    wf = _make_run(base / "out", layers)
    config = base / "wf.yaml"
    config.write_text(yaml.safe_dump(wf.model_dump(mode="json")))
    return Made(wf, config, layers)


def _pixel(record: dict) -> tuple[int, int]:
    """(row, col) of a site in the region, from its EPSG:3338 coordinates."""
    return int((Y1 - record["y_3338"]) // RES), int((record["x_3338"] - X0) // RES)


def _inside(rc: tuple[int, int], block: tuple[slice, slice]) -> bool:
    return block[0].start <= rc[0] < block[0].stop and block[1].start <= rc[1] < block[1].stop


def _xy(records: list[dict]) -> np.ndarray:
    return np.array([(r["x_3338"], r["y_3338"]) for r in records])


def test_sites_follow_the_layers(made: Made, tmp_path: Path) -> None:
    result = sample_sites(made.workflow, {"n": 10, "directory": tmp_path / "s"})
    recs = result.records
    assert [r["rank"] for r in recs] == list(range(1, 11))
    pixels = [_pixel(r) for r in recs]
    n_aoa = sum(_inside(p, AOA) for p in pixels)
    # outside the AOA outranks everything: the 600 m square holds 4 sites >= 500 m apart on the 100 m lattice
    assert n_aoa == 4 and all(_inside(p, AOA) for p in pixels[:4])
    assert _inside(pixels[4], ENTROPY) and _inside(pixels[5], SPREAD)  # entropy 0.92 > spread 0.4 / 0.5
    assert sum(_inside(p, ENTROPY) for p in pixels) == 1 and sum(_inside(p, SPREAD) for p in pixels) == 1
    assert [r["score"] for r in recs[:6]] == [1.2] * 4 + [0.92, 0.8]
    assert all(r["score"] == 0.2 for r in recs[6:])
    assert recs[0]["reasons"] == "outside AOA (permafrost); soil-order entropy 0.20; permafrost spread 0.020"
    assert recs[4]["reasons"] == "soil-order entropy 0.92; permafrost spread 0.020"
    assert recs[5]["reasons"] == "permafrost spread 0.400; soil-order entropy 0.20"
    d = np.hypot(*(_xy(recs)[:, None, :] - _xy(recs)[None, :, :]).transpose(2, 0, 1))
    assert d[~np.eye(len(recs), dtype=bool)].min() >= 500.0
    for rec, (r, c) in zip(recs, pixels, strict=True):  # every reported value is the store's at the site
        assert (r % 10, c % 10) == (5, 5)  # on the grid's lattice (every 10 px, centred)
        for name, scale in (("permafrost_spread", 0.002), ("taxonomy_entropy", 0.004), ("masked_fraction", 0.004),
                            ("permafrost_aoa_index", 0.02)):
            assert rec[name] == pytest.approx(made.layers[name][r, c] * scale)
        assert rec["permafrost_aoa"] == made.layers["permafrost_aoa"][r, c] and type(rec["permafrost_aoa"]) is int
        assert rec["valid_observations"] == 7 and rec["soil_order"] == "Gelisols"
        assert rec["permafrost_probability"] == pytest.approx(0.4)
        assert rec["access_distance_m"] is None


def test_outputs_open_in_gdal(made: Made, tmp_path: Path) -> None:
    result = sample_sites(made.workflow, {"n": 6, "directory": tmp_path})
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "sample_sites.geojson", read_geometry=True)
    assert meta["crs"] == "EPSG:4326" and meta["geometry_type"] == "Point"
    names = list(meta["fields"])
    assert {"rank", "score", "x_3338", "y_3338", "reasons", "taxonomy_entropy", "permafrost_aoa"} <= set(names)
    points = shapely.from_wkb(wkb)
    to_3338 = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    for point, x, y in zip(points, fields[names.index("x_3338")], fields[names.index("y_3338")], strict=True):
        px, py = to_3338.transform(point.x, point.y)
        assert abs(px - x) < 0.05 and abs(py - y) < 0.05
    assert list(fields[names.index("rank")]) == [1, 2, 3, 4, 5, 6]
    with (tmp_path / "sample_sites.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["score"]) for r in rows] == [r["score"] for r in result.records]
    assert rows[0]["reasons"].startswith("outside AOA (permafrost)") and rows[0]["access_distance_m"] == ""
    assert (rows[0]["permafrost_aoa"], rows[0]["valid_observations"], rows[0]["masked_fraction"]) == ("0", "7", "0.2")


def test_mask_and_access(made: Made, tmp_path: Path) -> None:
    # mask: the western half of the region, as a GeoJSON polygon in EPSG:4326 (densified: edges curve)
    west = shapely.segmentize(shapely.box(X0, Y1 - N * RES, X0 + 5000, Y1), 100)
    ll = shapely.transform(west, lambda xy: np.column_stack(TO_LL.transform(xy[:, 0], xy[:, 1])))
    mask = tmp_path / "mask.geojson"
    mask.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(ll)}]}))
    result = sample_sites(made.workflow, {"n": 8, "mask": mask, "directory": tmp_path / "m"})
    assert len(result.records) == 8
    assert all(r["x_3338"] < X0 + 5000 + 1 for r in result.records)
    assert _inside(_pixel(result.records[0]), ENTROPY)  # the AOA square lies east: entropy first
    # access: a road along y = 1 665 000 (EPSG:3338 GeoPackage), sites within 300 m of it
    road = shapely.LineString([(X0, 1_665_000.0), (X0 + 10_000, 1_665_000.0)])
    access = tmp_path / "roads.gpkg"
    pyogrio.raw.write(access, geometry=np.array([shapely.to_wkb(road)], dtype=object), field_data=[np.array([1])],
                      fields=["id"], geometry_type="LineString", crs="EPSG:3338", driver="GPKG")
    result = sample_sites(made.workflow, {"n": 5, "access": access, "max_access_distance_m": 300.0,
                                          "directory": tmp_path / "a"})
    assert len(result.records) == 5
    for rec in result.records:
        assert abs(rec["y_3338"] - 1_665_000.0) <= 300.0
        assert rec["access_distance_m"] == pytest.approx(abs(rec["y_3338"] - 1_665_000.0), abs=0.1)


def test_keeping_the_best_candidates_is_exact(made: Made) -> None:
    store = open_store(RunLayout.of(made.workflow).store, AlaskaGrid(made.workflow.grid))
    everything = scan_store(store, 10, keep=10**7)
    assert len(everything) == 100 * 100
    for n, d in ((12, 500.0), (30, 700.0)):
        kept = scan_store(store, 10, keep=exact_keep(n, d, 100.0))
        assert len(kept) < len(everything)
        a, b = everything.take(greedy_sites(everything, n, d)), kept.take(greedy_sites(kept, n, d))
        assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)


def test_cli_sample_sites(made: Made, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["sample-sites", str(made.config), "--n", "3", "--min-distance", "1000",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    feats = json.loads((out / "sample_sites.geojson").read_text())["features"]
    assert len(feats) == 3 and "outside AOA (permafrost)" in result.output
    xy = _xy([f["properties"] for f in feats])
    assert min(np.hypot(*(xy[i] - xy[j])) for i in range(3) for j in range(i)) >= 1000.0


def test_default_folder_is_the_run_folders(made: Made) -> None:
    result = sample_sites(made.workflow, {"n": 2})
    assert result.layout.geojson == made.workflow.output.directory / "sample-sites" / "sample_sites.geojson"
    assert result.layout.geojson.is_file() and result.layout.csv.is_file()


def _fails(args: list[str], text: str, out: Path) -> None:
    result = CliRunner().invoke(app, ["sample-sites", *args, "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert text in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_errors(made: Made, tmp_path: Path) -> None:
    config = str(made.config)
    _fails([config, "--n", "0"], "n: Input should be greater than 0", tmp_path / "o1")
    _fails([config, "--access", str(tmp_path / "none.gpkg")], "access and max_access_distance_m go together",
           tmp_path / "o2")
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [-147.7, 64.8]}}]}))
    _fails([config, "--mask", str(point)], "has no polygon features", tmp_path / "o3")
    far = tmp_path / "far.geojson"  # a polygon far from the mapped area
    far.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
        "geometry": {"type": "Polygon", "coordinates": [[[-150, 61], [-149, 61], [-149, 62], [-150, 61]]]}}]}))
    _fails([config, "--mask", str(far)], "no candidate site", tmp_path / "o4")
    raw = made.workflow.model_dump(mode="json")
    raw["output"]["directory"] = str(tmp_path / "never-run")
    (tmp_path / "never.yaml").write_text(yaml.safe_dump(raw))
    _fails([str(tmp_path / "never.yaml")], "no map store at", tmp_path / "o5")


def test_a_zarr_v2_store_gives_the_same_sites(made: Made, tmp_path: Path) -> None:
    wf = _make_run(tmp_path / "v2", uncertainty_layers(), zarr_format=2)
    assert (RunLayout.of(wf).store / "permafrost_spread" / ".zarray").is_file()
    v2, v3 = sample_sites(wf, {"n": 8}).records, sample_sites(made.workflow, {"n": 8, "directory": tmp_path}).records
    assert [(r["x_3338"], r["y_3338"], r["reasons"]) for r in v2] == [(r["x_3338"], r["y_3338"], r["reasons"])
                                                                        for r in v3]


def test_a_store_without_the_layers_is_refused(tmp_path: Path) -> None:
    from miso_mapper.sites.layers import SCORE_LAYERS

    from .helpers import drop_store_layers

    wf = _make_run(tmp_path / "old", None)
    drop_store_layers(RunLayout.of(wf).store, SCORE_LAYERS)  # a store made before these layers existed
    with pytest.raises(MisoError, match="lacks the layers permafrost_spread, taxonomy_entropy, permafrost_aoa"):
        sample_sites(wf, {"n": 2})
    assert not RunLayout.of(wf).sample_sites.directory.exists()


def test_settings_from_the_workflow(tmp_path: Path) -> None:
    from miso_mapper.errors import ConfigError

    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["sample_sites"] = {"n": 7, "access": "roads.gpkg", "max_access_distance_m": 250}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(raw))
    wf = load_workflow(path)
    assert wf.sample_sites.n == 7 and wf.sample_sites.access == tmp_path / "roads.gpkg"
    raw["sample_sites"] = {"access": "roads.gpkg"}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="access and max_access_distance_m go together"):
        load_workflow(path)
