"""The reference-size path end to end on CPU: train the ``reference`` preset (212 M parameters, seeded) for one
optimiser step per task, map one chunk with it through ``miso-mapper run``, export it, and check the products.

Slow (minutes on 2 cores): the reference network costs about 83 GFLOP per 256 px window and 112 MFLOP per
query point (miso_mapper/inference/flops.py), so the predictor is set coarse: windows every 125 px that each
answer for 125 px around their centre (25 windows for the 500 px chunk) and a query every 25 px.

Training reads its chips for a 2.5 km square inside the mapped chunk only (about 90 labelled points): at the
reference's 256 px input a cached chip with its jitter margin is 19 x 384 x 384 float16 = 5.6 MB held in
memory, so the demo's 1500 points would take 8.4 GB and a first version of this test was killed for memory.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml

from miso_mapper.pipeline.store import NODATA, PROB_SCALE

from .helpers import WORKFLOWS

CLI = [sys.executable, "-m", "miso_mapper.cli"]
CHUNK = "r0146c0492"
#: The chunk's extent (EPSG:3338 m) and a 2.5 km square in its north-west corner that the training reads.
CHUNK_BBOX = [260000, 1665000, 265000, 1670000]
TRAIN_BBOX = [260000, 1667500, 262500, 1670000]
TILE = "AK050H50V15"


def _cli(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc, time.perf_counter() - t0


def _workflow(served_world, demo_world: Path, out: Path) -> dict:
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["imagery"] |= {"stac_url": served_world.stac_url, "max_items": 2}
    raw["world"]["directory"] = str(demo_world)
    raw["region"]["bbox"] = TRAIN_BBOX
    raw["output"]["directory"] = str(out)
    raw["model"] = {"kind": "miso", "size": "reference",
                    "predictor": {"stride": 125, "support": 125, "ramp": 50, "query_spacing": 25, "batch_size": 2,
                                  "device": "cpu"}}  # the opt-in: the reference network on a CPU-only cluster
    raw["cluster"] |= {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "8GB", "window": 1}
    # one optimiser step per task: one batch of 2 chips, one epoch, no validation pass, no warm-up
    raw["train"] |= {"size": "reference", "epochs": 1, "chips_per_epoch": 2, "batch_size": 2, "val_fraction": 0.0,
                     "warmup_epochs": 0, "workers": 1, "num_threads": 2, "seed": 0}
    return raw


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_reference_preset_trains_maps_and_exports_on_cpu(served_world, demo_world, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    from miso_mapper.model import read_model_card

    out = tmp_path / "out"
    raw = _workflow(served_world, demo_world, out)
    path = tmp_path / "ref.yaml"
    path.write_text(yaml.safe_dump(raw))
    seconds: dict[str, float] = {}

    _, seconds["train"] = _cli("train", str(path), timeout=900)
    ckpts = {task: out / "train" / f"{task}.safetensors" for task in ("permafrost", "taxonomy")}
    for task, ckpt in ckpts.items():
        card = read_model_card(ckpt)
        assert card.config.task == task and card.config.input_size == 256 and card.config.crop_size == 250
        assert card.extra["epochs_run"] == 1
    raw["model"] |= {f"{task}_checkpoint": str(p) for task, p in ckpts.items()}
    raw["region"]["bbox"] = CHUNK_BBOX
    path.write_text(yaml.safe_dump(raw))

    _, seconds["run"] = _cli("run", str(path), "--only", CHUNK, timeout=900)
    import zarr

    store = zarr.open_group(str(out / "maps.zarr"), mode="r")
    pf = np.asarray(store["permafrost_probability"][...])
    threshold = read_model_card(ckpts["permafrost"]).decision_threshold
    assert store["permafrost_probability"].attrs["decision_threshold"] == (0.5 if threshold is None else threshold)
    tx = np.asarray(store["taxonomy_probability"][...])
    written = pf[pf != NODATA]
    # imagery gaps (2 scenes) leave a few per cent of the chunk without data, as in test_pipeline_miso.py
    assert written.size > 0.9 * 500 * 500 and written.max() <= PROB_SCALE
    assert np.unique(written).size > 1  # not a constant map
    sums = tx[:, pf != NODATA].astype(np.int64).sum(axis=0)  # the 7 order probabilities sum to 1 (x250, rounded)
    assert np.abs(sums - PROB_SCALE).max() <= 4

    _, seconds["export"] = _cli("export", str(path), "--tiles", TILE, timeout=600)
    cog = out / "products" / "cogs" / "permafrost_probability" / f"{TILE}.tif"
    valid, errors, _ = cog_validate(str(cog), quiet=True)
    assert valid, errors
    with rasterio.open(cog) as src:  # GDAL reads it back: the chunk's pixels, the same bytes as the store
        band = src.read(1)
        assert src.crs.to_epsg() == 3338 and src.nodata == NODATA
    assert np.array_equal(np.sort(band[band != NODATA]), np.sort(written))
    with rasterio.open(out / "products" / "cogs" / "permafrost_class" / f"{TILE}.tif") as src:
        classes = src.read(1)
    assert (classes != NODATA).sum() == written.size and set(np.unique(classes)) <= {0, 1, NODATA}
    print(f"reference path seconds: {seconds}")
    assert sum(seconds.values()) < 15 * 60
