"""The run-folder layout: every path of a run, the directory overrides, and the modules that ask it."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from miso_mapper.config import load_workflow
from miso_mapper.layout import EvaluationLayout, RunLayout

from .helpers import WORKFLOWS


def _workflow(tmp_path: Path, **sections: dict) -> object:
    raw = yaml.safe_load((WORKFLOWS / "demo.yaml").read_text())
    raw["output"]["directory"] = "run"
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_workflow(path)


def test_default_layout_is_the_run_folder_of_today(tmp_path):
    layout = RunLayout.of(_workflow(tmp_path))
    run = tmp_path / "run"
    assert layout.directory == run
    assert (layout.store, layout.manifest, layout.write_log, layout.search, layout.logs, layout.report) == (
        run / "maps.zarr", run / "manifest.sqlite", run / "write-log", run / "search", run / "logs",
        run / "report.html")
    assert layout.train.directory == run / "train"
    assert layout.train.chips == run / "train" / "chips"
    assert layout.train.checkpoint("taxonomy") == run / "train" / "taxonomy.safetensors"
    assert layout.train.run("permafrost") == run / "train" / "runs" / "permafrost"
    ev = layout.evaluate
    assert ev.directory == run / "evaluate"
    assert ev.split("spatial-1km") == run / "evaluate" / "splits" / "spatial-1km.json"
    assert ev.run("random", 2, "taxonomy") == run / "evaluate" / "runs" / "random" / "fold2" / "taxonomy"
    assert ev.table("permafrost", "md") == run / "evaluate" / "table1_permafrost.md"
    assert ev.table("taxonomy", "csv") == run / "evaluate" / "table2_taxonomy.csv"
    assert (ev.regions("md"), ev.predictions, ev.metrics, ev.report) == (
        run / "evaluate" / "regions.md", run / "evaluate" / "predictions.csv", run / "evaluate" / "metrics.json",
        run / "evaluate" / "report.html")
    assert layout.products == run / "products"
    assert (layout.sample_sites.geojson, layout.sample_sites.csv) == (
        run / "sample-sites" / "sample_sites.geojson", run / "sample-sites" / "sample_sites.csv")


def test_directory_overrides_are_honoured(tmp_path):
    wf = _workflow(tmp_path, train={"directory": "nets"}, evaluate={"directory": "/abs/cv"},
                   export={"directory": "cogs-out"}, sample_sites={"directory": "field"})
    layout = RunLayout.of(wf)
    assert layout.sample_sites.directory == tmp_path / "field"
    assert layout.train.checkpoint("permafrost") == tmp_path / "nets" / "permafrost.safetensors"
    assert layout.evaluate == EvaluationLayout(Path("/abs/cv"))
    assert layout.products == tmp_path / "cogs-out"
    assert layout.store == tmp_path / "run" / "maps.zarr"  # the store always lives in output.directory


def test_layout_is_frozen(tmp_path):
    layout = RunLayout.of(_workflow(tmp_path))
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.products = tmp_path  # type: ignore[misc]


def test_output_config_names_no_run_path(tmp_path):
    wf = _workflow(tmp_path)
    assert not hasattr(wf.output, "store") and not hasattr(wf.output, "manifest")  # RunLayout is the one place


def test_layout_loads_no_torch():
    code = "import sys, miso_mapper.layout; print(sorted(m for m in ('torch', 'zarr') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "[]"
