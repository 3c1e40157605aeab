"""Issue 12, "Safe to operate", for ``run``, ``status`` and ``export``: one writer per run folder, resume and
status that look at the store, clean stops on SIGTERM / SIGINT, one-line client errors, unwrapped chunk errors.

Everything here is real: ``miso-mapper`` subprocesses with their own LocalClusters, real signals, a real
tmpfs filled to the last byte for the disk-full case (skipped where tmpfs cannot be mounted: that needs root).
The predictor is ``model.kind: synthetic`` (see tests/test_pipeline.py), so a run of the demo's 4 chunks takes
seconds and is deterministic: every finished run must hold the bytes of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import zarr

from miso_mapper.config import Workflow
from miso_mapper.layout import RunLayout
from miso_mapper.pipeline.manifest import Manifest
from miso_mapper.pipeline.run import run_workflow
from miso_mapper.pipeline.store import LAYERS

from .test_pipeline import Recorder, demo_workflow, store_arrays, write_counts, write_yaml

CLI = [sys.executable, "-m", "miso_mapper.cli"]
#: how the client's own crash would look (Dask's worker log lines carry a "Traceback: '..." of the task)
PY_TRACEBACK = "Traceback (most recent call last)"
CHUNKS = ("r0146c0492", "r0146c0493", "r0147c0492", "r0147c0493")
#: one worker, one chunk in flight: a CLI run is slow enough to be caught midway, and light on 2 shared cores
ONE_AT_A_TIME = {"cluster": {"n_workers": 1, "window": 1, "memory_limit": "3GB"}}  # 1.5 GB can pause a worker
#: the baseline's store is Zarr v3: the tests below name its chunk files by their v3 keys (c/<row>/<col>)
V3 = {"output": {"zarr_format": 3}}


@pytest.fixture(scope="module")
def baseline(served_world, client, tmp_path_factory) -> tuple[Workflow, dict[str, np.ndarray]]:
    """An uninterrupted run: (workflow, the store's raw layers)."""
    wf = demo_workflow(served_world, tmp_path_factory.mktemp("baseline"), **V3)
    summary = run_workflow(wf, client=client)
    assert sorted(summary.done) == list(CHUNKS)
    return wf, store_arrays(RunLayout.of(wf).store)


def copy_of_baseline(served_world, baseline, out: Path) -> tuple[Workflow, Path]:
    """A copy of the baseline run folder with its workflow (and that workflow's YAML file)."""
    wf0, _ = baseline
    shutil.copytree(wf0.output.directory, out)
    wf = demo_workflow(served_world, out, **V3)
    return wf, write_yaml(wf, out.parent / f"{out.name}.yaml")


def same_as_baseline(wf: Workflow, baseline) -> bool:
    got = store_arrays(RunLayout.of(wf).store)
    return all(np.array_equal(baseline[1][k], got[k]) for k in LAYERS)


class Noticed(Recorder):
    """Keeps every callback of a run, the engine's notices included."""

    def notice(self, line: str) -> None:
        self.events.append(("notice", line))


def statuses(wf: Workflow) -> dict[str, str]:
    with Manifest(RunLayout.of(wf).manifest) as m:
        return {r.id: r.status for r in m.rows()}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def start_cli(logs: Path, *args: str) -> subprocess.Popen:
    """A ``miso-mapper`` subprocess in its own session (a signal to it reaches no other test process), its
    stdout and stderr in files of ``logs`` (a pipe nobody reads could stall it)."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.out")))
    with open(logs / f"{n}.out", "w") as out, open(logs / f"{n}.err", "w") as err:
        proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=err, text=True, start_new_session=True)
    proc.logs = (logs / f"{n}.out", logs / f"{n}.err")  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    return proc.logs[1].read_text()  # type: ignore[attr-defined]


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    """Wait for ``proc`` (killing its whole session on timeout): (exit code, stdout, stderr)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        pytest.fail(f"miso-mapper did not end within {timeout} s: {stderr_of(proc)[-2000:]}")
    out, err = proc.logs  # type: ignore[attr-defined]
    return proc.returncode, out.read_text(), err.read_text()


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    """Subprocesses a test starts; any still running at its end is killed with its session."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def done_rows(manifest: Path) -> int:
    """Chunks ``done`` in a manifest another process writes (0 while it cannot be read)."""
    try:
        with sqlite3.connect(manifest, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM chunks WHERE status = 'done'").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}: {stderr_of(proc)[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.2)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


# ---- one writer per store --------------------------------------------------------------------------------
def test_two_runs_on_one_store_one_is_refused_and_overwrite_deletes_nothing(served_world, baseline, tmp_path,
                                                                            procs):
    wf = demo_workflow(served_world, tmp_path / "out", **ONE_AT_A_TIME)
    path = write_yaml(wf, tmp_path / "wf.yaml")
    layout = RunLayout.of(wf)
    procs += [start_cli(tmp_path / "logs", "run", str(path)) for _ in range(2)]  # two fresh runs race for the store
    wait_for(lambda: any(p.poll() is not None for p in procs), "refusal of one of the two runs")
    loser = next(p for p in procs if p.poll() is not None)
    winner = next(p for p in procs if p is not loser)
    code, _, err = finish(loser)
    assert code == 1, err
    assert PY_TRACEBACK not in err and len(error_lines(err)) == 1
    assert f"{layout.directory} is in use by `miso-mapper run` (pid {winner.pid} on {socket.gethostname()}" in err

    wait_for(lambda: done_rows(layout.manifest) >= 1, "chunk done by the winner", winner)
    uuid = zarr.open_group(str(layout.store), mode="r").attrs["store_uuid"]
    for command in (["run", str(path), "--overwrite"], ["export", str(path)], ["unlock", str(path)]):
        proc = cli(*command)
        assert proc.returncode == 1, (command, proc.stderr)
        assert f"(pid {winner.pid} on" in proc.stderr and PY_TRACEBACK not in proc.stderr, proc.stderr
    assert zarr.open_group(str(layout.store), mode="r").attrs["store_uuid"] == uuid
    assert done_rows(layout.manifest) >= 1  # --overwrite deleted neither the store nor the manifest

    code, _, err = finish(winner)
    assert code == 0, err
    assert statuses(wf) == dict.fromkeys(CHUNKS, "done")
    assert same_as_baseline(wf, baseline)
    assert not layout.lock.exists()


def _dead_pid() -> tuple[int, float]:
    proc = psutil.Popen([sys.executable, "-c", "pass"])
    started = proc.create_time()
    proc.wait(timeout=60)
    return proc.pid, started


def _write_lock(layout: RunLayout, host: str, pid: int, pid_started: float | None, age_s: float = 0.0) -> None:
    layout.directory.mkdir(parents=True, exist_ok=True)
    layout.lock.write_text(json.dumps({"host": host, "pid": pid, "pid_started": pid_started,
                                       "started": "2026-01-01T00:00:00Z", "command": "run --resume",
                                       "token": "theirs"}))
    if age_s:
        os.utime(layout.lock, (time.time() - age_s, time.time() - age_s))


def test_stale_lock_is_reported_with_how_to_clear_it(served_world, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out")  # output.lock_stale_after: 300 s
    path = write_yaml(wf, tmp_path / "wf.yaml")
    layout = RunLayout.of(wf)
    pid, started = _dead_pid()
    _write_lock(layout, socket.gethostname(), pid, started)
    proc = cli("run", str(path))
    assert proc.returncode == 1 and PY_TRACEBACK not in proc.stderr, proc.stderr
    [line] = error_lines(proc.stderr)
    head, tail = line.split(" heartbeat ")
    assert head == (f"error: {layout.directory} has a stale lock from `miso-mapper run --resume` (pid {pid} on "
                    f"{socket.gethostname()}, since 2026-01-01T00:00:00Z,")
    assert tail.endswith(f" s ago): pid {pid} is not running on this host; check the run folder, then clear it "
                         f"with `miso-mapper unlock CONFIG` (or delete {layout.lock})")
    assert not layout.store.exists() and layout.lock.exists()
    proc = cli("unlock", str(path))
    assert proc.returncode == 0 and "removed the stale lock" in proc.stdout, proc.stderr
    assert not layout.lock.exists()

    # a live process on another host: stale only once its heartbeat is older than output.lock_stale_after
    _write_lock(layout, "another-node", os.getpid(), None, age_s=5)
    proc = cli("unlock", str(path))
    assert proc.returncode == 1 and "not unlocking a live command" in proc.stderr, proc.stderr
    assert layout.lock.exists()
    _write_lock(layout, "another-node", os.getpid(), None, age_s=3600)
    proc = cli("run", str(path))
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"\(pid \d+ on another-node, .*\): no heartbeat for 36\d\d s \(output.lock_stale_after: 300 s\)",
                     proc.stderr), proc.stderr
    assert cli("unlock", str(path)).returncode == 0 and not layout.lock.exists()


def test_the_heartbeat_keeps_the_lock_fresh_and_notices_its_loss(served_world, tmp_path):
    from miso_mapper.runlock import RunLock, read_holder

    layout = RunLayout.of(demo_workflow(served_world, tmp_path / "out"))
    with RunLock(layout, "run", stale_after=0.4) as lock:  # beats every 0.1 s
        first = layout.lock.stat().st_mtime
        time.sleep(0.5)
        holder = read_holder(layout.lock)
        assert holder is not None and holder.pid == os.getpid() and holder.heartbeat > first
        assert holder.stale_reason(0.4) is None
        assert not lock.lost
        layout.lock.unlink()  # someone cleared the lock of a live run
        time.sleep(0.5)
        assert lock.lost
        _write_lock(layout, "another-node", 1, None)
    assert layout.lock.exists()  # releasing never removes a record that is not its own
    layout.lock.unlink()
    with RunLock(layout, "run", stale_after=60):
        assert read_holder(layout.lock).command == "run"
    assert not layout.lock.exists()


def test_a_live_holder_on_this_host_is_never_stale(served_world, tmp_path):
    """A suspended or slowed holder (Ctrl-Z, a scheduler's suspend, slow NFS) stops beating but is still alive:
    on its own host the PID decides, so `unlock` (which removes only stale locks) cannot take it away."""
    from miso_mapper.runlock import RunLock, read_holder

    layout = RunLayout.of(demo_workflow(served_world, tmp_path / "out"))
    with RunLock(layout, "run", stale_after=3600):  # beats every 30 s: not during this test
        hour_ago = time.time() - 3600
        os.utime(layout.lock, (hour_ago, hour_ago))
        holder = read_holder(layout.lock)
        assert holder is not None and holder.pid == os.getpid() and holder.heartbeat < time.time() - 3000
        assert holder.stale_reason(300) is None  # the code before this test called it stale ("no heartbeat")


def test_a_run_whose_lock_is_taken_away_stops(served_world, baseline, client, tmp_path):
    from miso_mapper.errors import MisoError
    from miso_mapper.pipeline.progress import RunProgress

    wf = demo_workflow(served_world, tmp_path / "out", output={"lock_stale_after": 0.4}, cluster={"window": 1})
    layout = RunLayout.of(wf)

    class ClearTheLock(RunProgress):
        """Someone runs `unlock` (or deletes run.lock) while the run maps its first chunk."""

        def started(self, start) -> None:
            layout.lock.unlink()

    with pytest.raises(MisoError, match=f"the run lock {layout.lock} was removed or taken by another command"):
        run_workflow(wf, client=client, progress=ClearTheLock())
    assert "running" not in statuses(wf).values()
    summary = run_workflow(wf, resume=True, client=client)
    assert not summary.failed and same_as_baseline(wf, baseline)


# ---- resume and status look at the store ------------------------------------------------------------------
def test_a_deleted_zarr_chunk_goes_back_to_pending_and_is_rewritten(served_world, baseline, client, tmp_path):
    wf, _ = copy_of_baseline(served_world, baseline, tmp_path / "out")
    store = RunLayout.of(wf).store
    victim = store / "taxonomy_class" / "c" / "14" / "5"  # a Zarr chunk of r0147c0492 (rows 14, cols 4-5)
    victim.unlink()
    progress = Noticed()
    summary = run_workflow(wf, resume=True, client=client, progress=progress)
    notices = [e for kind, e in progress.events if kind == "notice"]
    assert notices == [f"chunk r0147c0492 back to pending: 1 Zarr chunk file(s) missing from {store} "
                       "(taxonomy_class/c/14/5)"]
    assert summary.done == ["r0147c0492"] and summary.skipped == 3
    assert victim.is_file() and same_as_baseline(wf, baseline)
    assert statuses(wf) == dict.fromkeys(CHUNKS, "done")


def test_verify_catches_corrupted_chunks(served_world, baseline, client, tmp_path):
    wf, path = copy_of_baseline(served_world, baseline, tmp_path / "out")
    pf = RunLayout.of(wf).store / "permafrost_probability" / "c"
    with open(pf / "13" / "4", "r+b") as f:  # r0146c0492: bytes that no longer decode
        f.seek(20)
        f.write(b"garbage")
    shutil.copyfile(pf / "14" / "4", pf / "14" / "5")  # r0147c0492: valid bytes of another Zarr chunk

    proc = cli("status", str(path))  # the cheap check sees files, not their bytes
    assert proc.returncode == 0 and "back to pending" not in proc.stdout, proc.stdout + proc.stderr
    assert set(statuses(wf).values()) == {"done"}
    proc = cli("status", str(path), "--verify")
    assert proc.returncode == 0, proc.stderr
    assert "chunk r0146c0492 back to pending: its Zarr chunks cannot be read back" in proc.stdout
    assert "chunk r0147c0492 back to pending: its bytes no longer match the manifest's checksum" in proc.stdout
    assert statuses(wf) == {"r0146c0492": "pending", "r0146c0493": "done", "r0147c0492": "pending",
                            "r0147c0493": "done"}
    summary = run_workflow(wf, resume=True, client=client)
    assert sorted(summary.done) == ["r0146c0492", "r0147c0492"]
    assert same_as_baseline(wf, baseline)

    with open(pf / "14" / "5", "r+b") as f:  # and once more, found by `run --resume --verify` itself
        f.seek(20)
        f.write(b"garbage")
    progress = Noticed()
    summary = run_workflow(wf, resume=True, verify=True, client=client, progress=progress)
    assert [e for kind, e in progress.events if kind == "notice"][0].startswith(
        "chunk r0147c0492 back to pending: its Zarr chunks cannot be read back")
    assert summary.done == ["r0147c0492"] and same_as_baseline(wf, baseline)


def test_status_says_the_store_is_missing(served_world, baseline, tmp_path):
    wf, path = copy_of_baseline(served_world, baseline, tmp_path / "out")
    shutil.rmtree(RunLayout.of(wf).store)
    proc = cli("status", str(path))
    assert proc.returncode == 1 and PY_TRACEBACK not in proc.stderr + proc.stdout
    assert error_lines(proc.stderr) == [
        f"error: the store {RunLayout.of(wf).store} is missing, yet the manifest {RunLayout.of(wf).manifest} "
        f"records 4 chunk(s) done: map the region again with `miso-mapper run {path}`"]
    proc = cli("export", str(path))
    assert proc.returncode == 1 and "no map store" in proc.stderr and PY_TRACEBACK not in proc.stderr


# ---- SIGTERM / SIGINT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("sig", "grace", "code"), [(signal.SIGTERM, {}, 143),  # the default 30 s grace
                                                    (signal.SIGINT, {"shutdown_grace": 0}, 130)])
def test_a_signal_mid_run_stops_cleanly_and_resume_completes(served_world, baseline, client, tmp_path, procs,
                                                             sig, grace, code):
    wf = demo_workflow(served_world, tmp_path / "out", cluster={**ONE_AT_A_TIME["cluster"], **grace})
    layout = RunLayout.of(wf)
    proc = start_cli(tmp_path / "logs", "run", str(write_yaml(wf, tmp_path / "wf.yaml")))
    procs.append(proc)
    wait_for(lambda: done_rows(layout.manifest) >= 1, "first chunk done", proc)
    children = descendants(proc.pid)
    assert children, "the run started no cluster processes"
    proc.send_signal(sig)
    rc, _, err = finish(proc, timeout=120)
    assert rc == code, err
    assert PY_TRACEBACK not in err
    name = signal.Signals(sig).name
    [line] = error_lines(err)
    assert line.startswith(f"error: run stopped by {name}: ") and "left pending" in line and "--resume" in line
    gone, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"
    assert not layout.lock.exists()
    before = statuses(wf)
    assert "running" not in before.values() and "done" in before.values() and "pending" in before.values()

    summary = run_workflow(wf, resume=True, client=client)
    assert not summary.failed and statuses(wf) == dict.fromkeys(CHUNKS, "done")
    assert same_as_baseline(wf, baseline)
    assert write_counts(wf) == dict.fromkeys(CHUNKS, 1)


def test_export_stops_cleanly_on_sigterm(served_world, baseline, tmp_path, procs):
    wf, path = copy_of_baseline(served_world, baseline, tmp_path / "out")
    layout = RunLayout.of(wf)
    proc = start_cli(tmp_path / "logs", "export", str(path))
    procs.append(proc)
    wait_for(lambda: bool(descendants(proc.pid)), "export's cluster", proc)
    children = descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=120)
    assert rc == 143, err
    assert PY_TRACEBACK not in err
    assert error_lines(err) == ["error: interrupted by SIGTERM; no product was left half written; run "
                                "`miso-mapper export CONFIG` again"]
    assert not psutil.wait_procs(children, timeout=30)[1]
    assert not layout.lock.exists()
    half = [p for p in layout.products.rglob(".*")] if layout.products.exists() else []
    assert not half, half


# ---- client-side failures are one line --------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 32 MB tmpfs (needs root: skipped where it cannot be mounted), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True,
                          text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}): the disk-full test needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(disk: Path) -> Path:
    """Write a file on ``disk`` until no byte is left; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def test_disk_full_is_one_line_and_leaves_no_running_row(served_world, baseline, client, small_disk, procs):
    wf = demo_workflow(served_world, small_disk / "out", **ONE_AT_A_TIME)
    layout = RunLayout.of(wf)
    proc = start_cli(small_disk.parent / "logs", "run", str(write_yaml(wf, small_disk.parent / "wf.yaml")))
    procs.append(proc)
    wait_for(lambda: done_rows(layout.manifest) >= 1, "first chunk done", proc)
    filler = fill(small_disk)
    rc, _, err = finish(proc, timeout=120)
    assert rc == 1, err
    assert PY_TRACEBACK not in err
    assert error_lines(err) == [f"error: run manifest {layout.manifest}: database or disk is full"]
    assert not layout.lock.exists()
    filler.unlink()
    before = statuses(wf)
    assert "running" not in before.values() and "done" in before.values()
    summary = run_workflow(wf, resume=True, client=client)
    assert not summary.failed and same_as_baseline(wf, baseline)


def test_a_failing_chunk_reports_its_error_once_unwrapped(served_world, baseline, tmp_path):
    wf = demo_workflow(served_world, tmp_path / "out", cluster={**ONE_AT_A_TIME["cluster"], "max_attempts": 1})
    search = RunLayout.of(wf).search
    shutil.copytree(RunLayout.of(baseline[0]).search, search)
    record = search / "r0146c0492.json"  # the chunk's recorded scenes now point at a port nobody serves
    record.write_text(record.read_text().replace(served_world.asset_url, "http://127.0.0.1:9/"))
    proc = cli("run", str(write_yaml(wf, tmp_path / "wf.yaml")), timeout=240)
    assert proc.returncode == 1, proc.stderr
    with Manifest(RunLayout.of(wf).manifest) as m:
        row = m.row("r0146c0492")
    assert row.status == "failed"
    assert row.last_error.startswith("cannot read imagery: Error opening 'http://127.0.0.1:9/scenes/")
    shown = [line for line in proc.stderr.splitlines() if line.startswith("✗")]
    assert len(shown) == 1 and shown[0].startswith("✗ r0146c0492 cannot read imagery: "), shown
    assert error_lines(proc.stderr) == ["error: 1 chunk(s) failed after 1 attempt(s): r0146c0492; fix the cause and "
                                        "rerun with --resume"]



def test_help_says_how_locks_and_signals_work():
    run_help = cli("run", "--help")
    assert run_help.returncode == 0 and "--verify" in run_help.stdout
    for needle in ("miso-mapper unlock CONFIG", "SIGTERM", "143", "shutdown_grace", "lock_stale_after"):
        assert needle in " ".join(run_help.stdout.split()), needle
    assert "--verify" in cli("status", "--help").stdout
    unlock_help = cli("unlock", "--help")
    assert unlock_help.returncode == 0 and "stale lock" in unlock_help.stdout


@pytest.mark.parametrize(("fmt", "key"), [(3, "permafrost_probability/c/{r}/{c}"),
                                          (2, "permafrost_probability/{r}.{c}")])
def test_a_write_names_the_zarr_chunks_it_left_absent(tmp_path, fmt, key):
    from miso_mapper.pipeline.store import CORE_LAYERS, LAYERS, NODATA, stored_layers

    from .test_store import _store

    _, plan, store = _store(tmp_path, fmt)
    chunk = plan.chunks[0]
    keys = store.zarr_chunk_keys(chunk)
    r, c = (i // 250 for i in (store.region(chunk)[0].start, store.region(chunk)[1].start))
    assert len(keys) == len(LAYERS) * 4 and keys[0] == key.format(r=r, c=c)
    extra = [k for k in keys if k.split("/")[0] not in CORE_LAYERS]  # no extra layer given: all no data
    assert len(extra) == (len(LAYERS) - len(CORE_LAYERS)) * 4
    assert store.absent_keys(chunk) == keys and store.stored_keys() == set()
    pf = np.full(chunk.geobox.shape, 100, np.uint8)
    pf[:250, :250] = NODATA  # the chunk's first Zarr chunk of this layer holds only no data
    tx, cls = np.full((7, *chunk.geobox.shape), 25, np.uint8), np.zeros(chunk.geobox.shape, np.uint8)
    store.write_layers(chunk, stored_layers(chunk.geobox, pf, tx, cls))
    assert store.absent_keys(chunk) == [keys[0], *extra]  # zarr writes no file for a chunk of fill values
    assert store.stored_keys() == set(keys[1:]) - set(extra)
