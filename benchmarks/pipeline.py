"""End-to-end ``run`` throughput on the demo world: km²/h with 1 and 2 Dask worker processes, peak memory.

Both runs use the same served world, the same workflow (workflows/demo.yaml: 4 chunks of 5 km, 100 km²) and
a fresh output folder and LocalCluster each, measured side by side in one process. The predictor is
``synthetic`` by default (NOT a model: it isolates the pipeline, i.e. STAC reads over HTTP, compositing,
covariates, scaling and Zarr writes); ``--predictor miso-tiny`` maps with a seeded tiny MISO network instead
(much slower on CPU). Peak memory per worker is the worker process's peak RSS (``ru_maxrss``).

    .venv/bin/python benchmarks/pipeline.py [--world DIR] [--max-items N] [--halo PX] [--predictor ...]

Prints a table and, as its last line, one JSON object of headline figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _miso_checkpoints(directory: Path) -> dict[str, str]:
    from miso_mapper.inference.synthetic import seeded_network
    from miso_mapper.model import save_checkpoint

    out = {}
    for task in ("permafrost", "taxonomy"):
        path = directory / f"{task}.safetensors"
        save_checkpoint(seeded_network(task, "tiny", seed=1), path)
        out[f"{task}_checkpoint"] = str(path)
    return out


def run_once(world_stac: str, workers: int, out: Path, args: argparse.Namespace,
             model: dict[str, object]) -> dict[str, float]:
    from distributed import Client, LocalCluster

    from miso_mapper.config import load_workflow
    from miso_mapper.pipeline.run import run_workflow

    repo = Path(__file__).resolve().parents[1]
    wf = load_workflow(repo / "workflows" / "demo.yaml", {
        "imagery": {"stac_url": world_stac, "max_items": args.max_items},
        "grid": {"halo": args.halo},
        "output": {"directory": str(out)},
        "model": model,
        "cluster": {"n_workers": workers, "threads_per_worker": 1, "memory_limit": "3GB", "window": 2 * workers},
    })
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, memory_limit="3GB",
                           dashboard_address=":0")
    with Client(cluster) as client:
        t0 = time.perf_counter()
        summary = run_workflow(wf, client=client)
        wall = time.perf_counter() - t0
        rss = client.run(_peak_rss_mib)
    cluster.close()
    if summary.failed:
        raise SystemExit(f"chunks failed: {summary.failed}")
    read = sum(r["read_s"] or 0 for r in summary.results)
    pred = sum(r["predict_s"] or 0 for r in summary.results)
    return {"workers": workers, "seconds": wall, "km2": summary.km2, "km2_per_hour": summary.km2 / wall * 3600,
            "peak_worker_rss_mib": max(rss.values()), "read_s": read, "predict_s": pred}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=None, help="an existing demo world (else one is generated)")
    parser.add_argument("--max-items", type=int, default=8, help="scenes per chunk (demo: 8)")
    parser.add_argument("--halo", type=int, default=175, help="halo px (demo: 175, what the MISO predictor needs)")
    parser.add_argument("--predictor", choices=["synthetic", "miso-tiny"], default="synthetic")
    args = parser.parse_args()

    from miso_mapper.world import WorldSpec, create_world, serve_world

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        world = args.world
        if world is None or not (world / "world.json").exists():
            world = world or tmpdir / "world"
            create_world(world, WorldSpec())
        model: dict[str, object] = {"kind": "synthetic"}
        if args.predictor == "miso-tiny":
            model = {"kind": "miso", "size": "tiny", **_miso_checkpoints(tmpdir)}
        rows = []
        with serve_world(world) as served:
            for workers in (1, 2):
                rows.append(run_once(served.stac_url, workers, tmpdir / f"out{workers}", args, model))
    base = rows[0]
    print(f"demo world, {rows[0]['km2']:.0f} km² (4 chunks), predictor {args.predictor}, "
          f"max_items {args.max_items}, halo {args.halo}, {os.cpu_count()} CPU cores")
    print(f"{'workers':>7} {'seconds':>8} {'km²/h':>8} {'vs 1 worker':>11} {'peak RSS/worker MiB':>20} "
          f"{'read s':>7} {'predict s':>9}")
    for r in rows:
        print(f"{r['workers']:>7} {r['seconds']:>8.1f} {r['km2_per_hour']:>8.0f} "
              f"{r['km2_per_hour'] / base['km2_per_hour']:>10.2f}x {r['peak_worker_rss_mib']:>20.0f} "
              f"{r['read_s']:>7.1f} {r['predict_s']:>9.1f}")
    print(json.dumps({
        "predictor": args.predictor,
        "km2_per_hour_1_worker": round(rows[0]["km2_per_hour"], 1),
        "km2_per_hour_2_workers": round(rows[1]["km2_per_hour"], 1),
        "scaling_2_vs_1": round(rows[1]["km2_per_hour"] / rows[0]["km2_per_hour"], 3),
        "peak_worker_rss_mib_1_worker": round(rows[0]["peak_worker_rss_mib"]),
        "peak_worker_rss_mib_2_workers": round(rows[1]["peak_worker_rss_mib"]),
        "cpu_cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
