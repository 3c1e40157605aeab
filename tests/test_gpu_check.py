"""The prepared device check's CPU dry run (``benchmarks/gpu_check.py --device cpu --quick``), so the script the
lent GPU will run is itself tested: every section runs, and its figures are the ones that could go wrong."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from .helpers import REPO


def test_gpu_check_dry_run_on_cpu(tmp_path):
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    head = json.loads(proc.stdout.strip().splitlines()[-1])
    assert head == json.loads((tmp_path / "gpu_check.json").read_text())["headline"]
    assert head["failed_sections"] == {} and head["device"] == "cpu" and head["preset"] == "tiny"
    for key in ("matmul_tflops", "copy_gb_per_s", "predictor_tflops", "encoder_tflops", "query_tflops",
                "windows_per_s", "query_points_per_s", "peak_memory_mib", "gpu_sustained_tflops"):
        assert math.isfinite(head[key]) and head[key] > 0, key
    assert 0 < head["encoder_fraction"] and 0 < head["query_fraction"] < 0.5  # a CPU against its own matmul
    # float32 against a float64 twin: really two computations (|Δp| > 0), agreeing to float32 rounding
    assert "float64" in head["precision_compared"]
    for task in ("permafrost", "taxonomy"):
        assert 0.99 <= head["argmax_agreement"][task] <= 1.0
        assert 0 < head["mean_abs_diff"][task] < 1e-4
    assert head["oom_simulated"] is True and head["oom_retries"] >= 1 and head["oom_maps_equal"] is True
    assert "simulated on CPU" in proc.stdout
    assert head["run_status"] == "complete" and head["run_chunks_done"] == head["run_chunks_total"] == 4
    assert set(head["variants"]) >= {"query_batch x4"} and head["variants"]["query_batch x4"] > 0
    # the CPU misses the GPU target: the profile of where the time goes is printed and saved
    assert head["query_target_met"] is False and head["targets_missed"] == ["query MLP fraction of matmul"]
    assert "aten::" in (tmp_path / "profile.txt").read_text()
    assert "set cost.gpu_sustained_tflops" in proc.stdout
