"""Export benchmark: seconds and peak memory per tile of ``export_workflow`` on synthetic full-size tiles.

Builds synthetic map stores of 1, 2 and 4 tiles in a row (default: the real AKVEG tile, 5000 x 5000 px at
10 m, 2500 px chunks, 500 px Zarr chunks; smooth fields plus noise so they compress like maps, with no-data
holes), then exports each store in a fresh subprocess (serially, no Dask: one process does every tile, so
its peak RSS is what one worker needs) and reports wall seconds per tile and the child's peak resident
memory (``ru_maxrss``; stores are built in other subprocesses, as Linux carries ``ru_maxrss`` across
exec). If memory streams, the peak does not grow with the number of tiles.

The last line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/export.py [--tile-size 5000] [--tiles 1 2 4] [--compress deflate] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
from miso_mapper.config import load_workflow
from miso_mapper.export import export_workflow
args = json.loads(sys.argv[1])
wf = load_workflow(args["workflow"], args["overrides"])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
res = export_workflow(wf)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "tile_seconds": res.tile_seconds, "peak_mb": peak, "imports_mb": rss0,
                  "written_mb": sum(p.stat().st_size for p in res.files) / 1e6, "exported": res.tiles}))
"""

#: Upper-left of the first tile: AKVEG AK050H50V15 (Fairbanks), EPSG:3338 metres.
X0, Y0 = 250_000.0, 1_700_000.0


def overrides(out: Path, n_tiles: int, tile_size: int, compress: str) -> dict:
    """Workflow overrides (over workflows/demo.yaml) for a row of ``n_tiles`` tiles of ``tile_size`` px."""
    edge = tile_size * 10.0
    return {
        "imagery": {"stac_url": "http://127.0.0.1:9/"},
        "model": {"kind": "synthetic"},
        "grid": {"tile_size": tile_size, "chunk_size": tile_size // 2, "zarr_chunk": 500,
                 "tiles_x": 74 * 5000 // tile_size, "tiles_y": 48 * 5000 // tile_size},
        "region": {"bbox": [X0 + 1, Y0 - edge + 1, X0 + n_tiles * edge - 1, Y0 - 1]},
        "output": {"directory": str(out), "zarr_format": 3},
        "export": {"compress": compress},
    }


def make_store(workflow_path: Path, over: dict) -> int:
    """Write every chunk of a synthetic store; returns the number of chunks."""
    import numpy as np

    from miso_mapper.config import load_workflow
    from miso_mapper.layout import RunLayout
    from miso_mapper.pipeline.store import create_store, stored_layers
    from miso_mapper.plan import make_plan

    wf = load_workflow(workflow_path, over)
    plan = make_plan(wf)
    provenance = {"map_config_hash": "bench", "model_kind": "synthetic",
                  "model_checkpoints": {"synthetic": "0" * 64}}
    store = create_store(RunLayout.of(wf).store, wf, plan.chunks, provenance)
    n = wf.grid.chunk_size
    for k, ch in enumerate(plan.chunks):
        rng = np.random.default_rng(k)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
        phase = rng.random(8).astype(np.float32) * 6.28
        base = np.stack([0.5 + 0.4 * np.sin(6 * xx + phase[i]) * np.cos(5 * yy + phase[i + 1]) for i in range(7)])
        base += rng.normal(0, 0.03, base.shape).astype(np.float32)
        tx = np.clip(base / base.sum(axis=0) * 250 * 7 / 3.5, 0, 250).astype(np.uint8)
        cls = base.argmax(axis=0).astype(np.uint8)
        pf = np.clip(base[2] * 250, 0, 250).astype(np.uint8)
        hole = (slice(n // 3, n // 3 + n // 10), slice(n // 2, n // 2 + n // 8))  # a lake of no data
        pf[hole], cls[hole], tx[(slice(None), *hole)] = 255, 255, 255
        store.write_layers(ch, stored_layers(ch.geobox, pf, tx, cls))
    return len(plan.chunks)


def build_in_child(workflow_path: Path, over: dict) -> int:
    """:func:`make_store` in a subprocess: Linux keeps ``ru_maxrss`` across fork + exec, so this process must
    stay small for the export children's peaks to be their own."""
    arg = json.dumps({"workflow": str(workflow_path), "overrides": over})
    proc = subprocess.run([sys.executable, __file__, "--build-store", arg], capture_output=True, text=True,
                          cwd=REPO, check=False)
    if proc.returncode:
        raise SystemExit(f"store builder failed:\n{proc.stderr}")
    return int(proc.stdout.strip().splitlines()[-1])


def run_child(workflow_path: Path, over: dict) -> dict:
    """Export in a fresh interpreter; its stdout's last line is the measurement."""
    arg = json.dumps({"workflow": str(workflow_path), "overrides": over})
    proc = subprocess.run([sys.executable, "-c", CHILD, arg], capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode:
        raise SystemExit(f"export child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tile-size", type=int, default=5000, help="tile edge, px (5000 = AKVEG 50 km at 10 m)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[1, 2, 4], help="store sizes, in tiles")
    parser.add_argument("--compress", choices=["deflate", "zstd"], default="deflate")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--build-store", default=None, help=argparse.SUPPRESS)  # internal: build_in_child
    args = parser.parse_args()
    if args.build_store:
        spec = json.loads(args.build_store)
        print(make_store(Path(spec["workflow"]), spec["overrides"]))
        return

    workflow_path = REPO / "workflows" / "demo.yaml"
    root = args.workdir or Path(tempfile.mkdtemp(prefix="export-bench-"))
    rows = []
    try:
        for n in args.tiles:
            out = root / f"tiles{n}"
            shutil.rmtree(out, ignore_errors=True)
            over = overrides(out, n, args.tile_size, args.compress)
            t0 = time.perf_counter()
            chunks = build_in_child(workflow_path, over)
            build_s = time.perf_counter() - t0
            m = run_child(workflow_path, over)
            assert len(m["exported"]) == n, m["exported"]
            rows.append({"tiles": n, "chunks": chunks, "build_s": build_s, **m,
                         "s_per_tile": statistics.median(m["tile_seconds"].values())})
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)

    base = rows[0]
    print(f"export of synthetic stores, tiles {args.tile_size} x {args.tile_size} px (10 m), Zarr chunks 500 px, "
          f"COG {args.compress} + predictor 2, blocks 512; serial, one process; {platform.processor() or ''} "
          f"{os.cpu_count()} CPU cores")
    print(f"{'tiles':>5} {'s/tile (median)':>15} {'total s':>8} {'peak MB':>8} {'imports MB':>10} "
          f"{'peak / peak(1)':>14} {'MB written':>10}")
    for r in rows:
        print(f"{r['tiles']:>5} {r['s_per_tile']:>15.1f} {r['seconds']:>8.1f} {r['peak_mb']:>8.0f} "
              f"{r['imports_mb']:>10.0f} {r['peak_mb'] / base['peak_mb']:>14.2f} {r['written_mb']:>10.1f}")
    last = rows[-1]
    print(json.dumps({
        "benchmark": "export",
        "tile_size_px": args.tile_size,
        "seconds_per_tile": round(statistics.median(r["s_per_tile"] for r in rows), 2),
        "seconds_per_tile_by_tiles": {str(r["tiles"]): round(r["s_per_tile"], 2) for r in rows},
        "peak_mb": {str(r["tiles"]): round(r["peak_mb"]) for r in rows},
        f"peak_ratio_{last['tiles']}_vs_{base['tiles']}": round(last["peak_mb"] / base["peak_mb"], 3),
        "mb_written_per_tile": round(last["written_mb"] / last["tiles"], 1),
        "cpu_cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
