"""SIGTERM and Ctrl-C stop what a command started: real commands in subprocesses, real signals, checked by PID.

Covers ``world serve``, ``train`` while it serves the demo world itself (chips being read) and while its
worker processes train, and a pytest session using the ``served_world`` fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import yaml

from miso_mapper.config import load_workflow
from miso_mapper.signals import Terminated, exit_status, unwind_on_signals
from tests.helpers import REPO, WORKFLOWS

#: one 5 km chunk of the demo region, so that reading its chips takes seconds
ONE_CHUNK = [260000.0, 1660000.0, 265000.0, 1665000.0]
SERVE_PREFIX = "miso-world-serve-"


def _env(tmp_path: Path) -> dict[str, str]:
    """This worktree first on the path, temp folders under ``tmp_path/tmp`` (to find the servers' one)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    return dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp), COLUMNS="200")


class Run:
    """A command in a subprocess; stdout and stderr go to files (a pipe an orphan still holds never ends)."""

    def __init__(self, tmp_path: Path, name: str, argv: list[str], **env: str) -> None:
        self.out, self.err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=tmp_path, env=_env(tmp_path) | env)
        self.pid = self.proc.pid
        self.watched: list[psutil.Process] = []
        """processes the test saw this run start (killed at the end of the test if still alive)."""

    @classmethod
    def cli(cls, tmp_path: Path, name: str, *args: str) -> Run:
        return cls(tmp_path, name, [sys.executable, "-m", "miso_mapper.cli", *args])

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float) -> None:
        """Poll ``check`` until true; fails if the command exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while not check():
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {what}: {self.stderr()[-2000:]}"
            assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
            time.sleep(0.2)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """Test cleanup: SIGKILL the command and every process it was seen to start, if still running."""
        for p in self.descendants() + self.watched:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()  # psutil checks it is still the same process, not a reused pid
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:  # ended meanwhile
        return []


def _left_after(procs: list[psutil.Process], timeout: float = 10.0) -> list[int]:
    """The pids of ``procs`` still running after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p.pid for p in procs if _alive(p)]


def _one_line(stderr: str, expected: str) -> None:
    """No traceback, and the interruption said once, last."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert lines and lines[-1] == expected, stderr[-3000:]
    assert sum(expected in line for line in lines) == 1, stderr[-3000:]


def _serve_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "tmp").glob(SERVE_PREFIX + "*"))


def test_sigterm_raises_once_in_the_block_and_the_handlers_come_back() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    unwound = []
    with pytest.raises(Terminated) as raised, unwind_on_signals():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # not reached: the handler raises as soon as the signal arrives
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # while unwinding: ignored
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            unwound.append(True)
    assert unwound == [True]
    assert exit_status(raised.value) == 143 and exit_status(KeyboardInterrupt()) == 130
    assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize(("signum", "status", "line"), [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                                         (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_world_serve_stops_its_servers_and_temp_folder(demo_world: Path, tmp_path: Path, signum: int,
                                                        status: int, line: str) -> None:
    run = Run.cli(tmp_path, "serve", "world", "serve", str(demo_world), "--stac-port", "0", "--asset-port", "0")
    try:
        run.wait_for("served world", lambda: "Press Ctrl-C" in run.stdout(), 60)
        run.watched = run.descendants()
        assert len(run.watched) == 2 and len(_serve_folders(tmp_path)) == 1
        run.proc.send_signal(signum)
        assert run.proc.wait(timeout=30) == status
        _one_line(run.stderr(), line)
        assert _left_after(run.watched) == []
        assert _serve_folders(tmp_path) == []
    finally:
        run.kill()


def test_servers_end_with_a_sigkilled_parent(demo_world: Path, tmp_path: Path) -> None:
    """Nothing can stop them then but the kernel (Linux ``PR_SET_PDEATHSIG``); the temp folder is left."""
    run = Run.cli(tmp_path, "serve", "world", "serve", str(demo_world), "--stac-port", "0", "--asset-port", "0")
    try:
        run.wait_for("served world", lambda: "Press Ctrl-C" in run.stdout(), 60)
        run.watched = run.descendants()
        assert len(run.watched) == 2
        run.proc.kill()
        assert run.proc.wait(timeout=30) == -signal.SIGKILL
        assert _left_after(run.watched) == []
    finally:
        run.kill()


def _train_yaml(tmp_path: Path, world: Path, epochs: int, chips_per_epoch: int) -> Path:
    """The demo workflow on one chunk of ``world`` (served by ``train`` itself), output under ``tmp_path``."""
    wf = load_workflow(WORKFLOWS / "demo.yaml", {
        "region": {"bbox": ONE_CHUNK}, "imagery": {"max_items": 4}, "world": {"directory": str(world)},
        "output": {"directory": str(tmp_path / "out")},
        "train": {"epochs": epochs, "chips_per_epoch": chips_per_epoch, "workers": 2, "num_threads": 2},
    })
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(wf.model_dump(mode="json"), sort_keys=False))
    return path


def test_train_sigterm_while_serving_the_world_stops_servers(demo_world: Path, tmp_path: Path) -> None:
    run = Run.cli(tmp_path, "train", "train", str(_train_yaml(tmp_path, demo_world, 1, 32)))
    try:
        def serving() -> bool:
            run.watched = run.descendants()
            names = " ".join(" ".join(_cmdline(k)) for k in run.watched)
            return "rustac" in names and "miso_mapper.world.assets" in names

        run.wait_for("demo-world servers", serving, 180)
        time.sleep(2)  # reading chips through them
        assert len(run.watched) == 2 and len(_serve_folders(tmp_path)) == 1
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=60) == 143, run.stderr()[-3000:]
        _one_line(run.stderr(), "terminated (SIGTERM)")
        assert _left_after(run.watched) == []
        assert _serve_folders(tmp_path) == []
    finally:
        run.kill()


def _saved_epochs(out: Path) -> dict[str, int]:
    import torch

    return {p.parent.name: torch.load(p, map_location="cpu", weights_only=True)["state"]["epoch"]
            for p in sorted(out.glob("train/runs/*/state.pt"))}


@pytest.mark.slow  # ~3 min idle on 2 cores (training to completion after the resume): keeps the default run < 20 min
def test_train_sigint_stops_worker_processes_within_seconds_and_resumes(demo_world: Path, tmp_path: Path) -> None:
    """SIGINT to the train process alone (``kill -INT``; a terminal's Ctrl-C also reaches the workers, which
    ignore it): the two training workers are terminated mid-epoch instead of finishing their trainings."""
    epochs = 5
    config = str(_train_yaml(tmp_path, demo_world, epochs, 256))
    out = tmp_path / "out"
    run = Run.cli(tmp_path, "train", "train", config)
    try:
        run.wait_for("a saved epoch", lambda: any(out.glob("train/runs/*/state.pt")), 400)
        run.watched = run.descendants()
        assert len(run.watched) >= 2  # two trainings (and multiprocessing's resource tracker)
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        run.proc.send_signal(signal.SIGINT)  # pressed twice: no traceback either
        assert run.proc.wait(timeout=60) == 130, run.stderr()[-3000:]
        took = time.monotonic() - sent
        assert took < 10, f"train took {took:.1f} s to stop"
        _one_line(run.stderr(), "interrupted (Ctrl-C)")
        assert _left_after(run.watched) == []
    finally:
        run.kill()
    saved = _saved_epochs(out)
    assert saved and all(1 <= e < epochs for e in saved.values()), saved

    again = Run.cli(tmp_path, "resume", "train", config)
    try:
        assert again.proc.wait(timeout=600) == 0, again.stderr()[-3000:]
    finally:
        again.kill()
    for task, epoch in saved.items():
        assert f"({epochs} epochs, resumed after epoch {epoch}," in again.stdout(), (task, again.stdout())


PYTEST_SESSION = """
import json, os, time
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demo_world():
    return Path(os.environ["SIGNALS_WORLD"])


def test_serving(served_world):
    Path(os.environ["SIGNALS_PIDS"]).write_text(json.dumps(served_world.pids))
    time.sleep(120)
"""


def test_sigterm_of_pytest_tears_down_the_served_world(demo_world: Path, tmp_path: Path) -> None:
    """A pytest session with this suite's fixtures (``-p tests.conftest``), SIGTERMed in a test using
    ``served_world``, stops its servers and removes their temp folder."""
    (tmp_path / "test_session.py").write_text(PYTEST_SESSION)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    pids = tmp_path / "pids.json"
    run = Run(tmp_path, "pytest", [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p",
                                   "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), "--basetemp",
                                   str(tmp_path / "basetemp"), str(tmp_path / "test_session.py")],
              SIGNALS_WORLD=str(demo_world), SIGNALS_PIDS=str(pids))
    try:
        run.wait_for("served world", pids.exists, 120)
        time.sleep(0.2)
        run.watched = [psutil.Process(pid) for pid in json.loads(pids.read_text())]
        assert len(run.watched) == 2 and all(_alive(p) for p in run.watched) and _serve_folders(tmp_path)
        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(timeout=60) == pytest.ExitCode.INTERRUPTED, run.stdout()[-3000:]
        assert _left_after(run.watched) == []
        assert _serve_folders(tmp_path) == []
    finally:
        run.kill()
