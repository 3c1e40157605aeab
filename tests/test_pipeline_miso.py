"""``run`` with a real (seeded, tiny) MISO network saved as checkpoints: slow on CPU, so marked slow; and what
the run takes from a checkpoint's model card (its decision threshold), fast."""

from __future__ import annotations

import numpy as np
import pytest

from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.predictors import resolve_spec
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.pipeline.store import NODATA

from .test_pipeline import demo_workflow, store_arrays


@pytest.mark.parametrize("threshold", [0.3, None])
def test_spec_carries_the_permafrost_cards_decision_threshold(tmp_path, threshold):
    from miso_mapper.inference.synthetic import seeded_network
    from miso_mapper.model import ModelCard, save_checkpoint

    path = save_checkpoint(seeded_network("permafrost", "tiny", seed=1), tmp_path / "pf.safetensors",
                           ModelCard(decision_threshold=threshold))
    wf = demo_workflow(_NoServer(), tmp_path / "out", grid={"halo": 175},
                       model={"kind": "miso", "size": "tiny", "permafrost_checkpoint": str(path)})
    assert resolve_spec(wf.model, wf.grid).decision_threshold == (threshold or 0.5)
    synthetic = demo_workflow(_NoServer(), tmp_path / "out")
    assert resolve_spec(synthetic.model, synthetic.grid).decision_threshold == 0.5


class _NoServer:
    stac_url = "http://127.0.0.1:9/"


@pytest.mark.slow
def test_run_with_seeded_miso_checkpoints(served_world, tmp_path):
    from miso_mapper.inference.synthetic import seeded_network, synthetic_inputs
    from miso_mapper.model import save_checkpoint

    # Calibrated: an uncalibrated random head answers ~0.5 everywhere (2 distinct stored values), which would
    # not show a misplaced window or interior.
    calibration = synthetic_inputs(300, 300, seed=3)
    paths = {}
    for task in ("permafrost", "taxonomy"):
        net = seeded_network(task, "tiny", seed=3, calibrate_on=calibration)
        paths[f"{task}_checkpoint"] = str(save_checkpoint(net, tmp_path / f"{task}.safetensors"))
    wf = demo_workflow(served_world, tmp_path / "out", grid={"halo": 175},
                       model={"kind": "miso", "size": "tiny", **paths})
    summary = run_workflow(wf, only=["r0146c0492", "r0146c0493"])
    assert sorted(summary.done) == ["r0146c0492", "r0146c0493"] and not summary.failed
    assert all(r["predictor_loads"] == 1 for r in summary.results)
    pf = store_arrays(RunLayout.of(wf).store)["permafrost_probability"]
    written = pf[pf != NODATA]
    assert written.size > 0.9 * 2 * 500 * 500 and written.max() <= 250
    assert np.unique(written).size > 10
    with Manifest(RunLayout.of(wf).manifest) as m:
        assert m.counts() == {"pending": 2, "running": 0, "done": 2, "failed": 0}
