"""Predictor settings as part of the workflow: typed, torch-free, checked against the grid when the workflow
loads, one window size; the predictor spec a worker builds from; the run's progress as the command line shows it."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from miso_mapper.bands import WINDOW_PX
from miso_mapper.config import GridConfig, ModelConfig, SyntheticConfig, TrainConfig, load_workflow
from miso_mapper.errors import ConfigError, MisoError
from miso_mapper.imagery.sample import cut_windows, sample_points
from miso_mapper.inference.settings import PredictorConfig, auto_query_spacing, checked_predictor_config
from miso_mapper.model.config import MisoNetConfig
from miso_mapper.pipeline.commands import RichRunProgress
from miso_mapper.pipeline.predictors import build_predictor, resolve_spec
from miso_mapper.pipeline.progress import ChunkReport, RunStart, RunSummary
from miso_mapper.pipeline.synthetic import SyntheticPredictor

from .helpers import REPO, WORKFLOWS


def test_config_and_plan_load_no_torch():
    code = (
        "import sys\n"
        "import miso_mapper.config, miso_mapper.plan, miso_mapper.inference.flops\n"
        "assert 'torch' not in sys.modules, 'import'\n"
        "from miso_mapper.config import load_workflow\n"
        "from miso_mapper.plan import make_plan\n"
        f"plan = make_plan(load_workflow({str(WORKFLOWS / 'demo.yaml')!r}))\n"
        "assert 'torch' not in sys.modules, 'plan'\n"
        "print(plan.windows_per_chunk)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["169"]  # 13 x 13 windows: the count needs no network


def test_one_window_size():
    assert WINDOW_PX == 250
    assert PredictorConfig().window == MisoNetConfig().crop_size == TrainConfig().crop_size == WINDOW_PX
    assert inspect.signature(cut_windows).parameters["size"].default == WINDOW_PX
    assert inspect.signature(sample_points).parameters["window"].default == WINDOW_PX
    assert PredictorConfig().stride == 50  # the reference's 250 // 5
    assert GridConfig().halo == PredictorConfig().required_halo() == 175  # half the window + one stride


def test_auto_query_spacing_of_the_presets():
    spacing = {size: auto_query_spacing(MisoNetConfig.preset(size, "permafrost"), 50)
               for size in ("tiny", "small", "compact", "reference")}
    assert spacing == {"tiny": 5, "small": 5, "compact": 5, "reference": 5}
    assert auto_query_spacing(MisoNetConfig.preset("reference", "permafrost"), 8) == 4  # a divisor of the stride
    # multi-rate: the finest stage at every queried point, the others at most 0.8 of their own cell (7.8 / 15.6
    # / 31 px), never below the query spacing
    ref = MisoNetConfig.preset("reference", "permafrost")
    assert PredictorConfig().spacings([ref]) == (5, (5, 5, 10, 25))
    assert PredictorConfig(query_spacing=1).spacings([ref]) == (1, (1, 5, 10, 25))
    tiny = MisoNetConfig.preset("tiny", "permafrost")
    assert PredictorConfig().spacings([tiny]) == (5, (5, 25, 50, 50))
    assert PredictorConfig(multi_rate=False).spacings([ref]) == (5, (5, 5, 5, 5))
    assert PredictorConfig(stage_spacings=(1, 10, 10, 50)).spacings([ref]) == (5, (5, 10, 10, 50))
    assert PredictorConfig.reference().spacings([ref]) == (1, (1, 1, 1, 1))  # exact: every pixel, every stage
    assert PredictorConfig().spacings([tiny, ref]) == (5, (5, 5, 10, 25))  # the finer network wins


def test_model_predictor_is_typed_and_an_empty_section_is_the_defaults():
    assert ModelConfig.model_validate({"predictor": {}}) == ModelConfig()
    model = ModelConfig.model_validate({"predictor": {"stride": 25, "query_spacing": 5}})
    assert isinstance(model.predictor, PredictorConfig)
    assert (model.predictor.stride, model.predictor.query_spacing, model.predictor.support) == (25, 5, 100)
    with pytest.raises(ValueError, match="frozen"):
        model.predictor.stride = 10  # type: ignore[misc]


def test_workflow_checks_the_predictor_against_the_grid_for_miso_only():
    with pytest.raises(ConfigError, match=r"model\.predictor: grid\.halo is 125 px .* at least 175 px") as info:
        load_workflow(WORKFLOWS / "demo.yaml", {"grid": {"halo": 125}})
    assert info.value.exit_code == 2 and len(str(info.value).splitlines()) == 1
    reference = load_workflow(WORKFLOWS / "demo.yaml", {"grid": {"halo": 125},
                                                        "model": {"predictor": {"query_all_pixels": True}}})
    assert reference.model.predictor.required_halo() == 125  # the reference setting needs half a window
    for kind in ("rf", "synthetic"):
        assert load_workflow(WORKFLOWS / "demo.yaml", {"grid": {"halo": 16}, "model": {"kind": kind}}).grid.halo == 16


def test_checked_predictor_config_takes_settings_or_a_dict():
    assert checked_predictor_config({"stride": 25}, 500, 200) == PredictorConfig(stride=25)
    settings = PredictorConfig()
    assert checked_predictor_config(settings, 2500, 175) is settings
    with pytest.raises(MisoError, match="model.predictor: .*query_spacing 3 must divide the stride 50"):
        checked_predictor_config({"query_spacing": 3}, 500, 175)
    with pytest.raises(MisoError, match="model.predictor: grid.chunk_size 520 is not a multiple"):
        checked_predictor_config(settings, 520, 175)


def test_spec_carries_the_typed_settings_to_the_worker(tmp_path):
    from safetensors.numpy import save_file

    from miso_mapper.model.card import CARD_KEY, ModelCard

    ckpt = tmp_path / "pf.safetensors"  # the client reads the card only: one stand-in tensor is enough here
    save_file({"w": np.zeros(2, np.float32)}, str(ckpt), metadata={CARD_KEY: ModelCard().model_dump_json()})
    model = ModelConfig(permafrost_checkpoint=ckpt, predictor=PredictorConfig(query_spacing=10, batch_size=2))
    spec = resolve_spec(model, GridConfig(chunk_size=500, zarr_chunk=250))
    assert PredictorConfig(**spec.options) == model.predictor
    assert spec.files == {"permafrost": str(ckpt)} and len(spec.hashes["permafrost"]) == 64
    with pytest.raises(MisoError, match="model.predictor: grid.halo is 100 px"):
        resolve_spec(model.model_copy(), GridConfig(halo=100))


def test_synthetic_spec_builds_the_stand_in_from_model_synthetic():
    spec = resolve_spec(ModelConfig(kind="synthetic", synthetic=SyntheticConfig(seed=3)), GridConfig())
    built = build_predictor(spec)
    assert isinstance(built, SyntheticPredictor)
    np.testing.assert_array_equal(built.weights, SyntheticPredictor(seed=3).weights)
    default = build_predictor(resolve_spec(ModelConfig(kind="synthetic"), GridConfig()))
    np.testing.assert_array_equal(default.weights, SyntheticPredictor().weights)  # the stand-in's old defaults
    assert not np.array_equal(built.weights, default.weights)


def _summary(**fields) -> RunSummary:
    return RunSummary(Path("/runs/demo/maps.zarr"), planned=4, selected=4, **fields)


def test_rich_progress_draws_bar_eta_and_summary():
    console = Console(record=True, width=200, force_terminal=False)
    with RichRunProgress(console) as progress:
        progress.started(RunStart("demo", chunks=3, km2=75.0, dashboard="http://127.0.0.1:8787/status"))
        progress.chunk_finished(ChunkReport("r1c1", "done", 1, 2.0, 25.0, result={"checksum": "x"}))
        progress.chunk_finished(ChunkReport("r1c2", "retrying", 1, 1.0, 25.0, error="worker died"))
        progress.chunk_finished(ChunkReport("r1c2", "failed", 3, 1.0, 25.0, error="boom"))
        summary = _summary(todo=3, done=["r1c1"], failed={"r1c2": "boom"}, seconds=7.2, km2=25.0,
                           manifest_counts={"pending": 1, "done": 1, "failed": 1})
        progress.finished(summary)
    text = console.export_text()
    assert "dashboard: http://127.0.0.1:8787/status" in text
    assert "run demo" in text and "2/3 chunks" in text and "25/75 km²" in text and "1 failed" in text
    assert "ETA " in text
    for needle in ("run summary", "done this run", "1 chunk(s), 25 km²", "already done", "7.2 s",
                   "pending 1, done 1, failed 1", "✗ r1c2 boom"):
        assert needle in text, needle


def test_rich_progress_says_when_there_is_nothing_to_do():
    console = Console(record=True, width=200, force_terminal=False)
    with RichRunProgress(console) as progress:
        progress.finished(_summary(skipped=4, manifest_counts={"done": 4}))
    text = console.export_text()
    assert "nothing to do: 4 of 4 chunk(s) already done" in text and "run summary" in text
    assert "chunks" not in text.split("run summary")[0].replace("chunk(s)", "")  # no bar was drawn
