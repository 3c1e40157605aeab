"""Dask clusters from ``cluster:`` in a workflow.

* ``local``: :class:`distributed.LocalCluster` with ``n_workers`` worker *processes* of
  ``threads_per_worker`` threads and ``memory_limit`` each (no GPU resource: prediction runs on CPU).
* ``local-cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU, each with the resource
  ``GPU=1`` (needs the ``gpu`` extra; imported only when asked for).
* ``slurm`` / ``pbs``: ``dask_jobqueue`` ``SLURMCluster`` / ``PBSCluster``, one worker per job of
  ``threads_per_worker`` cores, ``memory_limit`` memory, ``walltime`` and ``gpus_per_worker`` GPUs (0 or 1;
  a GPU worker gets ``GPU=1``). Workers retire at ``walltime - lifetime_margin - lifetime_stagger``
  (``--lifetime``) spread by ``--lifetime-stagger``, so they leave before the scheduler kills the job and at
  most the chunk in flight is lost (``run`` retries it); the cluster keeps ``n_workers`` jobs by adapting.
* ``address``: connect to a running scheduler (dask-gateway, Kubernetes, a ``dask scheduler`` you started).

The scheduler's dashboard listens on ``dashboard_port`` when set (a fixed port to tunnel to on HPC), else on
any free port (local clusters) or dask-jobqueue's configured one; ``address`` clusters keep their own.

:func:`cluster_has_gpus` says whether predict tasks should ask for the ``GPU`` resource.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miso_mapper.config import ClusterConfig
from miso_mapper.errors import MisoError


def walltime_seconds(walltime: str) -> int:
    """``[D-]HH:MM:SS`` (or ``HH:MM``) -> seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", walltime.strip())
    if not m:
        raise MisoError(f"cluster.walltime {walltime!r} is not [D-]HH:MM:SS")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def worker_lifetime(config: ClusterConfig) -> tuple[str, str]:
    """(``--lifetime``, ``--lifetime-stagger``) for job workers, e.g. ``('220m', '5m')``.

    lifetime = walltime - lifetime_margin - lifetime_stagger, so even the latest-staggered worker retires
    ``lifetime_margin`` before the walltime kill. Raises :class:`MisoError` when that leaves nothing.
    """
    from dask.utils import parse_timedelta

    wall = walltime_seconds(config.walltime)
    margin = parse_timedelta(config.lifetime_margin, default="s")
    stagger = parse_timedelta(config.lifetime_stagger, default="s")
    life = wall - margin - stagger
    if life <= 60:
        raise MisoError(f"cluster.walltime {config.walltime} leaves no worker lifetime after the margin "
                        f"({config.lifetime_margin}) and stagger ({config.lifetime_stagger})")
    return f"{int(life // 60)}m", f"{max(1, int(stagger // 60))}m"


def cluster_has_gpus(config: ClusterConfig) -> bool:
    """True when workers carry the ``GPU`` resource (local-cuda, or slurm/pbs with gpus_per_worker > 0)."""
    return config.kind == "local-cuda" or (config.kind in ("slurm", "pbs") and config.gpus_per_worker > 0)


def _jobqueue_kwargs(config: ClusterConfig, log_directory: Path | None) -> dict[str, Any]:
    if config.memory_limit == "auto":
        raise MisoError(f"cluster.memory_limit must be set (e.g. 64GB) for kind {config.kind!r}")
    if config.gpus_per_worker > 1:
        raise MisoError("cluster.gpus_per_worker must be 0 or 1: one worker per GPU (ask for more workers)")
    lifetime, stagger = worker_lifetime(config)
    extra_args = ["--lifetime", lifetime, "--lifetime-stagger", stagger]
    if config.gpus_per_worker:
        extra_args += ["--resources", "GPU=1"]
    kwargs: dict[str, Any] = {
        "cores": config.threads_per_worker,
        "processes": 1,
        "memory": config.memory_limit,
        "walltime": config.walltime,
        "queue": config.queue,
        "account": config.account,
        "worker_extra_args": extra_args,
        "job_script_prologue": list(config.job_script_prologue),
        "job_name": "miso-worker",
    }
    logs = config.log_directory or log_directory
    if logs is not None:
        kwargs["log_directory"] = str(logs)
    if config.local_directory:
        kwargs["local_directory"] = config.local_directory
    if config.interface:
        kwargs["interface"] = config.interface
    if config.dashboard_port is not None:
        kwargs["scheduler_options"] = {"dashboard_address": _dashboard_address(config)}
    return kwargs


def _dashboard_address(config: ClusterConfig) -> str:
    """The scheduler's ``dashboard_address``: ``:<dashboard_port>``, or ``:0`` (any free port) when unset."""
    return f":{config.dashboard_port or 0}"


def make_jobqueue_cluster(config: ClusterConfig, log_directory: Path | None = None) -> Any:
    """A dask-jobqueue SLURMCluster or PBSCluster for ``config`` (no job is submitted until scaled).

    Its ``job_script()`` is the batch script each worker job runs.
    """
    try:
        import dask_jobqueue
    except ImportError:
        raise MisoError(f"cluster.kind {config.kind!r} needs dask-jobqueue: pip install 'miso-mapper[hpc]'") from None
    kwargs = _jobqueue_kwargs(config, log_directory)
    extra = list(config.job_extra_directives)
    if config.kind == "slurm":
        if config.gpus_per_worker:
            extra.append(f"--gres=gpu:{config.gpus_per_worker}")
        return dask_jobqueue.SLURMCluster(job_extra_directives=extra, **kwargs)
    if config.kind == "pbs":
        from dask.utils import parse_bytes

        mem_gb = max(1, parse_bytes(config.memory_limit) // 10**9)
        spec = f"select=1:ncpus={config.threads_per_worker}:mem={mem_gb}GB"
        if config.gpus_per_worker:
            spec += f":ngpus={config.gpus_per_worker}"
        return dask_jobqueue.PBSCluster(resource_spec=spec, job_extra_directives=extra, **kwargs)
    raise MisoError(f"cluster.kind {config.kind!r} is not a job-queue cluster")


def make_cluster(config: ClusterConfig, log_directory: Path | None = None) -> Any:
    """A started cluster object for ``config`` (None for ``address``). Raises :class:`MisoError`."""
    if config.kind == "address":
        return None
    if config.kind == "local":
        from distributed import LocalCluster

        return LocalCluster(n_workers=config.n_workers, threads_per_worker=config.threads_per_worker,
                            processes=True, memory_limit=config.memory_limit,
                            dashboard_address=_dashboard_address(config),
                            local_directory=config.local_directory)
    if config.kind == "local-cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise MisoError("cluster.kind 'local-cuda' needs dask-cuda: pip install 'miso-mapper[gpu]'") from None
        return LocalCUDACluster(threads_per_worker=config.threads_per_worker, memory_limit=config.memory_limit,
                                resources={"GPU": 1}, dashboard_address=_dashboard_address(config),
                                local_directory=config.local_directory)
    cluster = make_jobqueue_cluster(config, log_directory)
    cluster.adapt(minimum_jobs=config.n_workers, maximum_jobs=config.n_workers)
    return cluster


@contextlib.contextmanager
def open_client(config: ClusterConfig, log_directory: Path | None = None) -> Iterator[Any]:
    """A :class:`distributed.Client` on the configured cluster, closed (with its cluster) on exit."""
    from distributed import Client

    cluster = None
    try:
        cluster = make_cluster(config, log_directory)
        client = Client(cluster) if cluster is not None else Client(config.address, timeout="30s")
    except MisoError:
        raise
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        where = config.address if config.kind == "address" else config.kind
        raise MisoError(f"cannot start or reach the Dask cluster ({where}): {exc}") from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
