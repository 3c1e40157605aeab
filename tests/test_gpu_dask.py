"""GPU resources reach Dask the documented way, with real worker processes: on an ``address`` cluster declared
with ``gpus_per_worker: 1`` the prediction tasks ask for ``GPU=1`` (and run only on a worker started with
``--resources GPU=1``) while read tasks ask for nothing; workers without the resource stop the run at once.

The predictor is the synthetic stand-in (``model.kind: synthetic``), so the run takes seconds.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.run import run_workflow

from .test_pipeline import demo_workflow

distributed = pytest.importorskip("distributed")


class Restrictions(distributed.diagnostics.plugin.SchedulerPlugin):
    """Records, for every task the scheduler hands to a worker, its resource restrictions and the worker."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler = scheduler
        self.seen: dict[str, tuple[dict[str, float], str]] = {}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "processing":
            ts = self.scheduler.tasks[key]
            self.seen[str(key)] = (dict(ts.resource_restrictions or {}), ts.processing_on.address)


@pytest.fixture
def gpu_and_cpu_workers(tmp_path):
    """A scheduler with one worker process started with the resource GPU=1 (LocalCluster) and one plain
    ``dask worker`` process; yields (scheduler address, GPU worker address, the recording plugin)."""
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="2GB",
                                       resources={"GPU": 1}, dashboard_address=":0",
                                       local_directory=str(tmp_path / "dask"))
    plain = None
    try:
        plugin = Restrictions(cluster.scheduler)
        cluster.scheduler.add_plugin(plugin)
        gpu_worker = next(iter(cluster.scheduler_info["workers"]))
        plain = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                  "--nthreads", "1", "--memory-limit", "2GB", "--no-dashboard",
                                  "--local-directory", str(tmp_path / "dask-plain")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with distributed.Client(cluster.scheduler_address) as client:
            client.wait_for_workers(2, timeout=120)
            resources = {a: w["resources"] for a, w in client.scheduler_info()["workers"].items()}
        assert sorted(r.get("GPU", 0) for r in resources.values()) == [0, 1]
        yield cluster.scheduler_address, gpu_worker, plugin
    finally:
        if plain is not None:
            plain.terminate()
            plain.wait(timeout=60)
        cluster.close()


def test_prediction_tasks_ask_for_the_gpu_and_reads_do_not(served_world, gpu_and_cpu_workers, tmp_path):
    address, gpu_worker, plugin = gpu_and_cpu_workers
    wf = demo_workflow(served_world, tmp_path / "out",
                       cluster={"kind": "address", "address": address, "gpus_per_worker": 1})
    summary = run_workflow(wf)
    assert sorted(summary.done) == ["r0146c0492", "r0146c0493", "r0147c0492", "r0147c0493"]
    maps = {k: v for k, v in plugin.seen.items() if k.startswith("map-")}
    reads = {k: v for k, v in plugin.seen.items() if k.startswith("read-")}
    assert len(maps) == len(reads) == 4
    assert all(restrictions == {"GPU": 1} for restrictions, _ in maps.values())
    assert all(worker == gpu_worker for _, worker in maps.values())  # the plain worker never predicted
    assert all(restrictions == {} for restrictions, _ in reads.values())


def test_workers_without_the_gpu_resource_stop_the_run(served_world, client, tmp_path):
    """``client``: the shared LocalCluster of 2 worker processes started without resources."""
    address = client.scheduler.address
    wf = demo_workflow(served_world, tmp_path / "out",
                       cluster={"kind": "address", "address": address, "gpus_per_worker": 1})
    with pytest.raises(MisoError) as raised:
        run_workflow(wf)
    line = str(raised.value)
    assert "\n" not in line
    assert "none of the 2 worker(s)" in line and "wait forever" in line
    assert f"`dask worker {address} --resources GPU=1`" in line
    with Manifest(RunLayout.of(wf).manifest) as manifest:
        assert {row.status for row in manifest.rows()} == {"pending"}  # no chunk was submitted
