"""Benchmark: what the uncertainty, input-quality, AOA and conformal layers add to ``run``'s time per chunk.

One process, one chunk (synthetic inputs, ``--chunk`` px interior with the 175 px halo the default predictor
needs; seeded networks of ``--preset``, both tasks, as a map run has), timed alternately (ABAB..., so drifts
of a shared machine hit both alike) in three variants of the per-chunk work that ``predict_write_task`` does
after reading (predict, add the input-quality layers, encode to uint8, write to a ``maps.zarr`` and checksum):

* ``before``: ``MisoPredictor(uncertainty=False)`` and only the three probability/class layers written, the
  code path before the new layers;
* ``layers``: the default predictor (spread, entropy, conformal set), input quality, every layer written;
* ``layers + AOA``: as ``layers`` with a real area of applicability (:mod:`miso_mapper.model.aoa`, fitted on
  ``--train-points`` random training embeddings) on both networks, so the embedding accumulator and the
  index cost are counted.

Prints median seconds per chunk, wall and process CPU time (on a machine shared with other jobs the CPU time
of a one-thread run is the steadier measure), and the extra time relative to ``before``; the last line is
one JSON object.
CPU by default; ``--device cuda --preset reference --chunk 500`` is the GPU configuration.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from miso_mapper.config import load_workflow
from miso_mapper.imagery.quality import with_input_quality
from miso_mapper.inference.miso import MisoPredictor
from miso_mapper.inference.settings import PredictorConfig
from miso_mapper.inference.synthetic import seeded_network, synthetic_inputs
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.store import CORE_LAYERS, create_store
from miso_mapper.plan import make_plan

HALO = 175
ROOT = Path(__file__).resolve().parents[1]


def training_aoa(dim: int, n: int) -> Any:
    """A real :class:`~miso_mapper.model.aoa.AreaOfApplicability` fitted on ``n`` random (n, dim) training
    embeddings in 5 folds (the index's cost depends on n and dim only, not on the values)."""
    from miso_mapper.model.aoa import fit_aoa

    g = torch.Generator().manual_seed(0)
    return fit_aoa(torch.randn((n, dim), generator=g), np.arange(n) % 5, torch.ones(dim))


def _store(tmp: Path, chunk_px: int) -> tuple[Any, Any]:
    """A fresh store and one of its chunks (the demo workflow's grid, chunk size ``chunk_px``)."""
    wf = load_workflow(ROOT / "workflows" / "demo.yaml", {
        "imagery": {"stac_url": "http://127.0.0.1:9/"}, "model": {"kind": "synthetic"},
        "output": {"directory": str(tmp)}, "grid": {"chunk_size": chunk_px, "zarr_chunk": chunk_px // 2}})
    plan = make_plan(wf)
    return create_store(RunLayout.of(wf).store, wf, plan.chunks, {"map_config_hash": "bench"},
                        aoa_thresholds={"permafrost": 1.0, "taxonomy": 1.0}), plan.chunks[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--chunk", type=int, default=250, help="interior px (the grid's chunk size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--train-points", type=int, default=2000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.chunk + 2 * HALO
    inputs = synthetic_inputs(size, size, seed=3)
    rng = np.random.default_rng(0)
    observed = rng.integers(1, 20, (size, size)).astype(np.uint16)
    inputs = inputs.assign(count=(("y", "x"), (observed * rng.random((size, size))).astype(np.uint16)),
                           observed=(("y", "x"), observed))
    interior = (slice(HALO, HALO + args.chunk), slice(HALO, HALO + args.chunk))
    nets = {t: seeded_network(t, args.preset, seed=i + 1) for i, t in enumerate(("permafrost", "taxonomy"))}
    cfg = PredictorConfig(device=args.device)
    device = torch.device(args.device)
    emb_dim = nets["permafrost"].config.emb_dim
    aoa = {t: training_aoa(emb_dim, args.train_points).to(device) for t in nets}
    conformal = SimpleNamespace(sat_bands=None, covariates=None, conformal={"qhat": 0.8})

    def variant(name: str) -> tuple[MisoPredictor, bool]:
        for t, net in nets.items():
            net.aoa = aoa[t] if name == "layers + AOA" else None
        card = conformal if name != "before" else None
        nets["taxonomy"].card = None  # the band check reads the card at construction
        p = MisoPredictor(nets["permafrost"], nets["taxonomy"], cfg, uncertainty=name != "before")
        nets["taxonomy"].card = card
        return p, name != "before"

    names = ("before", "layers", "layers + AOA")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats + 1):  # the first round warms up and is not counted
            for name in names:
                predictor, layers = variant(name)
                store, chunk = _store(Path(tmp) / f"{rep}-{name.replace(' ', '')}", args.chunk)
                t0, c0 = time.perf_counter(), time.process_time()
                pred = predictor.predict_chunk(inputs, interior)
                if layers:
                    pred = with_input_quality(pred, inputs, interior)
                else:
                    pred = pred[list(CORE_LAYERS[:2])]
                pred = pred.assign_coords(y=chunk.geobox.coords["y"].values, x=chunk.geobox.coords["x"].values)
                pred = pred.drop_vars("spatial_ref").assign_coords(spatial_ref=_ref(chunk))
                store.write_chunk(chunk, pred)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if rep:
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
    base, base_cpu = statistics.median(times["before"]), statistics.median(cpu["before"])
    result: dict[str, Any] = {"preset": args.preset, "chunk_px": args.chunk, "device": args.device,
                              "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
                              "machine": platform.processor() or platform.machine()}
    for name in names:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        result[name] = {"seconds": round(med, 3), "extra": round(med / base - 1, 4),
                        "cpu_seconds": round(med_cpu, 3), "cpu_extra": round(med_cpu / base_cpu - 1, 4)}
        print(f"{name:14s} wall {med:8.3f} s/chunk {100 * (med / base - 1):+6.1f} %   "
              f"CPU {med_cpu:8.3f} s/chunk {100 * (med_cpu / base_cpu - 1):+6.1f} %")
    print(json.dumps(result))


def _ref(chunk: Any) -> Any:
    from odc.geo.xr import xr_coords

    return xr_coords(chunk.geobox, crs_coord_name="spatial_ref")["spatial_ref"]


if __name__ == "__main__":
    main()
