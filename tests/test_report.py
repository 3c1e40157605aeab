"""Quicklooks, map accuracy and the HTML run report on a hand-made run.

The run is built without the pipeline: a small stand-in world folder (truth rasters, labelled points,
permafrost-zone polygons; no imagery) under the demo workflow's region, a store made with ``create_store``
whose done chunks hold the truth itself (so accuracy is exactly 1 before known pixels are flipped), and a
manifest with three done chunks and one failed chunk.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
import zarr
from affine import Affine
from PIL import Image
from pyproj import Transformer

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.config import Workflow, load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.htmlpage import markdown_tables
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.store import NODATA, create_store, stored_layers
from miso_mapper.plan import make_plan
from miso_mapper.report import map_accuracy, write_quicklooks, write_run_report
from miso_mapper.report.source import decimation_factor, load_run, read_preview

from .helpers import WORKFLOWS, check_page_in_chromium

RES = 10.0
WORLD_X0, WORLD_Y1, WORLD_N = 258_000.0, 1_672_000.0, 1400  # truth rasters: region + 2 km margin
FAILED_ERROR = "RuntimeError: scene S2B_6WVS_20220716 unreadable (HTTP 503 after 3 retries)"
PF_FLIPS, SO_FLIPS = 1234, 777


@dataclass
class Made:
    workflow: Workflow
    world: Path
    truth_pf: np.ndarray
    truth_so: np.ndarray
    failed: str


def _write_tif(path: Path, data: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="uint8", crs="EPSG:3338", nodata=255,
                       transform=Affine(RES, 0, WORLD_X0, 0, -RES, WORLD_Y1)) as dst:
        dst.write(data, 1)


def _make_world(root: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:WORLD_N, 0:WORLD_N]
    pf = ((np.sin(cols / 90.0) + np.cos(rows / 140.0)) > 0.3).astype(np.uint8)
    so = ((cols // 170 + 2 * (rows // 230)) % len(SOIL_ORDERS)).astype(np.uint8)
    pf[600:640, 300:380] = 255  # truth gaps are not scored
    so[900:950, 700:720] = 255
    _write_tif(root / "truth" / "permafrost.tif", pf)
    _write_tif(root / "truth" / "soil_order.tif", so)
    to_ll = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True)
    feats = []
    for i in range(400):
        x, y = rng.uniform(260_000, 270_000), rng.uniform(1_660_000, 1_670_000)
        r, c = int((WORLD_Y1 - y) // RES), int((x - WORLD_X0) // RES)
        lab_pf = None if i % 10 == 0 or pf[r, c] == 255 else int(pf[r, c] if i % 17 else 1 - pf[r, c])
        lab_so = None if i % 11 == 0 or so[r, c] == 255 else SOIL_ORDERS[so[r, c] if i % 13 else (so[r, c] + 1) % 7]
        lon, lat = to_ll.transform(x, y)
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                      "properties": {"id": f"p{i}", "permafrost": lab_pf, "soil_order": lab_so,
                                     "x_3338": x, "y_3338": y}})
    (root / "points").mkdir()
    (root / "points" / "points.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}}
    zones = [("continuous", [[258000, 1665500], [272000, 1664000], [272000, 1672000], [258000, 1672000]]),
             ("discontinuous", [[258000, 1658000], [272000, 1658000], [272000, 1664000], [258000, 1665500]])]
    (root / "vectors").mkdir()
    (root / "vectors" / "permafrost_zones.geojson").write_text(json.dumps({"type": "FeatureCollection", "crs": crs,
        "features": [{"type": "Feature", "properties": {"zone": z},
                      "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}} for z, ring in zones]}))
    return pf, so


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    base = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    world = base / "world"
    truth_pf, truth_so = _make_world(world, rng)
    wf = load_workflow(WORKFLOWS / "demo.yaml", {
        "imagery": {"stac_url": "http://127.0.0.1:9/"}, "output": {"directory": str(base / "out")},
        "model": {"kind": "synthetic"}, "world": {"directory": str(world)}})
    plan = make_plan(wf)
    assert len(plan.chunks) == 4
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "test"})
    manifest = Manifest(RunLayout.of(wf).manifest)
    manifest.add_chunks(plan.chunks)
    cs = wf.grid.chunk_size
    for k, chunk in enumerate(plan.chunks[:3]):
        xmin, _, _, ymax = chunk.geobox.boundingbox
        r0, c0 = int((WORLD_Y1 - ymax) // RES), int((xmin - WORLD_X0) // RES)
        tp, ts = truth_pf[r0:r0 + cs, c0:c0 + cs], truth_so[r0:r0 + cs, c0:c0 + cs]
        pf = np.where(tp == 1, 250, 0).astype(np.uint8)  # truth gaps get probability 0: still mapped
        cls = np.where(ts < 7, ts, 0).astype(np.uint8)
        if k == 0:  # flip known pixels (all inside valid truth), and leave a no-data hole in the map
            pf.reshape(-1)[np.flatnonzero(tp.reshape(-1) <= 1)[:PF_FLIPS]] ^= 250
            flat = np.flatnonzero(ts.reshape(-1) < 7)[:SO_FLIPS]
            cls.reshape(-1)[flat] = (cls.reshape(-1)[flat] + 1) % 7
            pf[400:, 450:] = NODATA
            cls[400:, 450:] = NODATA
        tx = np.where(np.arange(7)[:, None, None] == cls[None], 250, 0).astype(np.uint8)
        tx[:, cls == NODATA] = NODATA
        manifest.mark_running(chunk.id)
        checksum = store.write_layers(chunk, stored_layers(chunk.geobox, pf, tx, cls))
        manifest.mark_done(chunk.id, checksum, "worker-1", read_s=1.5 + k, predict_s=10.0, write_s=0.5,
                           total_s=12.0 + k)
    failed = plan.chunks[3]
    manifest.mark_running(failed.id)
    manifest.mark_failed(failed.id, FAILED_ERROR, final=True)
    manifest.close()
    with sqlite3.connect(RunLayout.of(wf).manifest) as db:  # a run of exactly one hour: 75 km² done -> 75 km²/h
        db.execute("UPDATE chunks SET started = '2024-06-01T00:00:00+00:00', "
                   "finished = '2024-06-01T00:20:00+00:00' WHERE status = 'done'")
        db.execute("UPDATE chunks SET finished = '2024-06-01T01:00:00+00:00' WHERE id = ?",
                   (plan.chunks[2].id,))
    return Made(wf, world, truth_pf, truth_so, failed.id)


def _store_corner(group: zarr.Group) -> tuple[float, float]:
    """(x, y) of the store's upper-left corner, from its spatial_ref's GeoTransform."""
    x0, _, _, y0, _, _ = (float(v) for v in group["spatial_ref"].attrs["GeoTransform"].split())
    return x0, y0


def _map_and_truth(made: Made) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, slice, slice]:
    """The whole stored layers and the truth, cut to the region (1000 x 1000 px, same pixels)."""
    g = zarr.open_group(str(RunLayout.of(made.workflow).store), mode="r")
    x0, y0 = _store_corner(g)
    row0, col0 = int((y0 - 1_670_000) / RES), int((260_000 - x0) / RES)
    rs, cs = slice(row0, row0 + 1000), slice(col0, col0 + 1000)
    pf = np.asarray(g["permafrost_probability"][rs, cs])
    cls = np.asarray(g["taxonomy_class"][rs, cs])
    tr = slice(200, 1200)  # the region inside the truth rasters (2 km margin)
    return pf, cls, made.truth_pf[tr, tr], made.truth_so[tr, tr], rs, cs


def test_decimation_factor() -> None:
    assert decimation_factor((1000, 1000), 500) == 1
    assert decimation_factor((1000, 3000), 500, max_px=1200) == 4
    assert decimation_factor((100_000, 160_000), 2500) == 250  # 134 needed: next divisor of 2500
    assert decimation_factor((1_000_000, 10_000), 500, max_px=100) == 10_000  # beyond a chunk: whole chunks


def test_preview_is_a_block_mean_of_the_store(made: Made) -> None:
    preview = read_preview(load_run(made.workflow), max_px=100)
    assert preview.factor == 10 and preview.permafrost.shape == (100, 100)
    pf, cls, *_ = _map_and_truth(made)
    blocks = pf.reshape(100, 10, 100, 10).astype(float)
    ok = blocks != NODATA
    with np.errstate(invalid="ignore"):
        expected = np.where(ok.any(axis=(1, 3)), np.where(ok, blocks, 0).sum(axis=(1, 3)) / ok.sum(axis=(1, 3)),
                            np.nan) / 250
    np.testing.assert_allclose(preview.permafrost, expected.astype(np.float32), rtol=1e-6)
    assert np.isnan(preview.permafrost[50:, 50:]).all()  # the failed chunk
    assert (preview.soil_order[50:, 50:] == NODATA).all() and (preview.soil_order[:50, :50] < 7).any()
    assert preview.extent == (260_000.0, 270_000.0, 1_660_000.0, 1_670_000.0)


def test_quicklooks(made: Made, tmp_path: Path) -> None:
    out = Path("/tmp/report-helper") if Path("/tmp/report-helper").is_dir() else tmp_path
    paths = write_quicklooks(made.workflow, out / "quicklooks-test")
    assert set(paths) == {"permafrost_probability", "taxonomy_class", "max_order_probability"}
    for path in paths.values():
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert 400 <= im.width <= 1600 and 300 <= im.height <= 1600, im.size
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 20  # a map, not a blank canvas


def test_map_accuracy_matches_numpy(made: Made) -> None:
    acc = map_accuracy(made.workflow)
    pf, cls, tp, ts, _, _ = _map_and_truth(made)
    valid = (pf != NODATA) & (tp <= 1)
    n_pf, ok_pf = int(valid.sum()), int(((pf >= 125) == (tp == 1))[valid].sum())
    assert n_pf - ok_pf == PF_FLIPS  # exactly the flipped pixels are wrong
    valid_so = (cls != NODATA) & (ts < 7)
    n_so, ok_so = int(valid_so.sum()), int((cls == ts)[valid_so].sum())
    assert n_so - ok_so == SO_FLIPS
    assert acc["permafrost"]["pixels"] == n_pf and acc["permafrost"]["accuracy"] == ok_pf / n_pf
    assert acc["soil_order"]["pixels"] == n_so and acc["soil_order"]["accuracy"] == ok_so / n_so
    assert acc["chunks"] == 3 and acc["area_km2"] == pytest.approx(75.0)
    # majority from the labelled points; scored on the same pixels
    doc = json.loads((made.world / "points" / "points.geojson").read_text())
    props = [f["properties"] for f in doc["features"]]
    labs_pf = np.array([p["permafrost"] for p in props if p["permafrost"] is not None])
    labs_so = np.array([SOIL_ORDERS.index(p["soil_order"]) for p in props if p["soil_order"] is not None])
    maj_pf, maj_so = int(np.bincount(labs_pf).argmax()), int(np.bincount(labs_so, minlength=7).argmax())
    assert acc["majority_source"] == "points"
    assert acc["permafrost"]["majority_class"] == maj_pf
    assert acc["permafrost"]["majority_accuracy"] == int((tp[valid] == maj_pf).sum()) / n_pf
    assert acc["soil_order"]["majority_class"] == SOIL_ORDERS[maj_so]
    assert acc["soil_order"]["majority_accuracy"] == int((ts[valid_so] == maj_so).sum()) / n_so
    assert acc["soil_order"]["truth_majority_accuracy"] == np.bincount(ts[valid_so]).max() / n_so
    # points: the map at each labelled point in a done chunk with map data
    hits = tot = 0
    for p in props:
        r, c = int((1_670_000 - p["y_3338"]) // RES), int((p["x_3338"] - 260_000) // RES)
        if p["permafrost"] is not None and pf[r, c] != NODATA:
            tot += 1
            hits += int((pf[r, c] >= 125) == bool(p["permafrost"]))
    assert acc["permafrost"]["points"] == tot and acc["permafrost"]["points_accuracy"] == hits / tot
    assert 0.8 < acc["soil_order"]["points_accuracy"] < 1.0  # label noise keeps it below 1
    # the labelled points' counts per class (all 400 points lie inside the region)
    assert acc["labels"]["permafrost"] == {"yes": int((labs_pf == 1).sum()), "no": int((labs_pf == 0).sum())}
    assert list(acc["labels"]["taxonomy"].values()) == np.bincount(labs_so, minlength=7).tolist()
    assert acc["points_note"] is None


def test_report_names_a_points_file_it_cannot_read(made: Made, tmp_path: Path) -> None:
    """A misnamed label field is no crash of the report; it shows the counts it found and says why not more."""
    wf = made.workflow.model_copy(update={"points": made.workflow.points.model_copy(
        update={"permafrost_field": "permafrost_1m"})})
    acc = map_accuracy(wf)
    assert acc["labels"]["permafrost"] == {"yes": 0, "no": 0} and sum(acc["labels"]["taxonomy"].values()) > 300
    assert acc["majority_source"] == "truth"
    bad = tmp_path / "bad.geojson"
    bad.write_text("{}")
    wf = made.workflow.model_copy(update={"points": made.workflow.points.model_copy(update={"path": bad})})
    acc = map_accuracy(wf)
    assert acc["labels"] is None and acc["points_note"].startswith(f"points file {bad} is not a GeoJSON")
    text = write_run_report(wf, tmp_path / "r.html", evaluation_dir=tmp_path / "none", accuracy=acc).read_text()
    assert "Labelled points not used: points file" in text


def _moved_copy(made: Made, out: Path, dx: float) -> Workflow:
    """A copy of the run (store and manifest) whose store's spatial_ref is moved ``dx`` m east."""
    import shutil
    import warnings

    shutil.copytree(made.workflow.output.directory, out)
    wf = made.workflow.model_copy(update={"output": made.workflow.output.model_copy(update={"directory": out})})
    group = zarr.open_group(str(RunLayout.of(wf).store), mode="r+")
    x0, y0 = _store_corner(group)
    group["spatial_ref"].attrs["GeoTransform"] = f"{x0 + dx!r} {RES!r} 0.0 {y0!r} 0.0 {-RES!r}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(RunLayout.of(wf).store))
    return wf


def test_store_is_read_where_its_spatial_ref_says(made: Made, tmp_path: Path) -> None:
    """A store moved one pixel west is read one column further east; one off the pixel lattice is refused."""
    moved = _moved_copy(made, tmp_path / "west", -RES)
    preview = read_preview(load_run(moved), max_px=1000)
    assert preview.factor == 1
    *_, rs, cs = _map_and_truth(made)
    pf = np.asarray(zarr.open_group(str(RunLayout.of(moved).store), mode="r")["permafrost_probability"][
        rs, cs.start + 1:cs.stop + 1]).astype(np.float32)
    expected = np.where(pf == NODATA, np.nan, pf / 250)
    expected[500:, 500:] = np.nan  # the failed chunk is not read
    np.testing.assert_allclose(preview.permafrost, expected, rtol=1e-6)
    off = _moved_copy(made, tmp_path / "half", RES / 2)
    with pytest.raises(MisoError, match=r"off the output grid's pixel lattice by \(0.500"):
        read_preview(load_run(off))
    with pytest.raises(MisoError, match="pixel lattice"):
        map_accuracy(off)


def _recoded_copy(made: Made, out: Path, threshold: float | None) -> Workflow:
    """A copy of the run whose stored permafrost is 80 (p 0.32) where it was 250 and 70 (p 0.28) where it was 0,
    with ``decision_threshold`` ``threshold`` on the store's permafrost_probability (None: no attribute)."""
    import shutil
    import warnings

    shutil.copytree(made.workflow.output.directory, out)
    wf = made.workflow.model_copy(update={"output": made.workflow.output.model_copy(update={"directory": out})})
    group = zarr.open_group(str(RunLayout.of(wf).store), mode="r+")
    array = group["permafrost_probability"]
    pf = np.asarray(array[...])
    array[...] = np.select([pf == 250, pf == 0], [80, 70], NODATA).astype(np.uint8)
    if threshold is None:
        del array.attrs["decision_threshold"]
    else:
        array.attrs["decision_threshold"] = threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(RunLayout.of(wf).store))
    return wf


def test_map_accuracy_follows_the_stores_decision_threshold(made: Made, tmp_path: Path) -> None:
    """At threshold 0.3 the recoded map (0.32 / 0.28) maps the same permafrost as the original at 0.5; a store
    without the attribute is read at 0.5, where the recoded map has no permafrost at all."""
    original = map_accuracy(made.workflow)
    at_03 = map_accuracy(_recoded_copy(made, tmp_path / "t03", 0.3))
    assert at_03["decision_threshold"] == 0.3 and original["decision_threshold"] == 0.5
    assert at_03["permafrost"] == original["permafrost"]
    pf, _, tp, _, _, _ = _map_and_truth(made)
    valid = (pf != NODATA) & (tp <= 1)
    at_05 = map_accuracy(_recoded_copy(made, tmp_path / "t05", None))
    assert at_05["decision_threshold"] == 0.5
    assert at_05["permafrost"]["accuracy"] == int((tp[valid] == 0).sum()) / int(valid.sum())
    assert at_05["permafrost"]["accuracy"] < original["permafrost"]["accuracy"] - 0.1
    page = write_run_report(made.workflow.model_copy(update={"output": made.workflow.output.model_copy(
        update={"directory": tmp_path / "t03"})}), tmp_path / "site" / "report.html", evaluation_dir=tmp_path / "none",
        accuracy=at_03).read_text()
    assert "permafrost (p ≥ 0.3)" in page


def _html(made: Made, out: Path, **kw: object) -> str:
    ev = out / "evaluate"
    ev.mkdir(parents=True, exist_ok=True)
    (ev / "report.html").write_text("<html></html>")
    (ev / "table1_permafrost.md").write_text(
        "### Table 1: near-surface permafrost\n\n| Scheme | Model | Acc |\n|---|---|---|\n"
        "| random | MISO | 0.768 ± 0.033 |\n| random | Majority | 0.643 ± 0.023 |\n")
    product = out / "products" / "permafrost.tif"
    product.parent.mkdir(exist_ok=True)
    product.write_bytes(b"x")
    path = write_run_report(made.workflow, out / "site" / "report.html", evaluation_dir=ev,
                            products={"permafrost COG": product}, **kw)  # type: ignore[arg-type]
    return path.read_text()


def test_run_report_content(made: Made, tmp_path: Path) -> None:
    text = _html(made, tmp_path)
    assert FAILED_ERROR in text and made.failed in text
    assert "75.0 km²/h" in text
    assert "data:image/png;base64," in text and text.count("<img") >= 4  # coverage + 3 quicklooks
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert "url(" not in text and "@import" not in text
    assert 'href="../evaluate/report.html"' in text and 'href="../products/permafrost.tif"' in text
    assert "<td>0.768 ± 0.033</td>" in text
    assert "synthetic" in text and "name: demo" in text  # model kind and the YAML config
    acc = map_accuracy(made.workflow)
    assert f"{acc['permafrost']['accuracy']:.4f}" in text
    n_gel = acc["labels"]["taxonomy"]["Gelisols"]
    assert "<h3>Labelled points in the region</h3>" in text
    assert f"<td>taxonomy</td><td>Gelisols</td><td>{n_gel}</td>" in text
    assert (tmp_path / "site" / "quicklooks" / "soil_order.png").is_file()


def test_run_report_model_cards(made: Made, tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    from miso_mapper.config import ModelConfig
    from miso_mapper.model.checkpoint import CARD_KEY, ModelCard

    ck = tmp_path / "perm.safetensors"
    save_file({"w": np.zeros(1, np.float32)}, str(ck),
              metadata={CARD_KEY: ModelCard(source="training run 42").model_dump_json()})
    wf = made.workflow.model_copy(update={"model": ModelConfig(kind="miso", permafrost_checkpoint=ck)})
    text = write_run_report(wf, tmp_path / "r.html", evaluation_dir=tmp_path / "none",
                            accuracy=map_accuracy(made.workflow)).read_text()
    assert "training run 42" in text and "taxonomy checkpoint" in text and "not configured" in text


def test_markdown_tables() -> None:
    out = markdown_tables("### T\n\n| a | b |\n|---|---|\n| 1 | <x> |\n")
    assert out.startswith("<h3>T</h3>") and "<td>&lt;x&gt;</td>" in out and "---" not in out


def test_cli_report(made: Made, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from miso_mapper.cli import app

    config = tmp_path / "wf.yaml"
    config.write_text(yaml.safe_dump(made.workflow.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["report", str(config), "--out", str(tmp_path / "cli" / "report.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli" / "report.html").is_file()
    pf = map_accuracy(made.workflow)["labels"]["permafrost"]
    assert f"labels: permafrost: {pf['yes'] + pf['no']} labelled ({pf['yes']} yes / {pf['no']} no)" in result.output
    empty = made.workflow.model_dump(mode="json")
    empty["output"]["directory"] = str(tmp_path / "never-run")
    config.write_text(yaml.safe_dump(empty))
    result = CliRunner().invoke(app, ["report", str(config)])
    assert result.exit_code == 1 and "no run manifest" in result.output


def test_report_in_headless_chromium(made: Made, tmp_path: Path) -> None:
    page = Path(write_run_report(made.workflow, tmp_path / "page" / "report.html",
                                 evaluation_dir=tmp_path / "none", accuracy=map_accuracy(made.workflow)))
    check_page_in_chromium(page, tmp_path)


def test_report_notes_a_store_without_uncertainty_layers(made: Made, tmp_path: Path) -> None:
    import shutil

    from miso_mapper.sites.layers import SCORE_LAYERS

    from .helpers import drop_store_layers

    shutil.copytree(made.workflow.output.directory, tmp_path / "out")
    wf = made.workflow.model_copy(update={"output": made.workflow.output.model_copy(
        update={"directory": tmp_path / "out"})})
    drop_store_layers(RunLayout.of(wf).store, SCORE_LAYERS)  # a store made before these layers existed
    text = write_run_report(wf, tmp_path / "r.html", evaluation_dir=tmp_path / "none",
                            accuracy=map_accuracy(made.workflow)).read_text()
    assert "<h2>Field-sampling guidance</h2>" in text
    assert "This store has no uncertainty and area-of-applicability layers" in text


def test_report_shows_the_sample_sites(made: Made, tmp_path: Path) -> None:
    """Sites of a run with uncertainty layers: on the map and in the table; none in the failed chunk or the
    hole, where the store has no data although the uncertainty layers have."""
    import shutil

    from miso_mapper.sites.run import sample_sites

    from .helpers import AOA_BLOCK, ENTROPY_BLOCK, add_store_layers, uncertainty_layers

    shutil.copytree(made.workflow.output.directory, tmp_path / "out")
    wf = made.workflow.model_copy(update={"output": made.workflow.output.model_copy(
        update={"directory": tmp_path / "out"})})
    *_, rs, cs = _map_and_truth(made)
    add_store_layers(RunLayout.of(wf).store, rs, cs, uncertainty_layers(), wf.grid.zarr_chunk)
    before = write_run_report(wf, tmp_path / "before.html", evaluation_dir=tmp_path / "none",
                              accuracy=map_accuracy(made.workflow)).read_text()
    assert "No field sites chosen yet" in before
    records = sample_sites(wf, {"n": 12}).records
    pf, *_ = _map_and_truth(made)
    for rec in records:
        r, c = int((1_670_000 - rec["y_3338"]) // RES), int((rec["x_3338"] - 260_000) // RES)
        assert pf[r, c] != NODATA  # only mapped pixels: the AOA square lies in the failed chunk
        assert not (AOA_BLOCK[0].start <= r < AOA_BLOCK[0].stop and AOA_BLOCK[1].start <= c < AOA_BLOCK[1].stop)
    r, c = int((1_670_000 - records[0]["y_3338"]) // RES), int((records[0]["x_3338"] - 260_000) // RES)
    assert ENTROPY_BLOCK[0].start <= r < ENTROPY_BLOCK[0].stop and ENTROPY_BLOCK[1].start <= c < ENTROPY_BLOCK[1].stop
    text = write_run_report(wf, tmp_path / "r.html", evaluation_dir=tmp_path / "none",
                            accuracy=map_accuracy(made.workflow)).read_text()
    section = text.split("<h2>Field-sampling guidance</h2>")[1].split("<h2>")[0]
    assert section.count("<img") == 1 and 'alt="field sites over the map' in section
    assert section.count("<tr>") == 1 + len(records) == 13
    assert f"<td>{records[0]['reasons']}</td>" in section and "<td>soil-order entropy 0.92; " in section
    assert "chosen before this store was made" not in section
