"""Model files are safe to open: RF-11 is saved as skops and loaded without unpickling, pickles and crafted
files are refused without running anything, and MISO checkpoints and RF-11 files are checked by the ``run``
client before the store is created or any imagery is read.

Real files, real processes: the crafted pickles would create a marker file if anything unpickled them.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from miso_mapper.baseline import RFModel, load_rf, save_rf
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.model import MisoNetConfig, build_model, save_checkpoint
from miso_mapper.pipeline.run import run_workflow

from .helpers import REPO
from .test_baseline_rf import fake_inputs
from .test_pipeline import demo_workflow, write_yaml

CLI = [sys.executable, "-m", "miso_mapper.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180)


class _TouchesMarker:
    """Unpickling this object opens (creates) the file at ``path``: stands in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


@pytest.fixture(scope="module")
def rf_model() -> RFModel:
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(300, 21)).astype(np.float32)
    feats[0, 4] = np.nan
    model = RFModel.fit("permafrost", feats, (feats[:, 6] > 0).astype(int), trees=15)
    return RFModel.fit("taxonomy", feats, np.digitize(feats[:, 12], [-1.0, 0.0, 1.0]) * 2, trees=15, model=model)


def _card(path: Path, model: RFModel) -> None:
    """The card an earlier version wrote beside its pickle."""
    path.with_suffix(".json").write_text(json.dumps(dict(model.card) | {"format": "rf11"}))


def _crafted_pickles(tmp_path: Path, model: RFModel) -> list[tuple[Path, Path]]:
    """(model file, marker) of a plain pickle and of a compressed joblib file that create the marker if read."""
    made = []
    for name, write in (("plain.pkl", lambda p, obj: p.write_bytes(pickle.dumps(obj, protocol=4))),
                        ("old.joblib", lambda p, obj: joblib.dump(obj, p, compress=3))):
        path, marker = tmp_path / name, tmp_path / f"{name}.marker"
        write(path, {"permafrost": _TouchesMarker(marker)})
        _card(path, model)
        made.append((path, marker))
    return made


# --------------------------------------------------------------------------------------------- RF-11 files


def test_rf11_round_trip_through_skops_predicts_identically(rf_model, tmp_path):
    from miso_mapper.baseline.rf_file import TRUSTED_TYPES  # new with the skops format

    path, card = save_rf(rf_model, tmp_path / "rf11.skops")
    assert zipfile.is_zipfile(path) and "schema.json" in zipfile.ZipFile(path).namelist()  # skops, not pickle
    assert path.read_bytes()[:1] != b"\x80"
    # the trusted list is what skops itself flags in our file plus the forest and numpy types, nothing else
    assert set(skops.io.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES)
    assert TRUSTED_TYPES == ["numpy.int64", "numpy.ndarray", "sklearn.ensemble._forest.RandomForestClassifier",
                             "sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._tree.Tree"]
    again = load_rf(path)
    feats = np.random.default_rng(1).normal(size=(200, 21)).astype(np.float32)
    feats[3, 0] = np.nan
    for task in ("permafrost", "taxonomy"):
        np.testing.assert_array_equal(again.predict_proba(task, feats), rf_model.predict_proba(task, feats))
    inputs = fake_inputs()
    interior = (slice(0, 10), slice(0, 12))
    a, b = again.predict_chunk(inputs, interior), rf_model.predict_chunk(inputs, interior)
    for name in ("permafrost_probability", "taxonomy_probability"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert again.card["tasks"] == rf_model.card["tasks"] and json.loads(card.read_text())["file_format"] == "skops"


def test_crafted_pickle_as_rf_model_is_refused_and_runs_nothing(rf_model, tmp_path):
    for path, marker in _crafted_pickles(tmp_path, rf_model):
        with pytest.raises(MisoError) as err:
            load_rf(path)
        message = str(err.value)
        assert "old pickle format" in message and f"miso-mapper rf convert {path}" in message, message
        assert "--trust-pickle" in message and "\n" not in message
        assert not marker.exists(), f"unpickling {path.name} ran code"


def test_skops_file_with_an_untrusted_type_is_refused(rf_model, tmp_path):
    forest = rf_model.forests["permafrost"]
    crafted = {
        "function.skops": {"permafrost": forest, "taxonomy": os.system},  # skops itself distrusts this
        "estimator.skops": {"permafrost": forest, "taxonomy": LogisticRegression()},  # skops trusts; we do not
    }
    for name, content in crafted.items():
        path = tmp_path / name
        skops.io.dump(content, path)
        _card(path, rf_model)
        with pytest.raises(MisoError, match="which an RF-11 model is not made of") as err:
            load_rf(path)
        assert name in str(err.value) and "\n" not in str(err.value)


def test_rf_convert_needs_trust_pickle_and_gives_the_same_forests(rf_model, tmp_path):
    old = tmp_path / "rf11.joblib"
    joblib.dump(rf_model.forests, old, compress=3)  # what earlier versions of save_rf wrote
    _card(old, rf_model)
    new = tmp_path / "rf11.skops"
    proc = run_cli("rf", "convert", str(old), str(new))
    assert proc.returncode == 2 and "--trust-pickle" in proc.stderr and not new.exists(), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("rf", "convert", str(old), str(new), "--trust-pickle")
    assert proc.returncode == 0, proc.stderr
    feats = np.random.default_rng(2).normal(size=(100, 21)).astype(np.float32)
    converted = load_rf(new)
    for task in ("permafrost", "taxonomy"):
        np.testing.assert_array_equal(converted.predict_proba(task, feats), rf_model.predict_proba(task, feats))
    assert isinstance(converted.forests["permafrost"], RandomForestClassifier)


def test_no_pickle_is_read_outside_rf_convert():
    """torch.load only with weights_only=True; joblib/pickle loads only in the explicit converter."""

    class Finder(ast.NodeVisitor):
        def __init__(self, name: str) -> None:
            self.name, self.function, self.found = name, "", []

        def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
            outer, self.function = self.function, node.name
            self.generic_visit(node)
            self.function = outer

        def visit_Call(self, node: ast.Call) -> None:
            called = ast.unparse(node.func)
            safe = any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
            if (called == "torch.load" and not safe) or (
                    called in ("joblib.load", "pickle.load", "pickle.loads") and self.function != "convert_pickled_rf"):
                self.found.append(f"{self.name}:{node.lineno} {called} in {self.function or 'module'}")
            self.generic_visit(node)

    offenders = []
    for path in sorted((REPO / "miso_mapper").rglob("*.py")):
        finder = Finder(str(path.relative_to(REPO)))
        finder.visit(ast.parse(path.read_text()))
        offenders += finder.found
    assert not offenders, offenders


# ------------------------------------------------------------------- checked by the run client before any work


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny permafrost and taxonomy checkpoints in our format, and broken or foreign files."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    made = {task: save_checkpoint(build_model(MisoNetConfig.preset("tiny", task)), folder / f"{task}.safetensors")
            for task in ("permafrost", "taxonomy")}
    data = made["permafrost"].read_bytes()
    (folder / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (folder / "noise.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))
    state = build_model(MisoNetConfig.preset("tiny", "permafrost")).state_dict()
    torch.save(state, folder / "best_model.pth")
    torch.save(state, folder / "legacy.pth", _use_new_zipfile_serialization=False)
    return made | {name: folder / f"{name}" for name in ("truncated.safetensors", "noise.safetensors",
                                                          "best_model.pth", "legacy.pth")}


BAD_CHECKPOINTS = [
    ("truncated.safetensors", "tiny", "not a readable safetensors checkpoint"),
    ("noise.safetensors", "tiny", "not a .safetensors checkpoint"),
    ("taxonomy", "tiny", "a taxonomy network, given as the permafrost checkpoint"),
    ("permafrost", "small", "a 'tiny' network, but model.size is 'small'"),
    ("best_model.pth", "tiny", "zip archive (e.g. a PyTorch .pth"),
    ("legacy.pth", "tiny", "a Python pickle"),
]


@pytest.mark.parametrize(("name", "size", "needle"), BAD_CHECKPOINTS)
def test_bad_checkpoint_stops_run_before_any_work(served_world, checkpoints, tmp_path, name, size, needle):
    path = checkpoints[name]
    wf = demo_workflow(served_world, tmp_path / "out", grid={"halo": 175},
                       model={"kind": "miso", "size": size, "permafrost_checkpoint": str(path)})
    with pytest.raises(MisoError) as err:
        run_workflow(wf)
    message = str(err.value)
    assert message.startswith(f"model.permafrost_checkpoint: {path}") and needle in message, message
    assert "\n" not in message
    out = RunLayout.of(wf)
    assert not out.store.exists() and not out.search.exists(), "work started before the checkpoint was checked"


def test_good_checkpoints_pass_the_client_checks(served_world, checkpoints, tmp_path):
    from miso_mapper.pipeline.predictors import resolve_spec

    wf = demo_workflow(served_world, tmp_path / "out", grid={"halo": 175},
                       model={"kind": "miso", "size": "tiny", "permafrost_checkpoint": str(checkpoints["permafrost"]),
                              "taxonomy_checkpoint": str(checkpoints["taxonomy"])})
    spec = resolve_spec(wf.model, wf.grid)
    assert set(spec.files) == {"permafrost", "taxonomy"} and all(len(h) == 64 for h in spec.hashes.values())


def test_crafted_rf_model_stops_run_before_any_work(served_world, rf_model, tmp_path):
    (path, marker), _ = _crafted_pickles(tmp_path, rf_model)
    wf = demo_workflow(served_world, tmp_path / "out", model={"kind": "rf", "rf_model": str(path)})
    proc = run_cli("run", str(write_yaml(wf, tmp_path / "wf.yaml")))
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "model.rf_model" in lines[0] and "old pickle format" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not RunLayout.of(wf).store.exists() and not marker.exists()
    proc = run_cli("validate", str(tmp_path / "wf.yaml"))
    assert proc.returncode == 2 and "model.rf_model" in proc.stderr and proc.stdout == "", proc.stderr
    assert not marker.exists()
