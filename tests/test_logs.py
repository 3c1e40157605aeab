"""Logs for batch jobs: plain lines on a pipe, log level and JSON format, a log file in the run folder,
progress lines with an ETA."""

import io
import json
import os
import re
import subprocess
import sys

import yaml
from rich.console import Console

from miso_mapper.console import MisoConsole, plain_text
from miso_mapper.progressbar import LineProgress, clock, progress_bar

from .helpers import REPO, WORKFLOWS

CLI = [sys.executable, "-m", "miso_mapper.cli"]


def run_piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The CLI with stdout and stderr on pipes (as in a SLURM .out), never a terminal."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, **(env or {})})


def test_plan_on_a_pipe_is_plain_unwrapped_lines():
    proc = run_piped("plan", str(WORKFLOWS / "alaska-10m.yaml"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b" not in out and "…" not in out
    compute = [line for line in out.splitlines() if "GPU-hours at" in line]
    assert len(compute) == 1 and "TFLOP/s sustained" in compute[0]  # one row, one line: nothing wrapped at 80
    assert max(len(line) for line in out.splitlines()) > 80
    assert out.splitlines()[0].startswith("plan: ")  # the title has a line of its own


def test_an_evaluation_table_keeps_its_full_numbers_on_a_pipe():
    code = ("from tests.test_evaluate_report import fake_evaluation; from miso_mapper.cli import console; "
            "from miso_mapper.evaluate.report import print_tables; print_tables(fake_evaluation(), console)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    from miso_mapper.evaluate.report import summary_rows

    from .test_evaluate_report import fake_evaluation

    ev = fake_evaluation()
    numbers = re.findall(r"\d+\.\d+ ± \d+\.\d+", proc.stdout)
    assert "…" not in proc.stdout and len(numbers) >= 12
    assert all(row["scheme"] in proc.stdout for row in summary_rows(ev, "taxonomy"))
    assert "Table 1: near-surface permafrost (mean ± std over 2 folds)" in proc.stdout.splitlines()


def test_json_format_is_one_object_per_line_and_the_level_filters():
    proc = run_piped("--log-format", "json", "plan", str(WORKFLOWS / "alaska-10m.yaml"))
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert records[0]["level"] == "info" and "GPU-hours at" in records[0]["message"]
    quiet = run_piped("plan", str(WORKFLOWS / "alaska-10m.yaml"), env={"MISO_LOG_LEVEL": "warning"})
    assert quiet.returncode == 0 and quiet.stdout == ""
    bad = run_piped("--log-level", "loud", "plan", str(WORKFLOWS / "alaska-10m.yaml"))
    assert bad.returncode == 2 and "loud" in bad.stderr


def test_a_workflow_command_writes_a_debug_log_file_in_the_run_folder(tmp_path):
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"] = {"directory": str(tmp_path / "out")}
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(raw))
    # a run folder with earlier logs (in a fresh one, a command refused before any work leaves nothing)
    (tmp_path / "out" / "logs").mkdir(parents=True)
    proc = run_piped("--log-format", "json", "run", str(config), env={"MISO_LOG_LEVEL": "warning"})
    assert proc.returncode == 1  # the demo workflow names no checkpoint: refused, and the refusal is logged
    logs = list((tmp_path / "out" / "logs").glob("run-*.log"))
    assert len(logs) == 1
    records = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert records[0]["level"] == "debug" and records[0]["command"] == "run"
    assert any(r["level"] == "error" and "checkpoint" in r["message"] for r in records)
    assert [json.loads(line)["level"] for line in proc.stderr.splitlines()] == ["error"]  # one line, as JSON


def test_a_text_log_file_names_itself_first(tmp_path):
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"] = {"directory": str(tmp_path / "out")}
    config = tmp_path / "w.yaml"
    config.write_text(yaml.safe_dump(raw))
    (tmp_path / "out" / "logs").mkdir(parents=True)  # earlier logs: this refused run's log is kept beside them
    proc = run_piped("run", str(config))
    log = next((tmp_path / "out" / "logs").glob("run-*.log"))
    assert proc.stdout.splitlines()[0] == f"log: {log}"  # on stdout: stderr keeps one line per error
    assert " DEBUG miso_mapper: " in log.read_text()


def _piped_console() -> tuple[MisoConsole, io.StringIO]:
    buffer = io.StringIO()
    return MisoConsole(file=buffer), buffer


def test_progress_off_a_terminal_is_a_line_per_tenth_with_an_eta():
    console, buffer = _piped_console()
    now = [0.0]
    bar = progress_bar(console)
    assert isinstance(bar, LineProgress)
    bar.get_time = lambda: now[0]
    with bar:
        task = bar.add_task("MISO permafrost", total=200)
        for _ in range(200):
            now[0] += 0.5
            bar.advance(task)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 11  # the start, then every 10 %
    assert lines[5] == "MISO permafrost: 100/200 (50%), elapsed 0:00:50, ETA 0:00:50"
    assert lines[-1].startswith("MISO permafrost: 200/200 (100%), elapsed 0:01:40, ETA 0:00:00")


def test_progress_eta_counts_only_the_work_done_since_start_and_lines_come_every_30_s():
    console, buffer = _piped_console()
    now = [0.0]
    bar = LineProgress(console, every_fraction=1.0)
    bar.get_time = lambda: now[0]
    task = bar.add_task("training", total=100, completed=50)  # resumed at half way
    for _ in range(10):
        now[0] += 10.0
        bar.advance(task)
    bar.stop()
    lines = buffer.getvalue().splitlines()
    assert lines[1] == "training: 53/100 (53%), elapsed 0:00:30, ETA 0:07:50"  # 10 s a step, 47 to go
    assert len(lines) == 5 and lines[-1].startswith("training: 60/100")


def test_plain_text_never_wraps_a_table_title_or_cell():
    from rich.table import Table

    table = Table(title="x" * 300)
    table.add_column("Scheme")
    table.add_row("0." + "7" * 200)
    lines = plain_text(table).splitlines()
    assert lines[0] == "x" * 300 and any("0." + "7" * 200 in line for line in lines)
    assert clock(3725.2) == "1:02:05" and clock(None) == "-:--:--"


def test_a_terminal_console_still_draws_rich_output():
    console = MisoConsole(file=io.StringIO(), force_terminal=True, width=40)
    assert not console.plain
    assert not isinstance(progress_bar(console), LineProgress)
    assert isinstance(Console(), Console)


def test_a_composite_over_all_nan_pixels_warns_nothing_even_in_threads():
    import threading
    import warnings

    import numpy as np

    from miso_mapper.imagery.composite import composite_array

    values = np.random.default_rng(0).uniform(1, 1e4, (6, 3, 8, 8)).astype(np.float32)
    ok = np.zeros((6, 8, 8), bool)
    ok[:, :4] = True  # the lower half is cloudy in every scene
    ok[::2, :4, :2] = False
    errors: list[BaseException] = []

    def composite_many() -> None:
        try:
            for _ in range(200):
                composite_array(values, ok)
        except BaseException as exc:  # a RuntimeWarning raised by the "error" filter
            errors.append(exc)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        median, count = composite_array(values, ok)
        threads = [threading.Thread(target=composite_many) for _ in range(4)]  # as in Dask's threaded workers
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors[0]
    assert np.isnan(median[:, 4:]).all() and (count[4:] == 0).all()
    expected = np.median(values[1::2, :, :4, :2], axis=0)
    np.testing.assert_array_equal(median[:, :4, :2], expected)
    np.testing.assert_array_equal(median[:, :4, 2:], np.median(values[:, :, :4, 2:], axis=0))


def _bar_in_worker(steps: int) -> int:
    """What a training in a pool worker does with its bar (module level: spawned workers import it)."""
    from miso_mapper.train import parallel

    bar = parallel.RemoteProgress(parallel._EVENTS)
    task = bar.add_task(f"job {os.getpid()}", total=steps)
    for _ in range(steps):
        bar.advance(task)
    bar.remove_task(task)
    return os.getpid()


def test_trainings_in_a_pool_report_their_progress_to_the_parent():
    from miso_mapper.train.parallel import training_pool

    console, buffer = _piped_console()
    bar = LineProgress(console)
    with bar, training_pool(2, bar) as pool:
        pids = [f.result() for f in [pool.submit(_bar_in_worker, 20) for _ in range(2)]]
    text = buffer.getvalue()
    for pid in pids:
        assert f"job {pid}: 0/20 (0%)" in text and f"job {pid}: 10/20 (50%)" in text, text
        assert f"job {pid}: 20/20 (100%)" in text, text
