"""The prepared device check (issue 17): the MISO predictor's GPU path measured and checked in one command.

``python benchmarks/gpu_check.py [--device cuda] [--out DIR]`` (<= 8 minutes on one H200) or
``python benchmarks/gpu_check.py --device cpu --quick`` (the dry run CI executes: tiny preset, 50 px chunk).
Sections (each guarded: a failing one prints its name and a one-line error, the others still run):

1. environment: device name, torch / CUDA / cuDNN versions, the measured dense matmul rate (bf16 on CUDA,
   float32 on CPU; random operands, warm-up, median of repeats timed with CUDA events) and a device-to-device
   copy bandwidth (bytes read + written): the local ceilings;
2. the ``reference`` preset (``--quick``: ``tiny``), seeded calibrated weights, both tasks, on a 500 px chunk
   (``--quick``: 50 px, the smallest multiple of the stride) through :class:`MisoPredictor` with the default
   :class:`PredictorConfig`: windows/s, query points/s, achieved TFLOP/s (``inference/flops.py`` counts of the
   work the predictor reports in ``stats``) and its fraction of the matmul rate, for the whole predictor and
   separately for the encoders and the query MLP work (stages + mappers + head). The split is timed by wrapping
   the predictor's own calls (each network's encoder as the predictor calls it, compiled or not;
   ``_stage_lattices``, ``_stage_query`` and ``model.decode``) with
   CUDA events (host clock on CPU) in one extra instrumented run. Peak GPU memory. Target: query MLP >= 50 % of
   the matmul rate; when missed, the top operators of a ``torch.profiler`` run (self device time);
3. bf16 vs float32 on the same chunk (on CPU, which runs float32 only: float32 vs a float64 twin of the
   networks), argmax agreement and mean |Δp| per task; targets >= 99.5 % and <= 0.005;
4. the OOM path: on CUDA memory is capped (``torch.cuda.set_per_process_memory_fraction``) so the first
   automatically sized batch fails; on CPU the ``torch.OutOfMemoryError`` is injected on the first batch
   ("simulated on CPU"). ``stats.oom_retries`` must be > 0 and the map equal (<= 1e-6) to an uncapped run with
   the batch sizes the retry settled on (same batches, so the same arithmetic); max |Δp| to the default map is
   printed too (there batch shapes differ, so bf16 rounding may);
5. a small demo world, read from a static STAC catalog on disk (``imagery.catalog``: no STAC API server), mapped
   by ``miso-mapper run`` on a ``local-cuda`` cluster (``local`` on CPU) with seeded checkpoints of the preset:
   every chunk done in the manifest, every layer written in the region; skipped (not failed) when a package it
   needs is not installed (the RUN wheel set of ``gpu_wheels.sh``);
6. variants on the same chunk against the default, with agreement to it: ``query_batch`` x4, and
   ``attention: sdpa`` / ``compile: true`` where :class:`PredictorConfig` has those fields.

A time limit (``--time-limit``, 450 s: the device call allows 600) keeps the last line coming: a section or a
variant that would start after it, or without the time it needs (``torch.compile``: 240 s), is reported
"skipped: time limit", not run.

Ends with one JSON line of the headline figures; ``DIR/gpu_check.json`` has the full numbers, ``DIR/profile.txt``
the profile. Exit 1 when a section failed; with ``--strict`` also when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# CPU runs share busy cores (CI, the dry run): spinning OpenMP threads then cost more than the work itself
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predictor import agreement, cpu_model  # noqa: E402

from miso_mapper.inference.chunk_cost import chunk_load  # noqa: E402
from miso_mapper.inference.flops import predictor_flop  # noqa: E402
from miso_mapper.inference.miso import MisoPredictor, stack_inputs  # noqa: E402
from miso_mapper.inference.settings import PredictorConfig  # noqa: E402
from miso_mapper.model import MisoNet  # noqa: E402

TASKS = ("permafrost", "taxonomy")
#: Timing of calls that return host arrays (they synchronise with the device themselves).
HOST = torch.device("cpu")
#: Targets of issue 17: query MLP share of the matmul rate; bf16 vs float32 agreement and mean |Δp|.
QUERY_FRACTION_TARGET = 0.5
AGREEMENT_TARGET = 0.995
MEAN_DIFF_TARGET = 0.005
#: The OOM retry must reproduce the uncapped map with the same batch sizes to this (max |Δp|).
OOM_TOLERANCE = 1e-6
#: Seconds a variant needs left before the time limit to be started (compilation dominates ``torch.compile``).
VARIANT_MIN_SECONDS = {"torch.compile": 240.0}
DEFAULT_VARIANT_MIN_SECONDS = 20.0
#: Packages section 5 needs beyond the check's own (the H200 image lacks them unless carried as wheels: the RUN
#: set of gpu_wheels.sh; benchmarks/h200_imports.py proves the set). The world is read from a static catalog on
#: disk, so neither rustac (STAC API server), pystac-client, pyogrio (vector regions) nor rio-cogeo is among them.
RUN_PACKAGES = ("yaml", "dask", "distributed", "zarr", "numcodecs", "google_crc32c", "rasterio", "pyproj",
                "shapely", "odc.geo", "stackstac", "pystac", "filelock", "psutil")


# ------------------------------------------------------------------------------------------------ helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """(median seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, the last call's result); CUDA
    events on a CUDA ``device``, else the host clock (for calls that synchronise themselves)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times, out = [], None
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class PieceTimer:
    """Accumulates the time of wrapped calls per label: CUDA events around each call on CUDA (the device
    stream's time between them, launch gaps included), the host clock on CPU (which runs synchronously)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._events: dict[str, list[tuple[Any, Any]]] = {}
        self._host: dict[str, float] = {}

    def wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*args, **kwargs)
                end.record()
                self._events.setdefault(label, []).append((start, end))
                return out
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self._host[label] = self._host.get(label, 0.0) + time.perf_counter() - t0
            return out

        return timed

    def seconds(self) -> dict[str, float]:
        sync(self.device)
        out = dict(self._host)
        for label, pairs in self._events.items():
            out[label] = sum(s.elapsed_time(e) for s, e in pairs) / 1e3
        return out


@contextlib.contextmanager
def instrumented(predictor: MisoPredictor, timer: PieceTimer) -> Iterator[None]:
    """Wrap the predictor's encoder and query calls with ``timer`` (labels ``encode`` and ``query``)."""
    saved = {name: predictor.__dict__.get(name) for name in ("_stage_lattices", "_stage_query")}
    encoders = predictor._encoders  # each network's encode, compiled or not (inference/fixed_batch.py)
    predictor._stage_lattices = timer.wrap(MisoPredictor._stage_lattices, "query")  # type: ignore[method-assign]
    predictor._stage_query = timer.wrap(MisoPredictor._stage_query, "query")  # type: ignore[method-assign]
    predictor._encoders = {task: timer.wrap(encode, "encode") for task, encode in encoders.items()}
    for model in predictor.models.values():
        model.decode = timer.wrap(type(model).decode.__get__(model), "query")  # type: ignore[method-assign]
    try:
        yield
    finally:
        predictor._encoders = encoders
        for name, value in saved.items():
            if value is None:
                predictor.__dict__.pop(name, None)
        for model in predictor.models.values():
            model.__dict__.pop("decode", None)


def task_maps(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {t: out[t] for t in TASKS}


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.nanmax(np.abs(a[t] - b[t]))) for t in TASKS)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(title: str, rows: list[tuple[str, Any]]) -> None:
    print(f"\n## {title}")
    for name, value in rows:
        print(f"  {name:<46} {fmt(value)}")
    sys.stdout.flush()


# ------------------------------------------------------------------------------------------------ state
class Check:
    """What the sections share: arguments, device, networks, inputs, the default map."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.preset = args.preset or ("tiny" if args.quick else "reference")
        self.chunk = args.chunk or (50 if args.quick else 500)
        self.repeats = args.repeats or (1 if args.quick else 5)
        self.warmup = 0 if args.quick and not self.cuda else 1
        self.config = PredictorConfig(device=args.device)
        self.halo = self.config.required_halo()
        self.results: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.missed: list[str] = []
        self._nets: dict[str, MisoNet] | None = None
        self._inputs: Any = None
        self.default_map: dict[str, np.ndarray] | None = None
        self.default_seconds: float | None = None
        self.deadline = time.perf_counter() + args.time_limit

    def seconds_left(self) -> float:
        """Seconds until ``--time-limit`` (counted from the start of the check)."""
        return self.deadline - time.perf_counter()

    @property
    def interior(self) -> tuple[slice, slice]:
        return (slice(self.halo, self.halo + self.chunk),) * 2

    def inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """The chunk's ``(19, H, W)`` image and ``(H, W)`` valid mask (synthetic, seeded)."""
        if self._inputs is None:
            from miso_mapper.inference.synthetic import synthetic_inputs

            side = self.chunk + 2 * self.halo
            ds = synthetic_inputs(side, side, seed=self.args.seed)
            self._inputs = (stack_inputs(ds), np.asarray(ds["valid"].values, dtype=bool), ds)
        return self._inputs[0], self._inputs[1]

    def nets(self) -> dict[str, MisoNet]:
        """Seeded networks of the preset, calibrated on the chunk (see :func:`seeded_network`)."""
        if self._nets is None:
            from miso_mapper.inference.synthetic import seeded_network

            self.inputs()
            self._nets = {t: seeded_network(t, self.preset, seed=self.args.seed + i, calibrate_on=self._inputs[2])
                          for i, t in enumerate(TASKS)}
        return self._nets

    def predictor(self, **overrides: Any) -> MisoPredictor:
        nets = self.nets()
        return MisoPredictor(nets["permafrost"], nets["taxonomy"], PredictorConfig(device=self.args.device,
                                                                                   **overrides))

    def predict(self, predictor: MisoPredictor) -> dict[str, np.ndarray]:
        image, valid = self.inputs()
        return predictor.predict_arrays(image, valid, self.interior)

    def valid_interior(self) -> np.ndarray:
        return self.inputs()[1][self.interior]

    def flops(self, predictor: MisoPredictor) -> tuple[int, int]:
        """(encoder FLOP, query FLOP) of the predictor's last chunk, both networks, from its ``stats``."""
        s = predictor.stats
        enc = qry = 0
        for model in predictor.models.values():
            total = predictor_flop(model.config, s.windows, s.stage_points, s.points_queried)
            e = predictor_flop(model.config, s.windows, [0] * len(s.stage_points), 0)
            enc, qry = enc + e, qry + total - e
        return enc, qry


# ------------------------------------------------------------------------------------------------ sections
def section_environment(c: Check) -> None:
    dev = c.device
    r: dict[str, Any] = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version()}
    if c.cuda:
        props = torch.cuda.get_device_properties(dev)
        r |= {"name": props.name, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
              "multiprocessors": props.multi_processor_count, "memory_gib": round(props.total_memory / 2**30, 1)}
        n, dtype = (4096 if c.args.quick else 8192), torch.bfloat16
        copy_bytes = (256 if c.args.quick else 2048) * 2**20
    else:
        r |= {"name": cpu_model(), "cuda": None, "cudnn": None, "threads": torch.get_num_threads()}
        n, dtype = (512 if c.args.quick else 2048), torch.float32
        copy_bytes = 64 * 2**20
    gen = torch.Generator(device=dev).manual_seed(c.args.seed)
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    t, _ = median_seconds(lambda: torch.matmul(a, b, out=out), dev, repeats=10, warmup=3)
    assert torch.isfinite(out.float()).all(), "the matmul produced non-finite values"
    r |= {"matmul_dtype": str(dtype).removeprefix("torch."), "matmul_n": n, "matmul_tflops": 2 * n**3 / t / 1e12}
    src = torch.rand(copy_bytes // 4, device=dev, generator=gen)
    dst = torch.empty_like(src)
    t, _ = median_seconds(lambda: dst.copy_(src), dev, repeats=10, warmup=2)
    r["copy_gb_per_s"] = 2 * copy_bytes / t / 1e9
    c.results["environment"] = r
    table("1. environment (local ceilings)", [
        ("device", f"{r['name']} ({r['device']})"),
        ("torch / CUDA / cuDNN", f"{r['torch']} / {r['cuda']} / {r['cudnn']}"),
        (f"dense {r['matmul_dtype']} matmul {n}^3, TFLOP/s (median of 10)", r["matmul_tflops"]),
        ("device-to-device copy, GB/s (read + write)", r["copy_gb_per_s"])])


def matmul_rate(c: Check) -> float | None:
    return c.results.get("environment", {}).get("matmul_tflops")


def section_predictor(c: Check) -> None:
    p = c.predictor()
    if c.cuda:
        torch.cuda.reset_peak_memory_stats(c.device)
    # warm-up (cuDNN/cuBLAS handles, allocator, batch sizing) except in the CPU dry run, which has no GPU to warm
    seconds, out = median_seconds(lambda: c.predict(p), HOST, repeats=c.repeats, warmup=c.warmup)
    c.default_map, c.default_seconds = task_maps(out), seconds
    peak_mib = (torch.cuda.max_memory_allocated(c.device) / 2**20 if c.cuda
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    s = p.stats
    enc_flop, qry_flop = c.flops(p)
    expected = chunk_load(p.config, [m.config for m in p.models.values()], c.chunk, c.halo)
    assert s.windows == expected.windows, f"predictor encoded {s.windows} windows, the cost model counts " \
                                          f"{expected.windows}"
    timer = PieceTimer(c.device)
    with instrumented(p, timer):
        c.predict(p)
    pieces = timer.seconds()
    peak = matmul_rate(c)
    r: dict[str, Any] = {
        "preset": c.preset, "chunk_px": c.chunk, "halo_px": c.halo, "seconds": seconds, "windows": s.windows,
        "points_queried": s.points_queried, "stage_points": s.stage_points, "batch_size": s.batch_size,
        "query_batch": s.query_batch, "encoder_gflop": enc_flop / 1e9, "query_gflop": qry_flop / 1e9,
        "windows_per_s": s.windows / seconds, "query_points_per_s": s.points_queried / seconds,
        "tflops": (enc_flop + qry_flop) / seconds / 1e12,
        "encoder_seconds": pieces.get("encode"), "query_seconds": pieces.get("query"),
        "split_timing": "CUDA events around the predictor's own calls" if c.cuda else "host clock around the "
                        "predictor's own calls",
        "peak_memory_mib": peak_mib, "peak_memory_kind": "torch.cuda.max_memory_allocated" if c.cuda
        else "process max RSS (CPU)",
    }
    r["encoder_windows_per_s"] = s.windows / r["encoder_seconds"]
    r["encoder_tflops"] = enc_flop / r["encoder_seconds"] / 1e12
    r["query_mlp_points_per_s"] = s.points_queried / r["query_seconds"]
    r["query_tflops"] = qry_flop / r["query_seconds"] / 1e12
    for key in ("tflops", "encoder_tflops", "query_tflops"):
        r[key.replace("tflops", "fraction")] = r[key] / peak if peak else None
    r["query_target_met"] = bool(r["query_fraction"] is not None and r["query_fraction"] >= QUERY_FRACTION_TARGET)
    c.results["predictor"] = r
    frac = (lambda v: f"{v:.1%} of matmul" if v is not None else "no matmul rate")  # noqa: E731
    table(f"2. {c.preset} preset, {c.chunk} px chunk, both tasks, default PredictorConfig "
          f"({'bf16' if c.cuda and p.config.amp else 'float32'}; split by {r['split_timing']})", [
              (f"whole predictor, s (median of {c.repeats})", seconds),
              ("windows / batch, points / query call", f"{s.batch_size} / {s.query_batch}"),
              ("windows/s (each through both networks)", r["windows_per_s"]),
              ("query points/s (both networks)", r["query_points_per_s"]),
              ("whole predictor TFLOP/s", f"{r['tflops']:.4g} ({frac(r['fraction'])})"),
              ("encoders: s, windows/s", f"{r['encoder_seconds']:.4g}, {r['encoder_windows_per_s']:.4g}"),
              ("encoders TFLOP/s", f"{r['encoder_tflops']:.4g} ({frac(r['encoder_fraction'])})"),
              ("query MLP (stages+mappers+head): s, points/s",
               f"{r['query_seconds']:.4g}, {r['query_mlp_points_per_s']:.4g}"),
              ("query MLP TFLOP/s", f"{r['query_tflops']:.4g} ({frac(r['query_fraction'])})"),
              (f"target: query MLP >= {QUERY_FRACTION_TARGET:.0%} of matmul",
               "met" if r["query_target_met"] else "MISSED"),
              (f"peak memory, MiB ({r['peak_memory_kind']})", peak_mib)])
    if not r["query_target_met"]:
        c.missed.append("query MLP fraction of matmul")
        profile(c, p)


def profile(c: Check, p: MisoPredictor) -> None:
    """Top operators of one predictor run by self device time (CPU: self CPU time); full table to profile.txt."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if c.cuda else [])
    with torch_profile(activities=acts) as prof:
        c.predict(p)
    sync(c.device)
    key = "self_device_time_total" if c.cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    print(f"\n   where the time goes (torch.profiler, top operators by {key}):")
    print(averages.table(sort_by=key, row_limit=12, max_name_column_width=48))
    (c.args.out / "profile.txt").write_text(averages.table(sort_by=key, row_limit=60, max_name_column_width=80))
    c.results["predictor"]["profile_top"] = [
        {"op": e.key, "self_ms": getattr(e, key) / 1e3, "calls": e.count}
        for e in sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:12]]


def float64_twin(model: MisoNet) -> MisoNet:
    """A float64 copy of ``model`` that casts its inputs and query coordinates to float64 where they enter."""
    twin = copy.deepcopy(model).double()
    encode, decode = twin.encode, twin.decode
    twin.encode = lambda images: encode(images.double())  # type: ignore[method-assign]
    twin.decode = lambda sat, cov: decode(sat.double(), cov.double())  # type: ignore[method-assign]
    for enc in (twin.sat_encoder, twin.cov_encoder):
        for layer in enc.query_layers:
            layer.query = (lambda q: lambda proj, coords: q(proj, coords.double()))(layer.query)
    return twin


def section_precision(c: Check) -> None:
    valid = c.valid_interior()
    if c.cuda:
        low = c.default_map or task_maps(c.predict(c.predictor()))
        high = task_maps(c.predict(c.predictor(amp=False)))
        what = "bf16 (default) vs float32"
    else:
        low = c.default_map or task_maps(c.predict(c.predictor()))
        nets = c.nets()
        p64 = MisoPredictor(float64_twin(nets["permafrost"]), float64_twin(nets["taxonomy"]),
                            PredictorConfig(device="cpu"))
        high = task_maps(c.predict(p64))
        what = "float32 vs float64 (CPU runs float32 only)"
    a = agreement(low, high, valid)
    r = {"compared": what, **a}
    r["targets_met"] = all(a[f"{t}_argmax_agreement"] >= AGREEMENT_TARGET and a[f"{t}_mean_abs_diff"]
                           <= MEAN_DIFF_TARGET for t in TASKS)
    c.results["precision"] = r
    table(f"3. {what}, same chunk (targets: agreement >= {AGREEMENT_TARGET:.1%}, mean |Δp| <= "
          f"{MEAN_DIFF_TARGET})", [
              (f"{t}: argmax agreement / mean |Δp| / max |Δp|",
               f"{a[f'{t}_argmax_agreement']:.5f} / {a[f'{t}_mean_abs_diff']:.3g} / {a[f'{t}_max_abs_diff']:.3g}")
              for t in TASKS] + [("targets", "met" if r["targets_met"] else "MISSED")])
    if not r["targets_met"]:
        c.missed.append("precision agreement")


def section_oom(c: Check) -> None:
    p = c.predictor()
    if c.cuda:
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(c.device).total_memory
        peak = c.results.get("predictor", {}).get("peak_memory_mib")
        first = (peak * 2**20) if peak else 8 * 2**30
        cap = torch.cuda.memory_allocated(c.device) + 0.5 * first
        how = f"memory capped at {cap / 2**20:.0f} MiB (set_per_process_memory_fraction)"
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), c.device)
        try:
            capped = c.predict(p)
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, c.device)
            torch.cuda.empty_cache()
    else:
        how = "simulated on CPU: torch.OutOfMemoryError raised on the first batch"
        real = p._predict_batch
        calls = {"n": 0}

        def failing_once(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == 1:
                raise torch.OutOfMemoryError("simulated out of memory (gpu_check, CPU)")
            return real(*args, **kwargs)

        p._predict_batch = failing_once  # type: ignore[method-assign]
        capped = c.predict(p)
    s = p.stats
    same = task_maps(c.predict(c.predictor(batch_size=s.batch_size, query_batch=s.query_batch)))
    diff_same = max_abs_diff(task_maps(capped), same)
    default = c.default_map or task_maps(c.predict(c.predictor()))
    r = {"how": how, "simulated": not c.cuda, "oom_retries": s.oom_retries, "batch_size": s.batch_size,
         "query_batch": s.query_batch, "max_abs_diff_same_batches": diff_same,
         "max_abs_diff_default": max_abs_diff(task_maps(capped), default),
         "maps_equal": bool(s.oom_retries > 0 and diff_same <= OOM_TOLERANCE)}
    c.results["oom"] = r
    table(f"4. OOM path ({how})", [
        ("oom_retries", s.oom_retries), ("settled at windows / points per call", f"{s.batch_size} / "
                                                                                 f"{s.query_batch}"),
        ("max |Δp| vs uncapped run, same batch sizes", diff_same),
        ("max |Δp| vs the default (auto-sized) map", r["max_abs_diff_default"]),
        ("retried and equal", "yes" if r["maps_equal"] else "NO")])
    if not r["maps_equal"]:
        raise AssertionError(f"OOM path: {s.oom_retries} retries, max |Δp| {diff_same:.3g} to the same-batch map")


def missing_packages(names: tuple[str, ...]) -> list[str]:
    out = []
    for name in names:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ModuleNotFoundError:
            out.append(name)
    return out


def section_run(c: Check) -> None:
    missing = missing_packages(RUN_PACKAGES + (("dask_cuda",) if c.cuda else ()))
    if missing:
        c.results["run"] = {"status": f"skipped: {', '.join(missing)} not installed"}
        table("5. demo world through `miso-mapper run`", [("status", c.results["run"]["status"])])
        return
    with tempfile.TemporaryDirectory(prefix="gpu-check-run-", dir=c.args.out) as tmp:
        c.results["run"] = run_small_world(c, Path(tmp))
    r = c.results["run"]
    table(f"5. small demo world through `miso-mapper run` ({r['cluster']} cluster, {c.preset} checkpoints)", [
        ("chunks done / planned", f"{r['chunks_done']} / {r['chunks_total']}"),
        ("pixels of the region observed (valid_observations > 0)", f"{r['observed_share']:.3f}"),
        ("layers written exactly where observed", f"{len(r['layers_checked'])} (AOA, conformal set: none)"),
        ("world / run seconds", f"{r['world_seconds']:.1f} / {r['run_seconds']:.1f}"),
        ("status", r["status"])])
    if r["status"] != "complete":
        raise AssertionError(r["status"])


def run_small_world(c: Check, tmp: Path) -> dict[str, Any]:
    """Create a 2 km world and its static catalog, save seeded checkpoints, run the workflow through the CLI,
    check manifest + store."""
    import yaml
    import zarr

    from miso_mapper.config import load_workflow
    from miso_mapper.layout import RunLayout
    from miso_mapper.model import save_checkpoint
    from miso_mapper.pipeline.manifest import Manifest
    from miso_mapper.pipeline.store import LAYERS, NODATA
    from miso_mapper.world import create_world
    from miso_mapper.world.catalog import export_catalog
    from miso_mapper.world.spec import WorldSpec

    region = (262000.0, 1662000.0, 264000.0, 1664000.0)
    t0 = time.perf_counter()
    create_world(tmp / "world", WorldSpec(seed=c.args.seed, region_bbox=region, margin_m=500.0, n_points=60,
                                          dates_per_year=1))
    world_s = time.perf_counter() - t0
    paths = {f"{t}_checkpoint": str(save_checkpoint(net, tmp / f"{t}.safetensors")) for t, net in c.nets().items()}
    repo = Path(__file__).resolve().parents[1]
    spec = yaml.safe_load((repo / "workflows/demo.yaml").read_text())
    cluster = "local-cuda" if c.cuda else "local"
    # a static catalog read from disk (imagery.catalog), assets as local COGs: no STAC API server, so no rustac
    catalog = export_catalog(tmp / "world", tmp / "catalog")
    spec |= {
        "region": {"bbox": list(region), "bbox_crs": "EPSG:3338"},
        "grid": spec["grid"] | {"chunk_size": 100, "zarr_chunk": 100, "halo": c.halo},
        "imagery": spec["imagery"] | {"catalog": str(catalog), "max_items": 2},
        "model": {"kind": "miso", "size": c.preset, **paths},
        "output": {"directory": str(tmp / "out")},
        "world": spec["world"] | {"directory": str(tmp / "world")},
        "cluster": {"kind": cluster, "n_workers": 1 if c.cuda else 2, "threads_per_worker": 1, "window": 4}}
    wf_path = tmp / "check.yaml"
    wf_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "miso_mapper.cli", "run", str(wf_path)], capture_output=True,
                          text=True, timeout=max(30.0, min(c.args.run_timeout, c.seconds_left())))
    run_s = time.perf_counter() - t0
    (c.args.out / "run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"miso-mapper run exited {proc.returncode}: {tail[0]}")
    wf = load_workflow(wf_path)
    layout = RunLayout.of(wf)
    with Manifest(layout.manifest) as m:
        counts = m.counts()
    g = zarr.open_group(str(layout.store), mode="r")
    x, y = np.asarray(g["x"][...]), np.asarray(g["y"][...])
    cols = np.flatnonzero((x > region[0]) & (x < region[2]))
    rows = np.flatnonzero((y > region[1]) & (y < region[3]))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    written = {name: np.asarray(g[name][(Ellipsis, *box)]) != NODATA for name in LAYERS}
    written = {name: w.all(axis=0) if w.ndim == 3 else w for name, w in written.items()}
    observed = written["valid_observations"] & (np.asarray(g["valid_observations"][box]) > 0)
    # seeded networks carry no area of applicability and no conformal calibration: those layers stay empty
    mapped = [n for n in LAYERS if "aoa" not in n and n not in ("taxonomy_set", "valid_observations",
                                                                 "masked_fraction")]
    wrong = {n: int((written[n] != observed).sum()) for n in mapped}
    total = sum(counts.values())
    ok = (counts.get("done", 0) == total > 0 and written["valid_observations"].all() and observed.mean() > 0.3
          and not any(wrong.values()))
    status = "complete" if ok else (f"incomplete: manifest {counts}, observed share {observed.mean():.3f}, pixels "
                                    f"where a layer is written iff observed fails: {wrong}")
    return {"status": status, "cluster": cluster, "chunks_done": counts.get("done", 0), "chunks_total": total,
            "layers_checked": mapped, "observed_share": float(observed.mean()),
            "layer_shares": {n: float(w.mean()) for n, w in written.items()},
            "world_seconds": world_s, "run_seconds": run_s}


def variant_list(c: Check) -> list[tuple[str, dict[str, Any]]]:
    """(name, PredictorConfig overrides) worth timing against the default."""
    q = c.results.get("predictor", {}).get("query_batch") or c.predictor().batch_sizes()[1]
    out: list[tuple[str, dict[str, Any]]] = [("query_batch x4", {"query_batch": 4 * q})]
    fields = PredictorConfig.model_fields
    if "attention" in fields:
        out.append(("attention sdpa", {"attention": "sdpa"}))
    if "compile" in fields:
        if c.cuda or not c.args.quick:
            out.append(("torch.compile", {"compile": True}))
        else:
            print("  (torch.compile left out of the CPU dry run: inductor's C++ build takes minutes on 2 cores)")
    return out


def section_variants(c: Check) -> None:
    valid = c.valid_interior()
    if c.default_map is None or c.default_seconds is None:
        c.default_seconds, out = median_seconds(lambda: c.predict(c.predictor()), HOST, c.repeats, warmup=c.warmup)
        c.default_map = task_maps(out)
    rows: dict[str, Any] = {}
    for name, over in variant_list(c):
        need = VARIANT_MIN_SECONDS.get(name, DEFAULT_VARIANT_MIN_SECONDS)
        if c.seconds_left() < need:
            rows[name] = {"overrides": over, "skipped": f"time limit ({c.seconds_left():.0f} s left, needs {need:.0f})"}
            continue
        try:
            p = c.predictor(**over)
            t0 = time.perf_counter()
            if c.warmup:
                c.predict(p)  # compilation happens here
            warm = time.perf_counter() - t0
            seconds, out = median_seconds(lambda p=p: c.predict(p), HOST, c.repeats, warmup=0)
            a = agreement(task_maps(out), c.default_map, valid)
            equal = all(a[f"{t}_argmax_agreement"] >= AGREEMENT_TARGET and a[f"{t}_mean_abs_diff"]
                        <= MEAN_DIFF_TARGET for t in TASKS)
            rows[name] = {"overrides": over, "seconds": seconds, "warmup_seconds": warm,
                          "speedup": c.default_seconds / seconds, "equal_agreement": equal,
                          "oom_retries": p.stats.oom_retries,
                          "max_abs_diff": max(a[f"{t}_max_abs_diff"] for t in TASKS),
                          "min_argmax_agreement": min(a[f"{t}_argmax_agreement"] for t in TASKS)}
        except Exception as exc:  # one variant failing (e.g. compile on this build) does not stop the others
            rows[name] = {"overrides": over, "error": one_line(exc)}
    good = {n: v for n, v in rows.items() if v.get("equal_agreement") and v["speedup"] > 1.0}
    best = max(good, key=lambda n: good[n]["speedup"]) if good else "default"
    c.results["variants"] = {"default_seconds": c.default_seconds, "rows": rows, "best": best}
    print(f"\n## 6. variants vs the default ({c.default_seconds:.4g} s), same chunk")
    print(f"  {'variant':<18} {'seconds':>9} {'speed-up':>9} {'warm-up s':>10} {'min agree':>10} "
          f"{'max |Δp|':>9}  equal")
    for name, v in rows.items():
        if "error" in v or "skipped" in v:
            print(f"  {name:<18} {'error: ' + v['error'] if 'error' in v else 'skipped: ' + v['skipped']}")
            continue
        print(f"  {name:<18} {v['seconds']:>9.4g} {v['speedup']:>9.3f} {v['warmup_seconds']:>10.3g} "
              f"{v['min_argmax_agreement']:>10.5f} {v['max_abs_diff']:>9.3g}  "
              f"{'yes' if v['equal_agreement'] else 'no'}")
    print(f"  faster at equal agreement: {best}")


SECTIONS: dict[str, Callable[[Check], None]] = {
    "environment": section_environment, "predictor": section_predictor, "precision": section_precision,
    "oom": section_oom, "run": section_run, "variants": section_variants}


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def headline(c: Check) -> dict[str, Any]:
    """The figures of the last line (the full ones are in gpu_check.json)."""
    env, pred = c.results.get("environment", {}), c.results.get("predictor", {})
    prec, oom = c.results.get("precision", {}), c.results.get("oom", {})
    run, var = c.results.get("run", {}), c.results.get("variants", {})

    def rnd(v: Any, n: int = 4) -> Any:
        return float(f"{v:.{n}g}") if isinstance(v, float) else v

    return {
        "check": "gpu_check", "date": datetime.date.today().isoformat(), "device": str(c.device),
        "device_name": env.get("name"), "torch": env.get("torch"), "cuda": env.get("cuda"), "quick": c.args.quick,
        "matmul_tflops": rnd(env.get("matmul_tflops")), "copy_gb_per_s": rnd(env.get("copy_gb_per_s")),
        "preset": c.preset, "chunk_px": c.chunk, "predictor_seconds": rnd(pred.get("seconds")),
        "windows_per_s": rnd(pred.get("windows_per_s")), "query_points_per_s": rnd(pred.get("query_points_per_s")),
        "predictor_tflops": rnd(pred.get("tflops")), "predictor_fraction": rnd(pred.get("fraction")),
        "encoder_tflops": rnd(pred.get("encoder_tflops")), "encoder_fraction": rnd(pred.get("encoder_fraction")),
        "query_tflops": rnd(pred.get("query_tflops")), "query_fraction": rnd(pred.get("query_fraction")),
        "query_target_met": pred.get("query_target_met"), "peak_memory_mib": rnd(pred.get("peak_memory_mib")),
        "precision_compared": prec.get("compared"),
        "argmax_agreement": {t: rnd(prec.get(f"{t}_argmax_agreement"), 6) for t in TASKS} if prec else None,
        "mean_abs_diff": {t: rnd(prec.get(f"{t}_mean_abs_diff")) for t in TASKS} if prec else None,
        "oom_retries": oom.get("oom_retries"), "oom_maps_equal": oom.get("maps_equal"),
        "oom_simulated": oom.get("simulated"), "run_status": run.get("status"),
        "run_chunks_done": run.get("chunks_done"), "run_chunks_total": run.get("chunks_total"),
        "variants": {n: rnd(v.get("speedup")) for n, v in var.get("rows", {}).items()} if var else None,
        "best_variant": var.get("best"), "gpu_sustained_tflops": rnd(pred.get("tflops"), 3),
        "failed_sections": c.failed, "targets_missed": c.missed,
        "skipped_sections": [n for n, r in c.results.items() if isinstance(r, dict)
                             and str(r.get("status", "")).startswith("skipped")],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda, cuda:N or cpu")
    ap.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="folder for gpu_check.json etc.")
    ap.add_argument("--quick", action="store_true", help="tiny preset, 50 px chunk, few repeats (the CI dry run)")
    ap.add_argument("--strict", action="store_true", help="also exit 1 when a target is missed")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    ap.add_argument("--preset", choices=["tiny", "compact", "small", "reference"], default=None)
    ap.add_argument("--chunk", type=int, default=None, help="interior side, px (a multiple of the stride, 50)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-timeout", type=float, default=300.0, help="seconds allowed to `miso-mapper run`")
    ap.add_argument("--time-limit", type=float, default=450.0,
                    help="seconds after the start past which no section or variant starts (the last line still "
                         "comes); the device call allows 600")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    c = Check(args)
    started = time.perf_counter()
    print(f"# gpu_check {datetime.datetime.now().isoformat(timespec='seconds')}: device {args.device}, "
          f"preset {c.preset}, chunk {c.chunk} px + halo {c.halo} px{' (quick)' if args.quick else ''}", flush=True)
    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        t0 = time.perf_counter()
        if c.seconds_left() <= 0:
            c.results[name] = {"status": "skipped: time limit"}
            print(f"\n## {name}: skipped: time limit ({args.time_limit:g} s) reached", flush=True)
            continue
        try:
            SECTIONS[name](c)
        except Exception as exc:  # report the section, go on with the next
            c.failed[name] = one_line(exc)
            print(f"\n## {name}: FAILED: {c.failed[name]}", flush=True)
            (args.out / f"{name}.error.txt").write_text(traceback.format_exc())
        c.results.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
    c.results["total_seconds"] = time.perf_counter() - started
    head = headline(c)
    pred = c.results.get("predictor", {})
    if pred.get("tflops"):
        print(f"\nset cost.gpu_sustained_tflops: {pred['tflops']:.3g}  (the whole predictor's achieved TFLOP/s on "
              f"{head['device_name']}{'; a CPU figure, not for planning' if not c.cuda else ''})")
    print(f"total {c.results['total_seconds']:.1f} s")
    (args.out / "gpu_check.json").write_text(json.dumps({"headline": head, "results": c.results}, indent=1,
                                                        default=str))
    print(json.dumps(head), flush=True)
    return 1 if c.failed or (args.strict and c.missed) else 0


if __name__ == "__main__":
    sys.exit(main())
