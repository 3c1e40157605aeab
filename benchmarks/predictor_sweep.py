"""Tuning sweep: agreement with the full-context reference map and FLOP per pixel of many predictor settings.

The reference map (every interior pixel averaged over all 25 of its reference windows, as a statewide run of
``MISO/demo.py``; :meth:`PredictorConfig.reference` with a ``window / 2 + 2 stride`` px halo) is computed once
for the chunk (``--cache`` keeps it between runs); then each candidate setting maps the same interior with
the halo it needs, and the table gives, per candidate:

* argmax agreement (p > 0.5 for permafrost, argmax of the 7 orders for taxonomy) and mean |Δp| against the
  reference map, over valid interior pixels, for the networks given (``--checkpoints``: trained ones;
  default: seeded ``--preset`` networks);
* what the candidate's layout costs **for the reference network** (one task, FLOP per output pixel, counted by
  :mod:`miso_mapper.inference.flops` from the predictor's own per-stage point counts on this chunk), so
  settings tuned on a small network at the reference's resolution are priced at the size users run.

Candidates: ``--grid`` entries ``support/ramp/query_spacing/s0,s1,s2,s3`` (``-`` for stages = multi-rate
off, ``auto`` = the automatic stage spacings). The last line is one JSON object.

Usage: ``python benchmarks/predictor_sweep.py --checkpoints DIR --workflow workflows/demo.yaml
[--chunk 250] [--grid 100/50/2/auto ...] [--cache ref.npz]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import TASKS, _maps, agreement, cpu_model, world_chunk_inputs  # noqa: E402

from miso_mapper.inference.flops import predictor_flop  # noqa: E402
from miso_mapper.inference.miso import MisoPredictor  # noqa: E402
from miso_mapper.inference.settings import PredictorConfig  # noqa: E402
from miso_mapper.inference.synthetic import seeded_network, synthetic_inputs  # noqa: E402
from miso_mapper.model import MisoNetConfig  # noqa: E402

DEFAULT_GRID = (
    "100/50/1/-", "100/50/2/-", "100/50/1/auto", "100/50/2/auto", "100/50/5/auto", "100/50/2/2,5,10,25",
    "75/50/2/auto", "75/50/5/auto", "125/50/2/auto", "100/25/2/auto",
)


def parse_candidate(text: str) -> dict[str, Any]:
    """``'100/50/2/auto'`` -> PredictorConfig overrides (support, ramp, query_spacing, multi-rate)."""
    support, ramp, spacing, stages = text.split("/")
    over: dict[str, Any] = {"support": int(support), "ramp": int(ramp), "query_spacing": int(spacing)}
    if stages == "-":
        over["multi_rate"] = False
    elif stages != "auto":
        over["stage_spacings"] = tuple(int(s) for s in stages.split(","))
    return over


def reference_flop_per_pixel(stats: Any, npx: int) -> float:
    """FLOP per output pixel, one task, of the reference network run with the layout that produced ``stats``
    (one network's windows encoded, per-stage points and output points)."""
    net = MisoNetConfig.preset("reference", "permafrost")
    return predictor_flop(net, stats.windows, stats.stage_points, stats.points_queried) / npx


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep; returns the JSON summary (also printed as the last line)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=Path, default=None, help="folder with permafrost/taxonomy.safetensors")
    ap.add_argument("--workflow", type=Path, default=None, help="demo workflow whose world supplies the inputs")
    ap.add_argument("--preset", default="compact", help="seeded networks when no --checkpoints")
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--grid", nargs="+", default=list(DEFAULT_GRID))
    ap.add_argument("--cache", type=Path, default=None, help=".npz keeping the reference map between runs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cands = [(c, PredictorConfig(**parse_candidate(c))) for c in args.grid]
    ref_cfg = PredictorConfig.reference()
    full_halo = ref_cfg.window - ref_cfg.window // 2 + 2 * ref_cfg.stride
    big = max([full_halo] + [c.required_halo() for _, c in cands])
    if args.workflow is not None:
        inputs = world_chunk_inputs(args.workflow, args.chunk, big)
    else:
        inputs = synthetic_inputs(args.chunk + 2 * big, args.chunk + 2 * big, seed=args.seed)
    if args.checkpoints is not None:
        from miso_mapper.model import load_checkpoint

        nets = {t: load_checkpoint(args.checkpoints / f"{t}.safetensors") for t in TASKS}
    else:
        nets = {t: seeded_network(t, args.preset, seed=args.seed + i, calibrate_on=inputs)
                for i, t in enumerate(TASKS)}

    def grid(halo: int) -> tuple[Any, tuple[slice, slice]]:
        cut = big - halo
        sub = inputs.isel(y=slice(cut, cut + args.chunk + 2 * halo), x=slice(cut, cut + args.chunk + 2 * halo))
        return sub, (slice(halo, halo + args.chunk), slice(halo, halo + args.chunk))

    full_inputs, full_int = grid(full_halo)
    valid = full_inputs["valid"].values[full_int]
    if args.cache is not None and args.cache.exists():
        ref = dict(np.load(args.cache))
        print(f"# reference map from {args.cache}", flush=True)
    else:
        t0 = time.perf_counter()
        ref = _maps(MisoPredictor(nets["permafrost"], nets["taxonomy"], ref_cfg).predict_chunk(full_inputs, full_int))
        print(f"# reference map with full context: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.cache is not None:
            np.savez(args.cache, **ref)
    npx = args.chunk * args.chunk
    names = {t: nets[t].config for t in TASKS}
    print(f"# networks: {args.checkpoints or args.preset} (input {names['permafrost'].input_size} px), chunk "
          f"{args.chunk} px, {torch.get_num_threads()} threads, {cpu_model()}")
    print(f"{'support/ramp/spacing/stages':<30} {'stages used':<14} {'q/px':>6} {'ref GFLOP/px':>12} "
          f"{'pf agree':>8} {'tax agree':>9} {'pf |Δp|':>8} {'tax |Δp|':>8} {'s':>6}")
    rows = []
    for text, cfg in cands:
        cfg_inputs, cfg_int = grid(cfg.required_halo())
        pred = MisoPredictor(nets["permafrost"], nets["taxonomy"], cfg)
        t0 = time.perf_counter()
        out = _maps(pred.predict_chunk(cfg_inputs, cfg_int))
        secs = time.perf_counter() - t0
        agree = agreement(out, ref, valid)
        row = {"candidate": text, "stage_spacings": list(pred.stage_spacings), "query_spacing": pred.query_spacing,
               "queries_per_pixel": pred.stats.points_queried / npx,
               "reference_flop_per_pixel": reference_flop_per_pixel(pred.stats, npx), "seconds": secs,
               "windows": pred.stats.windows, "stage_points": pred.stats.stage_points,
               "points_queried": pred.stats.points_queried, **agree}
        rows.append(row)
        print(f"{text:<30} {','.join(map(str, pred.stage_spacings)):<14} {row['queries_per_pixel']:>6.2f} "
              f"{row['reference_flop_per_pixel'] / 1e9:>12.3f} {agree['permafrost_argmax_agreement']:>8.4f} "
              f"{agree['taxonomy_argmax_agreement']:>9.4f} {agree['permafrost_mean_abs_diff']:>8.4f} "
              f"{agree['taxonomy_mean_abs_diff']:>8.4f} {secs:>6.1f}", flush=True)
    result = {"benchmark": "predictor_sweep", "networks": str(args.checkpoints or args.preset),
              "chunk": args.chunk, "rows": rows, "machine": f"{cpu_model()}"}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
