"""Measured cost of the MISO network: FLOPs per window and per query point, and windows/s on CPU.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; a
multiply-add counts 2) for the full-size (reference) network, one task, next to the design's figures
(DESIGN.md / CostConfig: ~81.6 GFLOP per 256 px window for both encoders, ~151 MFLOP per query point).
Windows/s on CPU: ``encode`` of one window plus ``--queries`` implicit queries (1024 by default, not one per
pixel), batch 1, median of a few repeats (full size: 2). The last line is one JSON object with the headline
figures.

Usage: ``python benchmarks/model.py [--repeats 3] [--threads N]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from miso_mapper.model import MisoNetConfig, build_model  # noqa: E402

DESIGN_WINDOW_FLOP = 81.6e9
DESIGN_QUERY_FLOP = 151e6


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--queries", type=int, default=1024, help="query points per window in the timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    full = build_model(MisoNetConfig.preset("reference", "permafrost")).eval()
    s = full.config.input_size
    x = torch.rand(1, 19, s, s)
    with torch.no_grad():
        sat_flop = count_flops(lambda: full.sat_encoder.encode(x[:, :9]))
        cov_flop = count_flops(lambda: full.cov_encoder.encode(x[:, 9:]))
        feats = full.encode(x)
        n = 256
        pix = torch.rand(1, n, 2) * 2 - 1
        geo = torch.rand(1, n, 2) * 0.1
        q_flop = count_flops(lambda: full.query(feats, pix, None)) / n
        q_geo_flop = count_flops(lambda: full.query(feats, pix, geo)) / n

    rows = [
        ("sat encoder, per window", sat_flop, None),
        ("cov encoder, per window", cov_flop, None),
        ("both encoders, per window", sat_flop + cov_flop, DESIGN_WINDOW_FLOP),
        ("query, per point (visual head)", q_flop, DESIGN_QUERY_FLOP),
        ("query + location branch, per point", q_geo_flop, None),
    ]
    print(f"MISO full size ({s} px input), one task; FlopCounterMode (multiply-add = 2 FLOP)")
    print(f"{'what':40s} {'measured':>14s} {'design':>12s} {'ratio':>7s}")
    for name, flop, design in rows:
        d = f"{design / 1e9:10.3f} G" if design else f"{'':>12s}"
        r = f"{flop / design:7.3f}" if design else ""
        print(f"{name:40s} {flop / 1e9:12.4f} G {d} {r}")

    speeds = {}
    print(f"\nCPU windows/s (encode + {args.queries} queries, batch 1, {args.threads} threads, median):")
    for size in ("tiny", "small", "reference"):
        model = full if size == "reference" else build_model(MisoNetConfig.preset(size, "permafrost")).eval()
        s = model.config.input_size
        x = torch.rand(1, 19, s, s)
        pix = torch.rand(1, args.queries, 2) * 2 - 1
        reps = 2 if size == "reference" else args.repeats
        times = []
        with torch.no_grad():
            model.query(model.encode(x), pix, None)  # warm-up
            for _ in range(reps):
                t = time.perf_counter()
                model.query(model.encode(x), pix, None)
                times.append(time.perf_counter() - t)
        speeds[size] = 1 / statistics.median(times)
        print(f"  {size:10s} input {s:3d} px: {speeds[size]:8.3f} windows/s ({statistics.median(times):.3f} s/window)")
    summary = {
        "encoders_gflop_per_window": round((sat_flop + cov_flop) / 1e9, 3),
        "design_encoders_gflop_per_window": DESIGN_WINDOW_FLOP / 1e9,
        "query_mflop_per_point": round(q_flop / 1e6, 2),
        "query_with_location_mflop_per_point": round(q_geo_flop / 1e6, 2),
        "design_query_mflop_per_point": DESIGN_QUERY_FLOP / 1e6,
        "cpu_windows_per_s": {k: round(v, 3) for k, v in speeds.items()},
        "threads": args.threads,
        "queries_per_window_timed": args.queries,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
