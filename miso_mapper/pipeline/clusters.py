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
* ``address``: connect to a running scheduler (dask-gateway, Kubernetes, a ``dask scheduler`` you started);
  ``gpus_per_worker: 1`` declares that its workers were started with ``--resources GPU=1``.

The scheduler's dashboard listens on ``dashboard_port`` when set (a fixed port to tunnel to on HPC), else on
any free port (local clusters) or dask-jobqueue's configured one; ``address`` clusters keep their own.

:attr:`ClusterConfig.has_gpu_workers` says whether predict tasks should ask for the ``GPU`` resource (the
documented Dask way: worker resources plus annotated tasks); :func:`check_gpu_workers` stops a run whose connected
workers carry no such resource, where those tasks would wait forever; :func:`describe_compute` is ``plan``'s line
about it.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miso_mapper.config import ClusterConfig
from miso_mapper.errors import MisoError, UsageError


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


def describe_compute(config: ClusterConfig) -> str:
    """The cluster's compute in a few words, e.g. ``16 workers × 1 GPU (slurm)``, ``2 workers, CPU only (local)``."""
    threads = f"{config.threads_per_worker} thread{'s' * (config.threads_per_worker > 1)} each"
    if config.kind == "local-cuda":
        return f"one worker per visible GPU, {threads} (local-cuda)"
    if config.kind == "address":
        gpus = "workers declared with GPU=1" if config.has_gpu_workers else "workers without a declared GPU"
        return f"the scheduler's {gpus} (address {config.address})"
    workers = f"{config.n_workers} worker{'s' * (config.n_workers > 1)}"
    if config.gpus_per_worker:
        return f"{workers} × {config.gpus_per_worker} GPU, {threads} ({config.kind})"
    return f"{workers}, CPU only, {threads} ({config.kind})"


def worker_resources(client: Any) -> dict[str, dict[str, float]]:
    """The resources of every worker connected to ``client``'s scheduler, by worker address."""
    try:
        info = client.scheduler_info(n_workers=-1)  # all workers (newer distributed lists only a few by default)
    except TypeError:  # distributed before n_workers: lists all
        info = client.scheduler_info()
    return {addr: dict(w.get("resources") or {}) for addr, w in info.get("workers", {}).items()}


def check_gpu_workers(client: Any, config: ClusterConfig) -> str | None:
    """For a GPU cluster whose workers this package does not start (address) or that names the resource itself
    (local-cuda): raise :class:`MisoError` when workers are connected and none carries ``GPU``, since prediction
    tasks that ask for ``GPU=1`` would wait forever. Returns a notice when no worker is connected yet (workers
    may join later, e.g. an adaptive cluster), else None. Nothing to check for other clusters."""
    if config.kind not in ("address", "local-cuda") or not config.has_gpu_workers:
        return None
    address = config.address or client.scheduler.address
    start = f"start them with `dask worker {address} --resources GPU=1`"
    resources = worker_resources(client)
    if not resources:
        return f"no worker is connected to {address} yet; prediction tasks wait for one with the GPU resource: {start}"
    if not any(r.get("GPU", 0) >= 1 for r in resources.values()):
        raise MisoError(f"none of the {len(resources)} worker(s) of {address} has the GPU resource, so prediction "
                        f"tasks (GPU=1) would wait forever: {start} (or set cluster.gpus_per_worker: 0 to map "
                        "without GPUs)")
    return None


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


def job_script(config: ClusterConfig, log_directory: Path | None = None) -> str:
    """The batch script dask-jobqueue submits for each worker of a slurm/pbs cluster (no job is submitted; the
    scheduler it starts is closed, and the log folder dask-jobqueue makes for it removed again if it was new and
    stays empty). Raises :class:`UsageError` for other kinds, :class:`MisoError` for a cluster config
    dask-jobqueue cannot use."""
    if config.kind not in ("slurm", "pbs"):
        raise UsageError(f"cluster.kind {config.kind!r} submits no batch jobs, so there is no job script (only "
                        "slurm and pbs have one)")
    logs = config.log_directory or log_directory
    made = _outermost_missing(Path(logs)) if logs is not None else None
    cluster = make_jobqueue_cluster(config, log_directory)
    try:
        return cluster.job_script()
    finally:
        cluster.close()
        if made is not None and made.is_dir() and not any(p.is_file() for p in made.rglob("*")):
            shutil.rmtree(made, ignore_errors=True)


def _outermost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; None if it exists."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


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
