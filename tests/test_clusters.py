"""Cluster backends from config: dask-jobqueue job scripts for slurm and pbs (no scheduler system needed)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from miso_mapper.config import ClusterConfig
from miso_mapper.errors import MisoError
from miso_mapper.pipeline.clusters import make_jobqueue_cluster, walltime_seconds, worker_lifetime

pytest.importorskip("dask_jobqueue", reason="dask-jobqueue (the hpc extra) is not installed")

HPC = dict(n_workers=4, threads_per_worker=8, memory_limit="64GB", gpus_per_worker=1, walltime="06:00:00",
           lifetime_margin="20m", lifetime_stagger="10m", queue="gpu", account="permafrost",
           job_script_prologue=["module load cuda/12"])


def test_walltime_and_lifetime():
    assert walltime_seconds("06:00:00") == 6 * 3600
    assert walltime_seconds("1-02:00:00") == 26 * 3600
    assert worker_lifetime(ClusterConfig(kind="slurm", **HPC)) == ("330m", "10m")  # 360 - 20 - 10
    with pytest.raises(MisoError, match="no worker lifetime"):
        worker_lifetime(ClusterConfig(kind="slurm", walltime="00:20:00", lifetime_margin="15m"))
    with pytest.raises(MisoError, match="HH:MM:SS"):
        walltime_seconds("six hours")


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_job_script_has_gpu_memory_walltime_lifetime(kind, tmp_path):
    cfg = ClusterConfig(kind=kind, log_directory=tmp_path / "logs", **HPC)
    cluster = make_jobqueue_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "--lifetime 330m" in script and "--lifetime-stagger 10m" in script
    assert "--resources GPU=1" in script
    assert "--nthreads 8" in script
    assert "module load cuda/12" in script
    assert str(tmp_path / "logs") in script
    if kind == "slurm":
        assert "#SBATCH -t 06:00:00" in script
        assert "#SBATCH --mem=60G" in script  # 64 GB in GiB, as dask-jobqueue writes it
        assert "#SBATCH --gres=gpu:1" in script
        assert "#SBATCH -p gpu" in script and "#SBATCH -A permafrost" in script
    else:
        assert "#PBS -l walltime=06:00:00" in script
        assert "#PBS -l select=1:ncpus=8:mem=64GB:ngpus=1" in script
        assert "#PBS -q gpu" in script and "#PBS -A permafrost" in script
    assert cfg.has_gpu_workers


def test_cpu_job_has_no_gpu_resource():
    cfg = ClusterConfig(kind="slurm", **(HPC | {"gpus_per_worker": 0}))
    cluster = make_jobqueue_cluster(cfg)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "gres" not in script and "GPU=1" not in script
    assert not cfg.has_gpu_workers


def test_jobqueue_config_errors():
    with pytest.raises(MisoError, match="memory_limit must be set"):
        make_jobqueue_cluster(ClusterConfig(kind="slurm"))
    with pytest.raises(MisoError, match="0 or 1"):
        make_jobqueue_cluster(ClusterConfig(kind="pbs", **(HPC | {"gpus_per_worker": 2})))


def test_local_cuda_without_gpu_extra_is_a_clear_error():
    pytest.importorskip("distributed")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        from miso_mapper.pipeline.clusters import make_cluster

        with pytest.raises(MisoError, match=r"miso-mapper\[gpu\]"):
            make_cluster(ClusterConfig(kind="local-cuda"))
    else:
        pytest.skip("dask-cuda is installed")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_relax_malloc_trim_under_dasks_worker_environment():
    """Dask's nanny exports MALLOC_TRIM_THRESHOLD_=65536 to workers; build_predictor must be able to undo it."""
    code = "from miso_mapper.pipeline.malloc import relax_malloc_trim; print(relax_malloc_trim())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"},
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dashboard_port_of_a_local_cluster(tmp_path):
    from miso_mapper.pipeline.clusters import open_client

    port = _free_port()
    cfg = ClusterConfig(n_workers=1, memory_limit="1GB", dashboard_port=port, local_directory=str(tmp_path))
    with open_client(cfg) as client:
        assert f":{port}/" in client.dashboard_link


@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_dashboard_port_of_a_job_queue_scheduler(kind):
    port = _free_port()
    cluster = make_jobqueue_cluster(ClusterConfig(kind=kind, **HPC, dashboard_port=port))
    try:
        assert f":{port}/" in cluster.dashboard_link
    finally:
        cluster.close()


def test_dashboard_port_is_checked_when_the_workflow_loads():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="dashboard_port"):
        ClusterConfig(dashboard_port=70000)
