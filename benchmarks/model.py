"""Measured cost of the MISO network: FLOPs per window and per query point, where a query's FLOPs go, and
windows/s on CPU.

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions; a multiply-add
counts 2) for the full-size (reference) network, one task, built on the ``meta`` device (shapes only, no
compute: seconds), next to :mod:`miso_mapper.inference.flops`' counts from the configuration (ratio column).
The per-component table takes FlopCounterMode's per-module counts (``get_flop_counts()``, keyed by module
path) of one ``query`` call; a stage's MLP row also holds the first layer's 2 relative-coordinate columns,
which are not a module call (its stage total, counted alone, less ``output_layer``).
Windows/s on CPU: ``encode`` of one window plus ``--queries`` implicit queries (1024 by default, not one per
pixel), batch 1, median of a few repeats (full size: 2); ``--flops-only`` skips it. The last line is one JSON
object with the headline figures.

Usage: ``python benchmarks/model.py [--repeats 3] [--threads N] [--flops-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from miso_mapper.inference import flops  # noqa: E402
from miso_mapper.model import MisoNet, MisoNetConfig, build_model  # noqa: E402

POINTS = 256


def count_flops(fn) -> int:
    """FLOPs of ``fn()`` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class _Query(nn.Module):
    """Runs ``MisoNet.query`` as a forward, so FlopCounterMode names every submodule by its path (``net.…``)."""

    def __init__(self, net: MisoNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, feats, pix, geo):
        return self.net.query(feats, pix, geo)


def module_flops(net: MisoNet, feats, pix, geo) -> dict[str, int]:
    """FLOPs of one ``query`` call per module path (relative to the network), leaf modules only."""
    with FlopCounterMode(display=False) as counter:
        _Query(net)(feats, pix, geo)
    counts = counter.get_flop_counts()
    return {name: int(sum(counts.get(f"_Query.net.{name}", {}).values()))
            for name, mod in net.named_modules() if name and not list(mod.children())}


def _under(per_module: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in per_module.items() if k == prefix or k.startswith(prefix + "."))


def component_rows(net: MisoNet, feats, pix, geo) -> list[tuple[str, float, float | None]]:
    """(component, measured FLOP per point, flops.py's FLOP per point or None) for one query point."""
    cfg, n = net.config, pix.shape[1]
    per_module = module_flops(net, feats, pix, geo)
    rows: list[tuple[str, float, float | None]] = []
    for i in range(len(cfg.query_hidden)):
        stage_total = 0.0
        for enc_name, enc, proj in (("sat", net.sat_encoder, feats.sat[i]), ("cov", net.cov_encoder, feats.cov[i])):
            layer = enc.query_layers[i]
            alone = count_flops(lambda layer=layer, proj=proj: layer.query(proj, pix)) / n
            out_layer = _under(per_module, f"{enc_name}_encoder.query_layers.{i}.output_layer") / n
            rows += [(f"· {enc_name} stage {i}: MLP on 4 neighbours", alone - out_layer, None),
                     (f"· {enc_name} stage {i}: output_layer", out_layer, None)]
            stage_total += alone
        rows.append((f"stage {i} query, sat + cov", stage_total, flops.stage_point_flop(cfg, i)))
    for name in ("sat_mapper", "cov_mapper", "visual_mapper"):
        rows.append((name, _under(per_module, name) / n, flops.mapper_point_flop(cfg)))
    rows.append(("out (head)", _under(per_module, "out") / n, flops.head_point_flop(cfg)))
    location = sum(_under(per_module, m) for m in ("geo_encoder", "geo_mapper", "geo_out")) / n
    rows.append(("location branch (not run by the predictor)", location, flops.location_point_flop(cfg)))
    return rows


def flop_tables(task: str = "permafrost") -> dict[str, float]:
    """Print the reference network's per-window and per-point FLOPs; return the headline figures."""
    cfg = MisoNetConfig.preset("reference", task)  # type: ignore[arg-type]
    with torch.device("meta"), torch.inference_mode():
        net = build_model(cfg).eval()
        s = cfg.input_size
        x = torch.rand(1, cfg.in_bands, s, s)
        sat_flop = count_flops(lambda: net.sat_encoder.encode(x[:, :cfg.sat_bands]))
        cov_flop = count_flops(lambda: net.cov_encoder.encode(x[:, cfg.sat_bands:]))
        feats = net.encode(x)
        pix = torch.rand(1, POINTS, 2) * 2 - 1
        geo = torch.rand(1, POINTS, 2) * 0.1
        q_flop = count_flops(lambda: net.query(feats, pix, None)) / POINTS
        rows = component_rows(net, feats, pix, geo)
    counted = flops.query_flops(cfg)
    print(f"MISO full size ({s} px input), {task}; FlopCounterMode on the meta device (multiply-add = 2 FLOP); "
          "flops.py = miso_mapper/inference/flops.py")
    print(f"{'what':44s} {'measured':>14s} {'flops.py':>14s} {'ratio':>7s}")
    for name, flop, mine in [("both encoders + project_cells, per window", sat_flop + cov_flop, counted.encode),
                             ("query, per point (visual head)", q_flop, counted.point_flop)]:
        print(f"{name:44s} {flop / 1e9:12.4f} G {mine / 1e9:12.4f} G {flop / mine:7.4f}")
    print(f"\nwhere a query's FLOPs go (per point; % of the {q_flop / 1e6:.1f} MFLOP query):")
    print(f"| {'component':44s} | {'MFLOP':>8s} | {'%':>6s} | {'flops.py':>8s} | {'ratio':>6s} |")
    print(f"|{'-' * 46}|{'-' * 9}:|{'-' * 7}:|{'-' * 9}:|{'-' * 7}:|")
    for name, flop, mine in rows:
        ref = f"{mine / 1e6:8.3f}" if mine is not None else f"{'':8s}"
        ratio = f"{flop / mine:6.4f}" if mine is not None else f"{'':6s}"
        print(f"| {name:44s} | {flop / 1e6:8.3f} | {100 * flop / q_flop:6.2f} | {ref} | {ratio} |")
    total = sum(f for name, f, _ in rows if name.startswith(("stage", "sat_mapper", "cov_mapper", "visual", "out")))
    print(f"| {'query total (stages + mappers + head)':44s} | {total / 1e6:8.3f} | {100 * total / q_flop:6.2f} | "
          f"{counted.point_flop / 1e6:8.3f} | {total / counted.point_flop:6.4f} |")
    return {"sat_flop": sat_flop, "cov_flop": cov_flop, "q_flop": q_flop,
            "location_flop": rows[-1][1], "stages_flop": [r[1] for r in rows if r[0].startswith("stage")]}


def cpu_speeds(queries: int, repeats: int, threads: int) -> dict[str, float]:
    """Windows/s on CPU of each preset (encode + ``queries`` queries, batch 1, seeded weights)."""
    speeds = {}
    print(f"\nCPU windows/s (encode + {queries} queries, batch 1, {threads} threads, median):")
    for size in ("tiny", "small", "reference"):
        model = build_model(MisoNetConfig.preset(size, "permafrost")).eval()
        s = model.config.input_size
        x = torch.rand(1, 19, s, s)
        pix = torch.rand(1, queries, 2) * 2 - 1
        reps = 2 if size == "reference" else repeats
        times = []
        with torch.no_grad():
            model.query(model.encode(x), pix, None)  # warm-up
            for _ in range(reps):
                t = time.perf_counter()
                model.query(model.encode(x), pix, None)
                times.append(time.perf_counter() - t)
        speeds[size] = 1 / statistics.median(times)
        print(f"  {size:10s} input {s:3d} px: {speeds[size]:8.3f} windows/s ({statistics.median(times):.3f} s/window)")
    return speeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--queries", type=int, default=1024, help="query points per window in the timing")
    parser.add_argument("--flops-only", action="store_true", help="count FLOPs only, skip the CPU timing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    figures = flop_tables()
    speeds = {} if args.flops_only else cpu_speeds(args.queries, args.repeats, args.threads)
    summary = {
        "encoders_gflop_per_window": round((figures["sat_flop"] + figures["cov_flop"]) / 1e9, 3),
        "query_mflop_per_point": round(figures["q_flop"] / 1e6, 2),
        "stage_query_mflop_per_point": [round(f / 1e6, 2) for f in figures["stages_flop"]],
        "location_mflop_per_point": round(figures["location_flop"] / 1e6, 2),
        "cpu_windows_per_s": {k: round(v, 3) for k, v in speeds.items()},
        "threads": args.threads,
        "queries_per_window_timed": 0 if args.flops_only else args.queries,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
