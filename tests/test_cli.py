"""The command line: help everywhere, exit codes, one-line errors for bad workflows and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import WORKFLOWS

CLI = [sys.executable, "-m", "miso_mapper.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    "command",
    [[], ["plan"], ["validate"], ["world"], ["world", "create"], ["world", "serve"], ["demo"], ["train"],
     ["evaluate"], ["run"], ["status"], ["sample-sites"]],
)
def test_every_command_has_help(command):
    proc = run_cli(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout


def test_usage_error_exits_2():
    proc = run_cli("plan")  # missing CONFIG
    assert proc.returncode == 2
    proc = run_cli("no-such-command")
    assert proc.returncode == 2


def write_workflow(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _unknown_key(raw):
    raw["imagery"]["max_itmes"] = 4


def _wrong_type(raw):
    raw["grid"]["chunk_size"] = "big"


def _bad_value(raw):
    raw["imagery"]["max_cloud_cover"] = 140


def _unaligned(raw):
    raw["grid"]["zarr_chunk"] = 300


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (_unknown_key, ["imagery.max_itmes", "unknown key"]),
        (_wrong_type, ["grid.chunk_size", "integer"]),
        (_bad_value, ["imagery.max_cloud_cover", "less than or equal to 100"]),
        (_unaligned, ["grid", "whole number of zarr_chunk"]),
    ],
)
def test_bad_workflow_files_exit_2_naming_the_field(tmp_path, mutate, needles):
    path = write_workflow(tmp_path, mutate)
    proc = run_cli("plan", str(path))
    assert_one_line_error(proc, 2, str(path), *needles)
    assert len(proc.stderr.strip().splitlines()) == 1


def test_not_yaml_and_missing_file_exit_2(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nregion: [unclosed\n")
    assert_one_line_error(run_cli("plan", str(bad)), 2, "not valid YAML", "line")
    assert_one_line_error(run_cli("plan", str(tmp_path / "nope.yaml")), 2, "workflow file not found")


def test_region_outside_grid_is_one_line_error(tmp_path):
    def outside(raw):
        raw["region"]["bbox"] = [3_000_000, 3_000_000, 3_100_000, 3_100_000]

    proc = run_cli("plan", str(write_workflow(tmp_path, outside)))
    assert_one_line_error(proc, 1, "outside the grid")


def test_bbox_in_degrees_with_projected_crs_is_refused(tmp_path):
    def degrees(raw):
        raw["region"]["bbox"] = [-148.0, 64.7, -147.5, 65.0]

    proc = run_cli("plan", str(write_workflow(tmp_path, degrees)))
    assert_one_line_error(proc, 1, "looks like longitude/latitude", "EPSG:4326")


def test_bbox_in_degrees_plans_the_same_place(tmp_path):
    def lonlat(raw):
        raw["region"]["bbox"] = [-147.9, 64.8, -147.8, 64.85]
        raw["region"]["bbox_crs"] = "EPSG:4326"

    proc = run_cli("plan", "--json", str(write_workflow(tmp_path, lonlat)))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["tile_ids"] == ["AK050H50V15"]  # near Fairbanks


def test_missing_vector_file_is_one_line_error(tmp_path):
    def vector(raw):
        raw["region"] = {"vector": "does-not-exist.gpkg"}

    proc = run_cli("plan", str(write_workflow(tmp_path, vector)))
    assert_one_line_error(proc, 1, "region vector file not found", "does-not-exist.gpkg")


def test_plan_alaska_offline_prints_the_figures():
    proc = run_cli("plan", str(WORKFLOWS / "alaska-10m.yaml"))
    assert proc.returncode == 0, proc.stderr
    for needle in ("tiles", "chunks", "km²", "GPU-hours", "FLOP", "input", "output"):
        assert needle in proc.stdout
    summary = json.loads(run_cli("plan", "--json", str(WORKFLOWS / "alaska-10m.yaml")).stdout)
    assert summary["chunks"] > 2000 and summary["tiles"] > 600
    assert summary["gpu_hours"] > 0


# validate's resolved paths (and that alaska-10m.yaml does not validate on a machine without its data):
# tests/test_validate.py


def test_status_without_a_run_is_one_line_error(tmp_path):
    def elsewhere(raw):
        raw["output"]["directory"] = str(tmp_path / "out")

    proc = run_cli("status", str(write_workflow(tmp_path, elsewhere)))
    assert_one_line_error(proc, 1, "no run manifest")


def test_validate_prints_every_predictor_default():
    proc = run_cli("validate", str(WORKFLOWS / "demo.yaml"))
    assert proc.returncode == 0, proc.stderr
    predictor = json.loads(proc.stdout)["model"]["predictor"]
    assert predictor["window"] == 250 and predictor["stride"] == 50 and predictor["support"] == 100
    # the demo sets nothing: every key is filled in with its default (spacings automatic from the network)
    assert predictor["query_spacing"] is None and predictor["device"] == "auto" and predictor["ramp"] == 50
    assert predictor["multi_rate"] is True and predictor["stage_spacings"] is None


def test_validate_accepts_an_empty_predictor_section(tmp_path):
    def empty(raw):
        raw["model"]["predictor"] = {}

    proc = run_cli("validate", str(write_workflow(tmp_path, empty)))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"]["predictor"]["ramp"] == 50


def _predictor(**settings):
    def mutate(raw):
        raw["model"]["predictor"] = settings

    return mutate


def _small_halo(raw):
    raw["grid"]["halo"] = 125


def _rf_with_small_halo(raw):
    raw["grid"]["halo"] = 125
    raw["model"]["kind"] = "rf"


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (_predictor(strdie=25), ["model.predictor.strdie: unknown key"]),
        (_predictor(support=20), ["model.predictor: support 20 must be more than half the stride (50)"]),
        (_predictor(device="tpu"), ["model.predictor.device"]),
        (_predictor(stage_spacings=[5, 5, 10, 20]), ["model.predictor: stage_spacings [5, 5, 10, 20] must be "
                                                     "positive divisors of the stride 50"]),
        (_small_halo, ["model.predictor: grid.halo is 125 px but the predictor needs at least 175 px"]),
        (_predictor(stride=40, support=60, ramp=40), ["model.predictor: grid.chunk_size 500 is not a multiple of "
                                                       "the predictor stride 40"]),
    ],
)
def test_validate_refuses_what_plan_and_run_would(tmp_path, mutate, needles):
    path = write_workflow(tmp_path, mutate)
    for command in ("validate", "plan"):
        proc = run_cli(command, str(path))
        assert_one_line_error(proc, 2, str(path), *needles)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert proc.stdout == ""


def test_a_small_halo_is_no_concern_without_a_network(tmp_path):
    proc = run_cli("validate", str(write_workflow(tmp_path, _rf_with_small_halo)))
    assert proc.returncode == 0, proc.stderr


COMMANDS = [[], ["plan"], ["validate"], ["world"], ["world", "create"], ["world", "serve"], ["demo"], ["train"],
            ["evaluate"], ["run"], ["status"], ["unlock"], ["report"], ["export"], ["sample-sites"], ["rf"],
            ["rf", "convert"], ["checkpoint"], ["checkpoint", "import"], ["checkpoint", "export"],
            ["checkpoint", "show"]]


def test_help_texts_have_no_leftovers():
    """Every command's help, read in one process: no development leftovers, options spelled as typed."""
    script = ("import json, sys\nfrom typer.testing import CliRunner\nfrom miso_mapper.cli import app\n"
              f"out = [CliRunner().invoke(app, [*c, '--help'], terminal_width=400).output for c in {COMMANDS!r}]\n"
              "print(json.dumps(out))")
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps help at COLUMNS
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    helps = dict(zip(map(" ".join, COMMANDS), json.loads(proc.stdout), strict=True))
    for command, text in helps.items():
        assert "Usage" in text, command
        for leftover in ("as they land", "TODO", "later stages", "use overwrite"):
            assert leftover not in text, (command, leftover)
    assert "train, evaluate, run, export, report" in helps["demo"]
    assert "<permafrost|taxonomy|both>" in helps["train"]


def test_world_create_names_the_overwrite_flag(tmp_path):
    (tmp_path / "taken.txt").write_text("x")
    assert_one_line_error(run_cli("world", "create", str(tmp_path)), 1, "add --overwrite to replace it")


_TORCH_PROBE = """
import sys, time
from miso_mapper.cli import main
t0 = time.perf_counter()
try:
    main()
except SystemExit as exc:
    sys.stderr.write(f"\\nEXIT {exc.code} TORCH {'torch' in sys.modules} SECONDS {time.perf_counter() - t0:.2f}\\n")
"""


@pytest.mark.parametrize("args", [
    ["train", str(WORKFLOWS / "demo.yaml"), "--task", "foo"],
    ["train", "no-such-workflow.yaml"],
    ["evaluate", "no-such-workflow.yaml"],
    ["checkpoint", "import", "x.pth", "--task", "soil", "--out", "x.safetensors"],
    ["checkpoint", "import", "x.pth", "--task", "permafrost", "--size", "huge", "--out", "x.safetensors"],
    ["checkpoint", "export", "x.safetensors", "--to", "nobody", "--out", "x.pth"],
])
def test_argument_errors_come_before_torch_loads(args):
    """A bad argument or workflow file is a usage error within seconds: torch (tens of seconds to import on a
    busy node) is never loaded for it."""
    proc = subprocess.run([sys.executable, "-c", _TORCH_PROBE, *args], capture_output=True, text=True, timeout=120)
    last = proc.stderr.strip().splitlines()[-1].split()
    assert last[:4] == ["EXIT", "2", "TORCH", "False"], proc.stderr
    assert float(last[-1]) < 5, proc.stderr
