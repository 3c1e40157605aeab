"""The Python API: ``import miso_mapper`` stays light, its names are the commands' functions whatever was
imported before, and the README's example plans the demo workflow as printed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API = ["load_workflow", "plan", "run", "export", "report", "train", "evaluate"]


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_import_loads_neither_torch_nor_dask():
    proc = _python("import sys, miso_mapper\n"
                   f"print(all(callable(getattr(miso_mapper, n)) for n in {API!r}))\n"
                   "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'dask', 'distributed'}))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == ["True", "[]"]


def test_api_names_stay_functions_after_their_submodules_load():
    proc = _python(
        "import json, miso_mapper as mm\n"
        "from miso_mapper.plan import make_plan\n"
        "from miso_mapper.export.run import export_workflow\n"
        "import miso_mapper.report, miso_mapper.evaluate.metrics\n"
        "from miso_mapper import plan\n"
        f"print(json.dumps([[n, getattr(mm, n).__module__, getattr(mm, n).__doc__ is not None] for n in {API!r}]))\n"
        "print(plan is mm.plan, make_plan.__module__)")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0]) == [[name, "miso_mapper.api", True] for name in API]
    assert lines[1] == "True miso_mapper.plan"


def test_readme_example_plans_the_demo_workflow():
    """The README's Python API example up to its plan (the rest trains and maps: the demo's tests cover that)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    offline = example[: example.index("\n\n", example.index("mm.plan("))]
    assert "mm.train" not in offline
    proc = _python(offline + "\nimport sys; print('torch' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["4 chunks, 100 km², 0.000 GPU-hours", "False"]


def test_run_through_the_api_names_the_paths_train_writes(tmp_path):
    """``mm.run`` is the engine ``miso-mapper run`` uses: a MISO workflow without checkpoints is refused with
    the paths ``train`` writes, before any work (nothing is created)."""
    import pytest

    import miso_mapper as mm
    from miso_mapper.errors import MisoError

    out = tmp_path / "out"
    workflow = mm.load_workflow(ROOT / "workflows" / "demo.yaml", {"output": {"directory": str(out)}})
    with pytest.raises(MisoError, match=re.escape(str(out / "train" / "permafrost.safetensors"))):
        mm.run(workflow, only=["r0001c0001"])
    assert not out.exists()
