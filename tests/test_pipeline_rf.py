"""``run`` with the RF-11 baseline (``model.kind: rf``) end to end on the served demo world: the store holds
exactly what the forest predicts from the production reader's inputs, with the features of its setting
(rf11-notebook: lon/lat in degrees of the pixel centres)."""

from __future__ import annotations

import numpy as np
import odc.geo.xr  # noqa: F401 - the .odc accessor
import xarray as xr

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.baseline import NOTEBOOK_FEATURES, RFModel, features_from_inputs, save_rf
from miso_mapper.imagery.chunk import read_inputs
from miso_mapper.imagery.covariates import find_covariate_sources
from miso_mapper.imagery.search import search_items
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.pipeline.store import NODATA, to_uint8
from miso_mapper.plan import make_plan

from .test_pipeline import demo_workflow


def test_run_with_rf11_stores_what_the_forest_predicts(served_world, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out")
    chunk = make_plan(wf).chunks[0]
    items = search_items(chunk.halo_geobox, wf.imagery)
    cov = find_covariate_sources(wf.covariates, chunk.halo_geobox, wf.imagery.stac_url)
    inputs = read_inputs(chunk.halo_geobox, items, cov, wf.imagery)
    h = wf.grid.halo
    interior = (slice(h, h + wf.grid.chunk_size), slice(h, h + wf.grid.chunk_size))
    feats, valid = features_from_inputs(inputs, interior, NOTEBOOK_FEATURES)
    # lon/lat columns are degrees inside the chunk's own footprint as odc reprojects it
    box = chunk.geobox.extent.to_crs("EPSG:4326").boundingbox
    lon, lat = feats[valid.ravel(), 19], feats[valid.ravel(), 20]
    assert box.left <= lon.min() < lon.max() <= box.right and box.bottom <= lat.min() < lat.max() <= box.top
    # a forest that learned something checkable from these very pixels: permafrost = high elevation,
    # soil order = quartile of the NIR band (orders 0-3 seen, 4-6 never)
    rng = np.random.default_rng(0)
    pick = rng.choice(np.flatnonzero(valid.ravel()), 3000, replace=False)
    x = feats[pick]
    elevation = x[:, len(S2_BANDS) + COVARIATES.index("elevation")]
    nir = x[:, S2_BANDS.index("nir")]
    model = RFModel.fit("permafrost", x, (elevation > np.median(elevation)).astype(int), "rf11-notebook", trees=20)
    model = RFModel.fit("taxonomy", x, np.digitize(nir, np.quantile(nir, [0.25, 0.5, 0.75])), "rf11-notebook",
                        trees=20, model=model)
    path, _ = save_rf(model, tmp_path / "rf11.skops")

    rf_wf = demo_workflow(served_world, tmp_path / "out", model={"kind": "rf", "rf_model": str(path)})
    summary = run_workflow(rf_wf, only=[chunk.id])
    assert summary.done == [chunk.id] and not summary.failed

    expected = model.predict_chunk(inputs, interior)
    assert inputs.odc.geobox == chunk.halo_geobox and expected.odc.geobox == chunk.geobox
    store = xr.open_zarr(RunLayout.of(rf_wf).store, mask_and_scale=False)
    region = store.sel(x=expected["x"], y=expected["y"])
    pf = region["permafrost_probability"].values
    np.testing.assert_array_equal(pf, to_uint8(expected["permafrost_probability"].values))
    tx = region["taxonomy_probability"].values
    np.testing.assert_array_equal(tx, to_uint8(expected["taxonomy_probability"].values))
    assert (pf != NODATA).mean() > 0.9 and len(np.unique(pf[pf != NODATA])) > 10
    assert (tx[4:][:, valid] == 0).all()  # orders the forest never saw get probability 0
    # the forest learned elevation: mapped permafrost follows it
    elev = inputs["covariates"].sel(cov_band="elevation").values[interior]
    high = elev > np.median(elev[valid])
    assert pf[valid & high].mean() > pf[valid & ~high].mean() + 100
