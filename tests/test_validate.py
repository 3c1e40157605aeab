"""``validate`` refuses what ``plan`` and ``run`` would (exit 2, one line per problem naming the field), ``plan``
lists the run's missing inputs as warnings, and ``run``'s bad options are usage errors (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from miso_mapper.bands import COVARIATE_FILE_STEMS
from miso_mapper.config import load_workflow
from miso_mapper.errors import MisoError
from miso_mapper.plan import make_plan

from .helpers import WORKFLOWS

CLI = [sys.executable, "-m", "miso_mapper.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)


def demo_file(tmp_path: Path, **sections: dict) -> Path:
    """demo.yaml with output in ``tmp_path/out`` and ``sections`` merged over (a section given replaces keys)."""
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"]["directory"] = str(tmp_path / "out")
    raw["world"]["directory"] = str(tmp_path / "world")
    for name, values in sections.items():
        raw[name] = values if name == "region" else {**raw.get(name, {}), **values}
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


FAIRBANKS = [260000, 1660000, 270000, 1670000]

# (sections over demo.yaml, field named, words of the reason, refused by plan too)
REFUSED = {
    "missing region file": ({"region": {"vector": "no-such-region.gpkg"}}, "region.vector",
                            "not found", True),
    "region outside the grid": ({"region": {"bbox": [3_000_000, 3_000_000, 3_100_000, 3_100_000]}},
                                "region.bbox", "outside the grid", True),
    "unknown tile id": ({"region": {"tiles": ["AK050H99V99"]}}, "region.tiles", "outside the grid", True),
    "malformed tile id": ({"region": {"tiles": ["H50V15"]}}, "region.tiles", "not a tile id", True),
    "unknown EPSG code": ({"region": {"bbox": FAIRBANKS, "bbox_crs": "EPSG:999999"}}, "region.bbox_crs",
                          "not a CRS pyproj knows", True),
    "unknown grid CRS": ({"grid": {"crs": "EPSG:12345678"}}, "grid.crs", "not a CRS pyproj knows", True),
    "infinite bbox": ({"region": {"bbox": [260000, 1660000, float("inf"), 1670000]}}, "region.bbox.2",
                      "finite number", True),
    "missing covariate folder": ({"covariates": {"source": "folder", "path": "no-such-folder"}},
                                 "covariates.path", "covariate folder not found", False),
    "missing points file": ({"points": {"path": "no-such-points.geojson"}}, "points.path", "file not found", False),
    "missing checkpoint": ({"model": {"permafrost_checkpoint": "no-such.safetensors"}},
                           "model.permafrost_checkpoint", "does not exist", False),
    "missing rf model": ({"model": {"kind": "rf", "rf_model": "no-such.skops"}}, "model.rf_model",
                         "does not exist", False),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_validate_refuses_with_one_line_naming_the_field(tmp_path, case):
    sections, field, reason, plan_refuses = REFUSED[case]
    path = demo_file(tmp_path, **sections)
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{path}: {field}" in lines[0] and reason in lines[0], lines[0]
    assert proc.stdout == ""
    # plan builds the region with the same function: refused there too, or the run's inputs listed as warnings
    try:
        warnings = make_plan(load_workflow(path)).warnings
    except MisoError as exc:
        assert plan_refuses and reason in str(exc), exc
    else:
        assert not plan_refuses and any(w.startswith(field) and reason in w for w in warnings), warnings


def test_validate_passes_a_workflow_whose_inputs_exist(tmp_path):
    regions = tmp_path / "regions"
    regions.mkdir()
    shutil.copy(WORKFLOWS / "regions" / "alaska.geojson", regions)
    cov = tmp_path / "cov"
    cov.mkdir()
    for stem in COVARIATE_FILE_STEMS.values():
        (cov / f"{stem}.tif").touch()  # validate checks presence; reading them is run's business
    raw = yaml.safe_load((WORKFLOWS / "alaska-10m.yaml").read_text())
    raw["covariates"]["path"] = "cov"
    raw["model"] = {"kind": "synthetic"}
    path = tmp_path / "alaska.yaml"
    path.write_text(yaml.safe_dump(raw))
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads(proc.stdout)
    assert resolved["region"]["vector"] == str((regions / "alaska.geojson").resolve())
    assert resolved["covariates"]["path"] == str(cov.resolve())
    assert resolved["imagery"]["profile"] == "earth-search-v1"
    from miso_mapper.checks import workflow_problems  # new with these checks

    assert workflow_problems(load_workflow(path)) == []


def test_statewide_workflow_plans_here_but_does_not_validate():
    """Its covariates and checkpoints are not on this machine: validate refuses them, plan warns and plans."""
    path = WORKFLOWS / "alaska-10m.yaml"
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2, proc.stderr
    fields = [line.split(": ")[2] for line in proc.stderr.strip().splitlines()]
    assert fields == ["covariates.path", "model.permafrost_checkpoint", "model.taxonomy_checkpoint"], proc.stderr
    proc = run_cli("plan", "--json", str(path))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["chunks"] > 2000
    assert [w.split(":")[0] for w in summary["warnings"]] == fields
    assert proc.stderr.count("warning:") == 3


@pytest.mark.parametrize(("args", "needle"), [
    (["--only", "bogus"], "--only: 'bogus' is not a chunk id"),
    (["--only", "r0001c0001"], "--only: chunk(s) r0001c0001 are not in the planned region"),
    (["--max-chunks", "0"], "--max-chunks must be at least 1, got 0"),
    (["--max-chunks", "-3"], "--max-chunks must be at least 1, got -3"),
])
def test_run_usage_errors_exit_2(tmp_path, args, needle):
    path = demo_file(tmp_path, model={"kind": "synthetic"})
    proc = run_cli("run", str(path), *args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_validate_reads_the_points_as_train_and_evaluate_do(tmp_path):
    """A label field named otherwise is refused in one line naming it and the fields there are; named, it passes."""
    feats = [{"type": "Feature", "geometry": None,
              "properties": {"id": f"p{i}", "permafrost_1m": i % 2, "soil_order": "Gelisols",
                             "x_3338": 261_000.0 + 100 * i, "y_3338": 1_665_000.0}} for i in range(4)]
    (tmp_path / "pts.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    path = demo_file(tmp_path, points={"path": "pts.geojson"})
    proc = run_cli("validate", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: points.path: points file " in lines[0], proc.stderr
    assert lines[0].endswith("no point has property 'permafrost' (points.permafrost_field); the points have: id, "
                             "permafrost_1m, soil_order, x_3338, y_3338")
    path = demo_file(tmp_path, points={"path": "pts.geojson", "permafrost_field": "permafrost_1m"})
    proc = run_cli("validate", str(path))
    assert proc.returncode == 0, proc.stderr
