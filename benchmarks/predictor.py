"""Benchmark: the fast MISO predictor against the reference's demo loop, same network, same chunk, one process.

For one chunk interior (``--chunk`` px, synthetic inputs with seeded networks of ``--preset``, or trained
networks on a demo world's inputs, see below) and both tasks (permafrost and soil order, as a map run does):

* ``reference loop``: :func:`reference_demo_loop` (``benchmarks/reference_demo_loop.py``), the literal
  re-implementation of ``MISO/demo.py``: one window at a time, float32, stride 250 // 5 = 50, every pixel of
  every window, Gaussian weights, plus the location head as the demo computes it. Timed on the interior with
  the halo the reference needs (``window / 2``, 125 px), where its pixels near the chunk edge see fewer than
  25 windows, which only makes it cheaper;
* ``predictor, fast``: :class:`MisoPredictor` with the default :class:`PredictorConfig` (the ensemble
  layout; ``--support``, ``--spacing`` override) on the interior with the halo it needs (175 px);
* the **reference map** the agreement is measured against: the reference setting with full context, i.e.
  every interior pixel averaged over all 25 of its windows as in a statewide run of ``MISO/demo.py`` (halo
  ``window / 2 + 2 stride`` = 225 px), computed by :meth:`PredictorConfig.reference` (equal to the literal
  loop to float tolerance, ``tests/test_predictor.py``; ``--check-reference-setting`` re-checks it here on the
  125 px grid). Agreement with the literal loop's own 125 px-halo map is printed too.

Prints seconds per km² (medians over ``--repeats`` for the fast predictor), the speed-up, FLOPs per output
pixel (``torch.utils.flop_counter.FlopCounterMode``: the whole chunk for the predictor; for the loop one
window times the number of windows, every window doing identical work), the one-query-per-pixel floor
(encoder FLOPs per window / window pixels + one query), queries per pixel, and the agreement of the fast map
with the reference map (argmax agreement: p > 0.5 for permafrost, argmax of the 7 orders for taxonomy;
mean absolute probability difference; over valid interior pixels). The last line is one JSON object.

CPU by default (``--device``); ``--preset reference --chunk 500`` is the GPU configuration.

Trained networks on real inputs (what the agreement target is about): ``--checkpoints DIR`` loads
``DIR/permafrost.safetensors`` and ``DIR/taxonomy.safetensors`` (e.g. from ``miso-mapper train
workflows/demo.yaml``), and ``--workflow workflows/demo.yaml`` serves that workflow's demo world and reads the
inputs of its first chunk through the production reader (the central ``--chunk`` px of its interior with
the halo around) instead of the synthetic fields.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_demo_loop import reference_demo_loop  # noqa: E402

from miso_mapper.inference.chunk_cost import chunk_load  # noqa: E402
from miso_mapper.inference.flops import query_flops  # noqa: E402
from miso_mapper.inference.miso import MisoPredictor, PredictorConfig  # noqa: E402
from miso_mapper.inference.synthetic import fit_synthetic, seeded_network, synthetic_inputs  # noqa: E402
from miso_mapper.model import MisoNetConfig  # noqa: E402

TASKS = ("permafrost", "taxonomy")


def cpu_model() -> str:
    """The CPU's model name (``lscpu``), or the platform's processor string."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def flops_of(fn: Callable[[], Any]) -> tuple[int, Any]:
    """(FLOPs counted by FlopCounterMode, result) of one call."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def agreement(fast: dict[str, np.ndarray], ref: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, float]:
    """Argmax agreement and mean |Δp| per task over ``valid`` pixels (maps are (C, y, x))."""
    out: dict[str, float] = {}
    for task in fast:
        a, b = fast[task][:, valid], ref[task][:, valid]
        if task == "permafrost":
            agree = float(((a[0] > 0.5) == (b[0] > 0.5)).mean())
        else:
            agree = float((a.argmax(0) == b.argmax(0)).mean())
        out[f"{task}_argmax_agreement"] = agree
        out[f"{task}_mean_abs_diff"] = float(np.abs(a - b).mean())
        out[f"{task}_max_abs_diff"] = float(np.abs(a - b).max())
    return out


def world_chunk_inputs(workflow_path: Path, chunk: int, halo: int) -> Any:
    """``read_inputs`` of the central ``chunk`` px (+ ``halo``) of the first chunk of a served demo world."""
    from miso_mapper.config import load_workflow
    from miso_mapper.imagery.chunk import read_inputs
    from miso_mapper.imagery.covariates import find_covariate_sources
    from miso_mapper.imagery.search import search_items
    from miso_mapper.plan import make_plan
    from miso_mapper.world import serve_world

    workflow = load_workflow(workflow_path)
    assert workflow.world is not None, "--workflow needs a demo workflow with a `world` section"
    with serve_world(workflow.world.directory) as served:
        workflow = load_workflow(workflow_path, {"imagery": {"stac_url": served.stac_url}})
        first = make_plan(workflow).chunks[0]
        items = search_items(first.halo_geobox, workflow.imagery)
        cov = find_covariate_sources(workflow.covariates, first.halo_geobox, workflow.imagery.stac_url)
        ds = read_inputs(first.halo_geobox, items, cov, workflow.imagery)
    h, w = ds.sizes["y"], ds.sizes["x"]
    r0, c0 = (h - chunk) // 2 - halo, (w - chunk) // 2 - halo
    if r0 < 0 or c0 < 0:
        raise SystemExit(f"--chunk {chunk} + 2 x --halo {halo} is larger than the world's chunk ({h} x {w} px)")
    return ds.isel(y=slice(r0, r0 + chunk + 2 * halo), x=slice(c0, c0 + chunk + 2 * halo))


#: The row of the default before multi-rate queries (2026-11-30).
PREVIOUS = "previous default (single-rate)"


def previous_default(net: MisoNetConfig) -> PredictorConfig:
    """The predictor's default before multi-rate queries: the same ensemble with every stage evaluated at
    every queried point, queried every ``finest cell / 3`` px rounded down to a divisor of the stride (1 px
    for 3.9 px cells, 5 px for tiny's 15.6 px)."""
    cell = net.crop_size / net.input_size * 4
    spacing = max(d for d in range(1, 51) if 50 % d == 0 and d <= max(1.0, cell / 3))
    return PredictorConfig(multi_rate=False, query_spacing=spacing)


def cost_model_table(net: MisoNetConfig, fast_cfg: PredictorConfig, chunk: int) -> dict[str, float]:
    """FLOP per output pixel of one task's ``net`` on a ``chunk`` px chunk, from the predictor's cost model
    (:func:`~miso_mapper.inference.chunk_cost.chunk_load`, exact against FlopCounterMode: tests/test_flops.py):
    the literal reference loop (every pixel of every stride-50 window on a ``window / 2`` halo, plus the
    location branch it runs), the default before multi-rate queries (:func:`previous_default`), ``fast_cfg``,
    and the floor (each pixel encoded once and queried once)."""
    ref_cfg = PredictorConfig.reference()
    f = query_flops(net)
    w = ref_cfg.window
    loop = chunk_load(ref_cfg, [net], chunk, ref_cfg.required_halo())
    loop_flop = loop.flop(net) + loop.output_points * f.location
    rows = {"reference loop (demo.py)": loop_flop / loop.pixels,
            PREVIOUS: chunk_load(previous_default(net), [net], chunk, fast_cfg.required_halo()).flop_per_pixel(net),
            "predictor, fast": chunk_load(fast_cfg, [net], chunk, fast_cfg.required_halo()).flop_per_pixel(net),
            "one query per pixel (floor)": f.encode / (w * w) + f.point_flop}
    return rows


def print_cost_model(title: str, rows: dict[str, float]) -> None:
    """The table of :func:`cost_model_table`, with ratios to the loop and to the previous default."""
    loop, before = rows["reference loop (demo.py)"], rows[PREVIOUS]
    print(title)
    print(f"  {'setting':<36} {'FLOP/px':>10} {'loop / this':>11} {'this / previous':>15}")
    for name, fl in rows.items():
        print(f"  {name:<36} {fl:>10.3g} {loop / fl:>11.1f} {fl / before:>15.3f}")


def _maps(ds: Any) -> dict[str, np.ndarray]:
    return {"permafrost": ds["permafrost_probability"].values[None], "taxonomy": ds["taxonomy_probability"].values}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON summary (also printed as the last line)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=["tiny", "small", "reference"], default="tiny")
    ap.add_argument("--chunk", type=int, default=250, help="interior side, px")
    ap.add_argument("--support", type=int, default=None, help="fast setting: support (default PredictorConfig's)")
    ap.add_argument("--spacing", type=int, default=None, help="fast setting: query spacing (default: auto)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the fast predictor (median)")
    ap.add_argument("--fit-steps", type=int, default=0,
                    help="briefly fit the networks to a synthetic truth first (0 = calibrated random networks)")
    ap.add_argument("--check-reference-setting", action="store_true",
                    help="also run the predictor's reference setting on the loop's grid and report max |Δp|")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoints", type=Path, default=None,
                    help="folder with permafrost.safetensors and taxonomy.safetensors (default: seeded networks)")
    ap.add_argument("--workflow", type=Path, default=None,
                    help="demo workflow whose world's first chunk supplies the inputs (default: synthetic)")
    ap.add_argument("--flops-only", action="store_true",
                    help="print only the cost model's FLOP per pixel (the reference preset on a CPU: its loop would "
                         "take hours) and exit")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    over = {k: v for k, v in (("support", args.support), ("query_spacing", args.spacing)) if v is not None}
    fast_cfg = PredictorConfig(device=args.device, **over)
    if args.flops_only:
        return flops_only(args, fast_cfg)
    ref_cfg = PredictorConfig.reference(device=args.device)
    w = fast_cfg.window
    halos = {"loop": ref_cfg.required_halo(), "fast": fast_cfg.required_halo(),
             "full": w - w // 2 + 2 * ref_cfg.stride}  # full: every interior pixel sees all its 25 windows
    big = max(halos.values())
    if args.workflow is not None:
        inputs = world_chunk_inputs(args.workflow, args.chunk, big)
    else:
        inputs = synthetic_inputs(args.chunk + 2 * big, args.chunk + 2 * big, seed=args.seed,
                                  invalid_box=(slice(big + args.chunk // 3, big + args.chunk // 2),
                                               slice(0, big + args.chunk // 5)))

    def grid(halo: str) -> tuple[Any, tuple[slice, slice]]:
        """The inputs cut to the interior plus ``halos[halo]`` px, and the interior's slices in it."""
        h, cut = halos[halo], big - halos[halo]
        sub = inputs.isel(y=slice(cut, cut + args.chunk + 2 * h), x=slice(cut, cut + args.chunk + 2 * h))
        return sub, (slice(h, h + args.chunk), slice(h, h + args.chunk))

    valid = grid("loop")[0]["valid"].values[grid("loop")[1]]
    km2 = args.chunk * args.chunk * 100 / 1e6
    if args.checkpoints is not None:
        from miso_mapper.model import load_checkpoint

        nets = {t: load_checkpoint(args.checkpoints / f"{t}.safetensors") for t in TASKS}
        args.preset = f"trained ({args.checkpoints})"
    else:
        nets = {t: seeded_network(t, args.preset, seed=args.seed + i, calibrate_on=inputs)
                for i, t in enumerate(TASKS)}
    fit_s = 0.0
    if args.fit_steps:
        fit_s, _ = timed(lambda: [fit_synthetic(n, inputs, steps=args.fit_steps, seed=args.seed)
                                  for n in nets.values()])
    print(f"# {args.preset} networks, chunk {args.chunk} px ({km2:.2f} km²), halos {halos} px, device "
          f"{args.device}, {torch.get_num_threads()} threads, fit steps {args.fit_steps} ({fit_s:.0f} s)", flush=True)

    # --- the literal reference loop (window by window, float32) on its own grid
    loop_inputs, loop_int = grid("loop")
    loop_maps: dict[str, np.ndarray] = {}
    ref_s = 0.0
    ref_windows = 0
    for task, net in nets.items():
        dt, out = timed(lambda net=net: reference_demo_loop(net, loop_inputs, interval=5, device=args.device))
        ref_s += dt
        ref_windows = int(out["windows"])
        m = out["prediction"][loop_int].transpose(2, 0, 1).astype(np.float32)
        loop_maps[task] = np.where(valid[None], m, np.nan)
    one = inputs.isel(y=slice(0, w), x=slice(0, w))
    ref_flops = sum(flops_of(lambda net=net: reference_demo_loop(net, one, interval=5, device=args.device))[0]
                    for net in nets.values()) * ref_windows
    print(f"reference loop: {ref_s:.1f} s, {ref_windows} windows per network", flush=True)
    rows: list[tuple[str, float, float, float]] = [("reference loop (demo.py)", ref_s, 1.0, ref_flops)]
    result: dict[str, Any] = {}
    if args.check_reference_setting:
        pref = MisoPredictor(nets["permafrost"], nets["taxonomy"], ref_cfg)
        flops_rs, (dt_rs, out_rs) = flops_of(lambda: timed(lambda: pref.predict_chunk(loop_inputs, loop_int)))
        eq = agreement(_maps(out_rs), loop_maps, valid)
        result["reference_setting_max_abs_diff"] = max(eq[f"{t}_max_abs_diff"] for t in TASKS)
        rows.append(("predictor, reference setting", dt_rs, ref_s / dt_rs, flops_rs))
        print(f"predictor reference setting: {dt_rs:.1f} s, max |Δp| vs loop "
              f"{result['reference_setting_max_abs_diff']:.2e}", flush=True)

    # --- the reference map with full context (every pixel averaged over all its 25 windows)
    full_inputs, full_int = grid("full")
    pfull = MisoPredictor(nets["permafrost"], nets["taxonomy"], ref_cfg)
    full_s, out_full = timed(lambda: pfull.predict_chunk(full_inputs, full_int))
    ref_maps = _maps(out_full)
    print(f"reference map with full context: {full_s:.1f} s, {pfull.stats.windows} windows", flush=True)

    # --- the fast predictor
    fast_inputs, fast_int = grid("fast")
    pfast = MisoPredictor(nets["permafrost"], nets["taxonomy"], fast_cfg)
    pfast.predict_chunk(fast_inputs, fast_int)  # warm-up
    times = []
    for _ in range(max(1, args.repeats)):
        dt, out_f = timed(lambda: pfast.predict_chunk(fast_inputs, fast_int))
        times.append(dt)
    fast_s = statistics.median(times)
    flops_fast, _ = flops_of(lambda: pfast.predict_chunk(fast_inputs, fast_int))
    fast = _maps(out_f)
    rows.append((f"predictor, fast (support {fast_cfg.support}, spacing {pfast.query_spacing})", fast_s,
                 ref_s / fast_s, flops_fast))
    agree = agreement(fast, ref_maps, valid)
    vs_loop = agreement(fast, loop_maps, valid)

    # --- the floor: each pixel encoded once and queried once, per network
    floor = 0.0
    for net in nets.values():
        win = torch.from_numpy(np.concatenate([one["s2"].values, one["cov"].values])[None].astype(np.float32))
        with torch.inference_mode():
            enc, feats = flops_of(lambda net=net, win=win: net.encode(win.to(net.out[0].weight.device)))
            pts = torch.rand(1, 4096, 2, device=win.device) * 2 - 1
            qf, _ = flops_of(lambda net=net, feats=feats, pts=pts: net.query(feats, pts, None))
        floor += enc / (w * w) + qf / 4096

    npx = args.chunk * args.chunk
    print()
    print(f"{'setting':<44} {'s/km²':>10} {'speed-up':>9} {'FLOP/px':>10} {'x floor':>8}")
    for name, secs, speed, fl in rows:
        print(f"{name:<44} {secs / km2:>10.2f} {speed:>9.1f} {fl / npx:>10.3g} {fl / npx / floor:>8.2f}")
    print(f"{'one query per pixel (floor)':<44} {'':>10} {'':>9} {floor:>10.3g} {1.0:>8.2f}")
    print()
    print("fast vs the reference map (full context):")
    for t in TASKS:
        print(f"  {t:<12} argmax agreement {agree[f'{t}_argmax_agreement']:.4f}  mean |Δp| "
              f"{agree[f'{t}_mean_abs_diff']:.4f}  max |Δp| {agree[f'{t}_max_abs_diff']:.3f}")
    print("fast vs the literal loop's map on its 125 px halo (edge pixels there see fewer windows):")
    for t in TASKS:
        print(f"  {t:<12} argmax agreement {vs_loop[f'{t}_argmax_agreement']:.4f}  mean |Δp| "
              f"{vs_loop[f'{t}_mean_abs_diff']:.4f}")
    print(f"fast: {pfast.stats.windows} windows, {pfast.stats.points_queried / npx:.2f} queries per interior pixel "
          f"(reference loop: {ref_windows * w * w / npx:.1f}), times {[round(t, 2) for t in times]} s")

    print()
    net_cfg = nets["permafrost"].config
    costs = {"network": cost_model_table(net_cfg, fast_cfg, args.chunk),
             "reference": cost_model_table(MisoNetConfig.preset("reference", "permafrost"), fast_cfg, args.chunk)}
    print_cost_model("cost model, these networks (one task):", costs["network"])
    print_cost_model("cost model, the same layout for the reference network (one task):", costs["reference"])

    result = {
        "speedup": ref_s / fast_s,
        "cost_model_flops_per_pixel": {k: {n: round(v) for n, v in rows.items()} for k, rows in costs.items()},
        "argmax_agreement": min(agree[f"{t}_argmax_agreement"] for t in TASKS),
        "mean_abs_diff": max(agree[f"{t}_mean_abs_diff"] for t in TASKS),
        "flops_per_pixel": flops_fast / npx,
        "floor_flops_per_pixel": floor,
        "reference_flops_per_pixel": ref_flops / npx,
        "reference_s_per_km2": ref_s / km2,
        "fast_s_per_km2": fast_s / km2,
        **result,
        **agree,
        "argmax_agreement_vs_loop_125px_halo": min(vs_loop[f"{t}_argmax_agreement"] for t in TASKS),
        "queries_per_pixel": pfast.stats.points_queried / npx,
        "reference_queries_per_pixel": ref_windows * w * w / npx,
        "preset": args.preset,
        "inputs": "world" if args.workflow else "synthetic",
        "chunk": args.chunk, "halos": halos, "stride": fast_cfg.stride, "support": fast_cfg.support,
        "query_spacing": pfast.query_spacing, "fit_steps": args.fit_steps, "device": args.device,
        "threads": torch.get_num_threads(),
        "machine": f"{cpu_model()}, {__import__('os').cpu_count()} cores" if args.device == "cpu"
        else (torch.cuda.get_device_name() if torch.cuda.is_available() else args.device),
    }
    print(json.dumps(result))
    return result


def flops_only(args: argparse.Namespace, fast_cfg: PredictorConfig) -> dict[str, Any]:
    """``--flops-only``: the cost-model table for ``--preset`` (both tasks' networks are the same size but for the
    head, so one task is shown) and its JSON line."""
    net = MisoNetConfig.preset(args.preset, "permafrost")
    rows = cost_model_table(net, fast_cfg, args.chunk)
    q, stages = fast_cfg.spacings([net])
    print_cost_model(f"# {args.preset} network (one task), chunk {args.chunk} px, fast: support {fast_cfg.support}, "
                     f"ramp {fast_cfg.ramp}, query spacing {q}, stage spacings {list(stages)}", rows)
    result = {"benchmark": "predictor", "mode": "flops-only", "preset": args.preset, "chunk": args.chunk,
              "query_spacing": q, "stage_spacings": list(stages), "support": fast_cfg.support,
              "flops_per_pixel": rows["predictor, fast"],
              "previous_default_flops_per_pixel": rows[PREVIOUS],
              "reference_flops_per_pixel": rows["reference loop (demo.py)"],
              "floor_flops_per_pixel": rows["one query per pixel (floor)"],
              "fast_over_previous_default": rows["predictor, fast"] / rows[PREVIOUS],
              "loop_over_fast": rows["reference loop (demo.py)"] / rows["predictor, fast"]}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
