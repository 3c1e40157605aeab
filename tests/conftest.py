"""Shared pytest fixtures. World/server fixtures: ``demo_world``, ``demo_manifest``, ``served_world``.

SIGTERM of pytest (a CI job's timeout, a scheduler) ends the session like Ctrl-C does, running every
fixture's finalizer, so no served world or temporary folder outlives the session.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from miso_mapper.signals import unwind_on_signals
from miso_mapper.world import ServedWorld, WorldManifest, create_world, serve_world
from miso_mapper.world.spec import WorldSpec

_SIGTERM_HANDLER = pytest.StashKey[contextlib.ExitStack]()


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM raises a KeyboardInterrupt (:class:`miso_mapper.signals.Terminated`): pytest then stops the
    session and tears fixtures down, where by default it would die at once and leave servers running."""
    stack = contextlib.ExitStack()
    stack.enter_context(unwind_on_signals((signal.SIGTERM,)))
    config.stash[_SIGTERM_HANDLER] = stack


def pytest_unconfigure(config: pytest.Config) -> None:
    """Restore the SIGTERM handler pytest started with."""
    config.stash[_SIGTERM_HANDLER].close()


#: Seconds the default world took to generate in this session (for tests/test_world.py).
WORLD_TIMING: dict[str, float] = {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the default demo world (``WorldSpec()``), generated once per test session."""
    out = tmp_path_factory.mktemp("world") / "demo"
    t0, cpu0 = time.perf_counter(), time.process_time()
    create_world(out, WorldSpec())
    WORLD_TIMING["default"] = time.perf_counter() - t0
    WORLD_TIMING["default_cpu"] = time.process_time() - cpu0
    return out


@pytest.fixture(scope="session")
def demo_manifest(demo_world: Path) -> WorldManifest:
    """The manifest (``world.json``) of :func:`demo_world`."""
    return WorldManifest.model_validate_json((demo_world / "world.json").read_text())


@pytest.fixture(scope="session")
def served_world(demo_world: Path) -> Iterator[ServedWorld]:
    """:func:`demo_world` served on free ports for the session; asserts no server process outlives it."""
    served = serve_world(demo_world)
    pids = served.pids
    try:
        yield served
    finally:
        served.stop()
        deadline = time.monotonic() + 5
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_pid_alive(p) for p in pids), f"leaked server processes {pids}"


@pytest.fixture(scope="module")
def client():
    """One Dask LocalCluster of 2 worker processes shared by a test module's in-process runs (a run given no
    client starts its own)."""
    from distributed import Client, LocalCluster

    # 3 GB each: the workers keep a module's runs' memory, and at 1.5 GB one reached Dask's pause threshold
    # (80 %) mid-module, took no more tasks, and the run waiting on it hung until the test timed out.
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="3GB",
                           dashboard_address=":0")
    with Client(cluster) as c:
        yield c
    cluster.close()
