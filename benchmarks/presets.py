"""Cost of the small MISO presets side by side: ``tiny`` (64 px input) against ``compact`` candidates (the
reference's 256 px geometry, narrow and shallow encoders).

One process, CPU, float32, ``--threads`` torch threads (1 by default: the demo trains two 1-thread
trainings side by side). For each network, one task (permafrost):

* parameters;
* FLOPs (``torch.utils.flop_counter.FlopCounterMode``, matmul/conv, a multiply-add counts 2) of encoding one
  window and of one query point;
* training step: forward + ``miso_loss`` + backward + AdamW step of a batch of ``--batch`` chips with
  ``--points`` points each (the demo: 16 chips, 5 labelled + 4 pseudo-points), seconds (median);
* mapping: ``encode`` of ``--windows`` windows and ``query`` of ``--queries`` points per window, seconds per
  window and per 1000 query points (median).

Timings are taken in rounds that visit every network in turn, so that load from other jobs hits all alike;
read the ratios to ``tiny``, not the seconds. The last line is one JSON object.

``--chunk N`` instead maps one synthetic chunk of N px (with the predictor's 175 px halo) with seeded
``tiny`` and ``compact`` networks for both tasks through :class:`MisoPredictor` (what ``run`` does per chunk)
at each ``--spacings`` query spacing: seconds and FLOPs per km2.

Usage: ``python benchmarks/presets.py [--repeats 5] [--threads 1]``,
``python benchmarks/presets.py --chunk 500 --spacings 5 2 1``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from miso_mapper.model import MisoNetConfig, build_model, miso_loss  # noqa: E402
from miso_mapper.model.config import _compact  # noqa: E402

#: name -> network config; "compact" is the preset as shipped, the others are the candidates it was chosen from.
CANDIDATES: dict[str, Callable[[], MisoNetConfig]] = {
    "tiny": lambda: MisoNetConfig.preset("tiny", "permafrost"),
    "compact": lambda: MisoNetConfig.preset("compact", "permafrost"),
    "c16-d2-w8": lambda: _compact("permafrost", 16, (2, 2, 2, 2), 8),
    "c16-d1-w8": lambda: _compact("permafrost", 16, (1, 1, 1, 1), 8),
    "c8-d1-w8": lambda: _compact("permafrost", 8, (1, 1, 1, 1), 8),
    "c16-d1-w8-e32": lambda: _compact("permafrost", 16, (1, 1, 1, 1), 8, emb=32),
    "c8-d1-w4": lambda: _compact("permafrost", 8, (1, 1, 1, 1), 4),
    "c8-d1121-w8": lambda: _compact("permafrost", 8, (1, 1, 2, 1), 8),
    "c8-d1-w8-e32": lambda: _compact("permafrost", 8, (1, 1, 1, 1), 8, emb=32),
}


def flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: int, points: int) -> Callable[[], None]:
    s = model.config.input_size
    images = torch.randn(batch, 19, s, s)
    pix = torch.rand(batch, points, 2) * 2 - 1
    geo = torch.rand(batch, points, 2) * 0.1
    labels = torch.full((batch, points), -999.0)
    labels[:, :5] = (torch.rand(batch, 5) > 0.5).float()

    def step() -> None:
        loss, _ = miso_loss(model(images, pix, geo), labels, "permafrost")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _map_step(model: torch.nn.Module, windows: int, queries: int) -> tuple[Callable[[], None], Callable[[], None]]:
    s = model.config.input_size
    images = torch.randn(windows, 19, s, s)
    pix = torch.rand(1, queries, 2) * 2 - 1
    feats = model.encode(images)

    def encode() -> None:
        with torch.no_grad():
            model.encode(images)

    def query() -> None:
        with torch.no_grad():
            model.query(feats, pix, None)
    return encode, query


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def map_chunk(chunk: int, spacings: list[int], repeats: int) -> None:
    """Seconds and FLOPs per km2 of mapping one synthetic ``chunk`` px chunk, tiny (auto spacing) vs compact."""
    from miso_mapper.inference.miso import MisoPredictor, PredictorConfig
    from miso_mapper.inference.synthetic import seeded_network, synthetic_inputs

    halo = PredictorConfig().required_halo()
    inputs = synthetic_inputs(chunk + 2 * halo, chunk + 2 * halo, seed=0)
    interior = (slice(halo, halo + chunk), slice(halo, halo + chunk))
    km2 = chunk * chunk * 100 / 1e6
    runs = [("tiny", None), *[("compact", q) for q in spacings]]
    predictors = {}
    for preset, spacing in runs:
        nets = [seeded_network(t, preset, seed=i) for i, t in enumerate(("permafrost", "taxonomy"))]
        cfg = PredictorConfig(**({} if spacing is None else {"query_spacing": spacing}))
        predictors[(preset, spacing)] = pred = MisoPredictor(*nets, cfg)
        pred.predict_chunk(inputs, interior)  # warm-up
    times: dict[tuple[str, int | None], list[float]] = {k: [] for k in predictors}
    for _ in range(repeats):
        for key, pred in predictors.items():
            times[key].append(_timed(lambda pred=pred: pred.predict_chunk(inputs, interior)))
    print(f"one synthetic chunk of {chunk} px ({km2:.2f} km2) + {halo} px halo, both tasks, median of {repeats}")
    print(f"{'network':10s} {'spacing':>7s} {'s/km2':>8s} {'ratio':>6s} {'GFLOP/km2':>10s} {'ratio':>6s}")
    rows = {}
    for key, pred in predictors.items():
        flop = flops(lambda pred=pred: pred.predict_chunk(inputs, interior)) / km2 / 1e9
        rows[f"{key[0]}@{pred.query_spacing}"] = (statistics.median(times[key]) / km2, flop)
    base = rows[next(iter(rows))]
    for name, (sec, flop) in rows.items():
        preset, spacing = name.split("@")
        print(f"{preset:10s} {spacing:>7s} {sec:8.2f} {sec / base[0]:6.1f} {flop:10.1f} {flop / base[1]:6.1f}")
    print(json.dumps({"benchmark": "presets-chunk", "chunk": chunk, "repeats": repeats,
                      "s_per_km2": {k: round(v[0], 3) for k, v in rows.items()},
                      "gflop_per_km2": {k: round(v[1], 2) for k, v in rows.items()}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--points", type=int, default=9)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--only", nargs="*", default=None, help="names of CANDIDATES to measure (tiny always)")
    ap.add_argument("--chunk", type=int, default=0, help="map one synthetic chunk of this many px instead")
    ap.add_argument("--spacings", type=int, nargs="*", default=[5, 2, 1], help="compact query spacings (--chunk)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.chunk:
        map_chunk(args.chunk, args.spacings, args.repeats)
        return
    names = ["tiny", *[n for n in CANDIDATES if n != "tiny" and (args.only is None or n in args.only)]]

    rows: dict[str, dict[str, float]] = {}
    jobs: dict[str, dict[str, Callable[[], None]]] = {}
    for name in names:
        torch.manual_seed(0)
        cfg = CANDIDATES[name]()
        model = build_model(cfg)
        s = cfg.input_size
        with torch.no_grad():
            model.eval()
            x = torch.randn(1, 19, s, s)
            enc = flops(lambda m=model, x=x: m.encode(x))
            f = model.encode(x)
            pix = torch.rand(1, 256, 2) * 2 - 1
            qry = flops(lambda m=model, f=f, p=pix: m.query(f, p, None)) / 256
        cell = cfg.crop_size / cfg.input_size * 4
        rows[name] = {"params_m": sum(p.numel() for p in model.parameters()) / 1e6, "input": s, "cell_px": cell,
                      "enc_gflop": enc / 1e9, "query_mflop": qry / 1e6}
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        train = _train_step(model, opt, args.batch, args.points)
        model.eval()
        encode, query = _map_step(model, args.windows, args.queries)
        jobs[name] = {"train": train, "encode": encode, "query": query}
        for fn in jobs[name].values():  # warm-up
            model.train(fn is train)
            fn()

    times: dict[str, dict[str, list[float]]] = {n: {k: [] for k in jobs[n]} for n in names}
    for _ in range(args.repeats):
        for name in names:
            for kind, fn in jobs[name].items():
                times[name][kind].append(_timed(fn))
    for name in names:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        rows[name] |= {"train_s": med["train"], "encode_s_per_window": med["encode"] / args.windows,
                       "query_s_per_1000": med["query"] / args.queries * 1000}

    base = rows["tiny"]
    print(f"CPU, {args.threads} thread(s), median of {args.repeats} rounds; ratios to tiny in brackets")
    print(f"train step = batch {args.batch} x {args.points} points fwd+bwd+AdamW; mapping: encode per window, "
          f"query per 1000 points")
    print(f"{'network':16s} {'params M':>8s} {'in':>4s} {'cell':>5s} {'enc GFLOP':>15s} {'query MFLOP':>15s} "
          f"{'train s/batch':>17s} {'encode s/win':>18s} {'query s/1000':>18s}")
    for name, r in rows.items():
        def col(key: str, fmt: str, r: dict[str, float] = r) -> str:
            return f"{format(r[key], fmt)} ({r[key] / base[key]:5.1f}x)"
        print(f"{name:16s} {r['params_m']:8.3f} {r['input']:4.0f} {r['cell_px']:5.1f} {col('enc_gflop', '7.3f')} "
              f"{col('query_mflop', '7.3f')} {col('train_s', '8.3f')} {col('encode_s_per_window', '9.4f')} "
              f"{col('query_s_per_1000', '9.4f')}")
    print(json.dumps({"benchmark": "presets", "threads": args.threads, "repeats": args.repeats,
                      "rows": {n: {k: round(v, 5) for k, v in r.items()} for n, r in rows.items()}}))


if __name__ == "__main__":
    main()
