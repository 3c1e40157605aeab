"""Configuration that cannot forget the GPU: the reference network on a cluster without GPUs is refused by
``validate``, ``plan`` and ``run`` (one line, exit 2, nothing written) unless ``model.predictor.device: cpu``
opts in; ``job-script`` shows the GPU a slurm/pbs worker job asks for; the statewide workflow asks for one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from miso_mapper.checks import compute_problems
from miso_mapper.config import ClusterConfig, load_workflow
from miso_mapper.errors import UsageError
from miso_mapper.pipeline.clusters import describe_compute

from .helpers import WORKFLOWS

CLI = [sys.executable, "-m", "miso_mapper.cli"]
FAIRBANKS = [260000, 1660000, 270000, 1670000]
REFUSAL = "the reference network would map on CPUs only"
FIXES = ("cluster.gpus_per_worker: 1", "kind: local-cuda", "model.predictor.device: cpu")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)


def reference_file(tmp_path: Path, cluster: dict | None = None, predictor: dict | None = None) -> Path:
    """demo.yaml mapping a 10 km square with the reference network, output in ``tmp_path/out`` (not made)."""
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"]["directory"] = str(tmp_path / "out")
    raw["world"]["directory"] = str(tmp_path / "world")
    raw["region"] = {"bbox": FAIRBANKS}
    raw["model"] = {"kind": "miso", "size": "reference", "predictor": predictor or {}}
    raw["cluster"] = cluster or {"kind": "local"}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def alaska_file(tmp_path: Path, **cluster: object) -> Path:
    """workflows/alaska-10m.yaml with ``cluster`` merged over and output in ``tmp_path/out``."""
    raw = yaml.safe_load((WORKFLOWS / "alaska-10m.yaml").read_text())
    raw["region"]["vector"] = str(WORKFLOWS / raw["region"]["vector"])
    raw["output"]["directory"] = str(tmp_path / "out")
    raw["cluster"] |= cluster
    path = tmp_path / "alaska.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 with one error line naming the problem and both fixes (and ``needles``)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in (REFUSAL, *FIXES, *needles):
        assert needle in lines[0], lines[0]


CPU_ONLY = {
    "local": {"kind": "local"},
    "slurm without gpus": {"kind": "slurm", "memory_limit": "8GB", "gpus_per_worker": 0},
    "pbs without gpus": {"kind": "pbs", "memory_limit": "8GB"},
    "address not declared": {"kind": "address", "address": "tcp://127.0.0.1:8786"},
}


# run refuses through the same function as plan: one cluster kind is enough for its subprocess
CASES = [(c, k) for k in CPU_ONLY for c in ("validate", "plan")] + [("run", "local")]


@pytest.mark.parametrize(("command", "kind"), CASES, ids=[f"{c}-{k}" for c, k in CASES])
def test_reference_on_cpus_is_refused_before_anything_is_written(tmp_path, command, kind):
    cluster = CPU_ONLY[kind]
    proc = run_cli(command, str(reference_file(tmp_path, cluster)))
    where = "kind 'local'" if cluster["kind"] == "local" else f"kind '{cluster['kind']}' with gpus_per_worker 0"
    assert_refused(proc, where, "on one GPU at 200 TFLOP/s")
    if cluster["kind"] == "local":  # 2 workers x 1 thread: the CPU time is said
        assert "on its 2 CPU cores" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_run_engine_refuses_too(tmp_path):
    """run_workflow itself (the API, no command line) refuses before writing anything."""
    from miso_mapper.pipeline.run import run_workflow

    workflow = load_workflow(reference_file(tmp_path))
    with pytest.raises(UsageError, match=REFUSAL):
        run_workflow(workflow)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cluster", [
    {"kind": "local-cuda"},
    {"kind": "address", "address": "tcp://127.0.0.1:8786", "gpus_per_worker": 1},
    {"kind": "slurm", "memory_limit": "8GB", "gpus_per_worker": 1},
], ids=["local-cuda", "address with gpus", "slurm with gpus"])
def test_gpu_clusters_and_the_cpu_opt_in_pass(tmp_path, cluster):
    proc = run_cli("validate", str(reference_file(tmp_path, cluster)))
    assert proc.returncode == 0, proc.stderr
    opt_in = run_cli("plan", "--json", str(reference_file(tmp_path, predictor={"device": "cpu"})))
    assert opt_in.returncode == 0, opt_in.stderr
    assert json.loads(opt_in.stdout)["cluster"] == "2 workers, CPU only, 1 thread each (local)"


def test_only_the_reference_network_without_gpus_is_refused(tmp_path):
    workflow = load_workflow(reference_file(tmp_path))
    assert [p.field for p in compute_problems(workflow)] == ["cluster"]
    for size in ("compact", "small", "tiny"):
        model = workflow.model.model_copy(update={"size": size})
        assert compute_problems(workflow.model_copy(update={"model": model})) == []
    rf = workflow.model.model_copy(update={"kind": "rf"})
    assert compute_problems(workflow.model_copy(update={"model": rf})) == []


def test_gpus_per_worker_with_kind_local_points_to_local_cuda():
    with pytest.raises(ValidationError, match="local-cuda"):
        ClusterConfig(kind="local", gpus_per_worker=1)


def test_address_clusters_declare_gpu_workers():
    assert not ClusterConfig(kind="address", address="tcp://h:8786").has_gpu_workers
    assert ClusterConfig(kind="address", address="tcp://h:8786", gpus_per_worker=1).has_gpu_workers
    assert describe_compute(ClusterConfig(kind="address", address="tcp://h:8786", gpus_per_worker=1)) == (
        "the scheduler's workers declared with GPU=1 (address tcp://h:8786)")


def test_statewide_workflow_asks_for_gpus_and_still_plans(tmp_path):
    path = WORKFLOWS / "alaska-10m.yaml"
    workflow = load_workflow(path)
    assert workflow.cluster.kind == "slurm" and workflow.cluster.gpus_per_worker == 1
    plan = run_cli("plan", str(path))
    assert plan.returncode == 0, plan.stderr
    assert "GPU-hours at 200 TFLOP/s" in plan.stdout
    assert "16 workers × 1 GPU, 4 threads each (slurm)" in plan.stdout
    # validate refuses only the data this machine lacks, never the compute
    validate = run_cli("validate", str(path))
    assert validate.returncode == 2 and "covariates.path" in validate.stderr
    assert REFUSAL not in validate.stderr
    # without the GPU line it would be refused, with its cost
    proc = run_cli("plan", str(alaska_file(tmp_path, gpus_per_worker=0)))
    assert_refused(proc, "h on one GPU", "days on its 64 CPU cores")


def test_job_script_of_the_statewide_workflow_asks_for_a_gpu(tmp_path):
    proc = run_cli("job-script", str(alaska_file(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --gres=gpu:1" in proc.stdout
    assert "--resources GPU=1" in proc.stdout
    assert f"#SBATCH -o {tmp_path / 'out' / 'logs'}" in proc.stdout
    pbs = run_cli("job-script", str(alaska_file(tmp_path, kind="pbs")))
    assert pbs.returncode == 0, pbs.stderr
    assert "#PBS -l select=1:ncpus=4:mem=64GB:ngpus=1" in pbs.stdout
    assert "--resources GPU=1" in pbs.stdout
    assert not (tmp_path / "out").exists()  # nothing submitted, no log folder left behind


def test_job_script_of_other_kinds_is_one_line(tmp_path):
    proc = run_cli("job-script", str(WORKFLOWS / "demo.yaml"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: cluster.kind 'local' submits no batch jobs, so there is no job script (only slurm and pbs have one)"]
