"""Imagery benchmark on the served demo world: cost of producing one chunk's model input.

Prints, per demo chunk: wall seconds, peak resident memory (MB) of a fresh process doing only that chunk,
MB fetched from the asset server, and MB the chunk *needs* (the compressed COG tiles of every asset that
intersect the chunk's halo footprint, read from the files' own tile index), with their ratio. Then the
same chunk with 4, 8, 16 and 32 items per chunk (the world's 12 scenes repeated under new ids, with fresh
URLs so no cache helps) to show that peak memory stays flat as items grow.

Each measurement runs in its own subprocess so peak RSS is that measurement's alone. Medians over
``--repeats``. The last line is one JSON object with the headline figures.

    .venv/bin/python benchmarks/imagery.py [--world DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time, copy
from miso_mapper.config import load_workflow
from miso_mapper.grid import AlaskaGrid
from miso_mapper.imagery.chunk import read_inputs
from miso_mapper.imagery.covariates import find_covariate_sources
from miso_mapper.imagery.search import search_items
args = json.loads(sys.argv[1])
wf = load_workflow(args["workflow"], {"imagery": {"stac_url": args["stac_url"], "max_items": 100,
                                                  "max_block_mb": args["budget_mb"]}})
chunk = AlaskaGrid(wf.grid).chunk_by_id(args["chunk"])
items = search_items(chunk.halo_geobox, wf.imagery)
if args["n_items"]:
    base, items = items, []
    for k in range(args["n_items"]):
        item = copy.deepcopy(base[k % len(base)])
        item["id"] = f"{item['id']}-copy{k}"
        for asset in item["assets"].values():
            asset["href"] += f"?copy={k}&run={args['run']}"
        items.append(item)
sources = find_covariate_sources(wf.covariates, chunk.halo_geobox, args["stac_url"])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
ds = read_inputs(chunk.halo_geobox, items, sources, wf.imagery)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_mb": peak, "baseline_mb": rss0, "items": len(items),
                  "valid_fraction": float(ds["valid"].mean())}))
"""


def needed_bytes(world: Path, items: list[dict], geobox) -> int:
    """Compressed bytes of the COG tiles (full resolution) of every asset that intersect ``geobox``."""
    import rasterio
    from rasterio.warp import transform_bounds

    total = 0
    for item in items:
        for asset in item["assets"].values():
            rel = asset["href"].split("/", 3)[3].split("?")[0]
            with rasterio.open(world / rel) as src:
                left, bottom, right, top = transform_bounds(geobox.crs.to_wkt(), src.crs, *geobox.boundingbox)
                bh, bw = src.block_shapes[0]
                inv = ~src.transform
                c0, r0 = inv * (left, top)
                c1, r1 = inv * (right, bottom)
                rows = range(max(0, int(r0 // bh)), min((src.height - 1) // bh, int(r1 // bh)) + 1)
                cols = range(max(0, int(c0 // bw)), min((src.width - 1) // bw, int(c1 // bw)) + 1)
                for r in rows:
                    for c in cols:
                        size = src.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1)
                        total += int(size or 0)
        # covariates are counted separately below
    return total


def machine() -> str:
    """CPU model and core count, e.g. 'Intel Xeon ... (2 cores)'."""
    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({len(os.sched_getaffinity(0))} cores)"


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                         cwd=REPO, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, help="an existing demo world (default: create one in a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-mb", type=int, default=64, help="imagery.max_block_mb for the runs")
    args = parser.parse_args()

    from miso_mapper.config import load_workflow
    from miso_mapper.imagery.search import search_items
    from miso_mapper.world import WorldSpec, create_world, serve_world

    tmp = tempfile.TemporaryDirectory(prefix="miso-bench-")
    world = args.world
    if world is None:
        world = Path(tmp.name) / "world"
        create_world(world, WorldSpec())
    workflow_path = REPO / "workflows" / "demo.yaml"
    rows, scaling = [], []
    run = 0
    with serve_world(world) as served:
        wf = load_workflow(workflow_path, {"imagery": {"stac_url": served.stac_url, "max_items": 100}})
        from miso_mapper.plan import make_plan

        chunks = make_plan(wf).chunks
        print(f"demo world {world}, {len(chunks)} chunks of {wf.grid.chunk_size} px + {wf.grid.halo} px halo, "
              f"median of {args.repeats}, block budget {args.budget_mb} MB")
        print(f"{'chunk':<12}{'items':>6}{'seconds':>9}{'peak MB':>9}{'imports MB':>12}{'MB read':>9}"
              f"{'MB needed':>11}{'read/need':>11}")
        for chunk in chunks:
            items = search_items(chunk.halo_geobox, wf.imagery)
            need = needed_bytes(world, items, chunk.halo_geobox)
            samples = []
            for _ in range(args.repeats):
                run += 1
                before = len(served.requests())
                # fresh URLs each repeat so GDAL's per-process cache cannot help (each child is fresh anyway)
                res = run_child({"workflow": str(workflow_path), "stac_url": served.stac_url, "chunk": chunk.id,
                                 "n_items": 0, "budget_mb": args.budget_mb, "run": run})
                log = served.requests()[before:]
                res["read"] = sum(r.get("bytes", 0) for r in log if r["path"].startswith("/scenes/")
                                  or r["path"].startswith("scenes/"))
                samples.append(res)
            keys = ("seconds", "peak_mb", "baseline_mb", "read")
            med = {k: statistics.median(s[k] for s in samples) for k in keys}
            rows.append({"chunk": chunk.id, "items": len(items), **med, "needed": need})
            print(f"{chunk.id:<12}{len(items):>6}{med['seconds']:>9.2f}{med['peak_mb']:>9.0f}{med['baseline_mb']:>12.0f}"
                  f"{med['read'] / 1e6:>9.1f}{need / 1e6:>11.1f}{med['read'] / max(need, 1):>11.2f}")

        print("\npeak memory as items per chunk grow (chunk", chunks[0].id, ")")
        print(f"{'items':>6}{'seconds':>9}{'peak MB':>9}{'imports MB':>12}{'s/item':>8}{'peak / peak(4)':>16}")
        for n in (4, 8, 16, 32):
            samples = []
            for _ in range(args.repeats):
                run += 1
                samples.append(run_child({"workflow": str(workflow_path), "stac_url": served.stac_url,
                                          "chunk": chunks[0].id, "n_items": n, "budget_mb": args.budget_mb,
                                          "run": run}))
            med = {k: statistics.median(s[k] for s in samples) for k in ("seconds", "peak_mb", "baseline_mb")}
            scaling.append({"items": n, **med})
            print(f"{n:>6}{med['seconds']:>9.2f}{med['peak_mb']:>9.0f}{med['baseline_mb']:>12.0f}"
                  f"{med['seconds'] / n:>8.2f}{med['peak_mb'] / scaling[0]['peak_mb']:>16.2f}")
    tmp.cleanup()
    headline = {
        "benchmark": "imagery",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "median_seconds_per_chunk": statistics.median(r["seconds"] for r in rows),
        "median_peak_mb_per_chunk": statistics.median(r["peak_mb"] for r in rows),
        "median_read_over_needed": statistics.median(r["read"] / max(r["needed"], 1) for r in rows),
        "peak_mb_by_items": {str(s["items"]): round(s["peak_mb"]) for s in scaling},
        "peak_ratio_32_vs_4": scaling[-1]["peak_mb"] / scaling[0]["peak_mb"],
    }
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
