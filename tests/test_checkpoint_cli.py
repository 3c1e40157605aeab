"""``miso-mapper checkpoint import|export|show``: reference .pth files in and out, strictly, with one-line errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from miso_mapper.cli import app
from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNetConfig, build_model, load_checkpoint, read_model_card, save_checkpoint

MANIFEST = Path(__file__).parents[2] / "shared/reference/miso_state_dict_keys.json"


def cli(*args: str):
    return CliRunner().invoke(app, ["checkpoint", *map(str, args)])


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tiny_pth(tmp_path_factory) -> Path:
    """A reference-layout state dict (same names as the reference network) at the tiny size."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("pth") / "best_model.pth"
    torch.save(build_model(MisoNetConfig.preset("tiny", "taxonomy")).state_dict(), path)
    return path


def test_import_writes_a_checkpoint_with_its_card(tiny_pth: Path, tmp_path: Path) -> None:
    import hashlib

    out = tmp_path / "tax.safetensors"
    result = cli("import", "--from", "reference", tiny_pth, "--task", "taxonomy", "--size", "tiny", "--out", out)
    assert result.exit_code == 0, result.stderr
    card = read_model_card(out)
    assert card.config == MisoNetConfig.preset("tiny", "taxonomy")
    assert card.source == "reference:best_model.pth"
    assert card.source_sha256 == hashlib.sha256(tiny_pth.read_bytes()).hexdigest()
    assert card.class_names[2] == "Gelisols" and card.created and card.software_version
    model, state = load_checkpoint(out), torch.load(tiny_pth, weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if "relative" not in k)
    shown = cli("show", out)
    assert shown.exit_code == 0, shown.stderr
    for needle in ("taxonomy", "tiny", "reference:best_model.pth", card.source_sha256,
                   f"{sum(p.numel() for p in model.parameters()):,}"):
        assert needle in shown.stdout, needle
    again = cli("import", tiny_pth, "--task", "taxonomy", "--size", "tiny", "--out", out)
    one_line_error(again, "exists; add --force")


def _crafted_pickle(folder: Path) -> tuple[Path, Path]:
    marker = folder / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = folder / "evil.pth"
    path.write_bytes(pickle.dumps({"out.4.weight": Evil()}, protocol=2))
    return path, marker


def test_bad_reference_files_get_one_line_and_write_nothing(tiny_pth: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.safetensors"
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_pth.read_bytes()[:5000])
    wrong_shapes = tmp_path / "shapes.pth"
    state = torch.load(tiny_pth, weights_only=True)
    state["visual_mapper.1.weight"] = torch.zeros(3)
    torch.save(state, wrong_shapes)
    not_tensor = tmp_path / "strings.pth"
    torch.save({"out.4.weight": torch.zeros(7, 32), "note": "trained on a laptop"}, not_tensor)
    evil, marker = _crafted_pickle(tmp_path)
    cases = [
        (tmp_path / "missing.pth", "taxonomy", "does not exist"),
        (truncated, "taxonomy", "cannot read as a PyTorch state dict"),
        (tiny_pth, "permafrost", "its heads have 7 output(s), a permafrost network has 1: a taxonomy network, "
                                 "use --task taxonomy"),
        (wrong_shapes, "taxonomy", "1 shape mismatch: visual_mapper.1.weight (file [3], model [128])"),
        (not_tensor, "taxonomy", "entry 'note' is a str, not a tensor"),
        (evil, "taxonomy", "cannot read as a PyTorch state dict (UnpicklingError"),
    ]
    for path, task, needle in cases:
        result = cli("import", "--from", "reference", path, "--task", task, "--size", "tiny", "--out", out)
        one_line_error(result, needle, str(path))
        assert not out.exists() and not list(tmp_path.glob("x.safetensors*")), path
    assert not marker.exists(), "the crafted pickle ran code"
    usage = cli("import", "--from", "satlas", tiny_pth, "--task", "taxonomy", "--out", out)
    assert usage.exit_code == 2 and "is not one of 'reference'" in usage.stderr


def test_export_refuses_what_the_reference_cannot_load(tmp_path: Path) -> None:
    tiny = save_checkpoint(build_model(MisoNetConfig.preset("tiny", "permafrost")), tmp_path / "tiny.safetensors")
    out = tmp_path / "ref.pth"
    one_line_error(cli("export", "--to", "reference", tiny, "--out", out),
                   "cannot export for the reference code: a 'tiny' network", "builds only the 'reference' size")
    assert not out.exists()
    pth = tmp_path / "best_model.pth"
    torch.save(build_model(MisoNetConfig.preset("tiny", "permafrost")).state_dict(), pth)
    one_line_error(cli("export", pth, "--out", out), "miso-mapper checkpoint import --from reference")
    one_line_error(cli("export", tiny, "--out", tmp_path / "ref.safetensors"), "expected a .pth or .pt file name")
    assert not out.exists()


def test_input_standardization_cannot_be_exported() -> None:
    from miso_mapper.model.reference_io import reference_export_problem

    cfg = MisoNetConfig.preset("reference", "taxonomy")
    assert reference_export_problem(cfg) == ""
    assert "buffers the reference network lacks" in reference_export_problem(
        cfg.model_copy(update={"input_standardization": True}))
    assert "differs in rel_coord_order" in reference_export_problem(cfg.model_copy(update={"rel_coord_order": "xy"}))


def test_pth_as_model_checkpoint_names_the_import_command(tiny_pth: Path) -> None:
    from miso_mapper.model.card import check_checkpoint

    with pytest.raises(MisoError) as err:
        check_checkpoint(tiny_pth, "taxonomy", "tiny")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"miso-mapper checkpoint import --from reference {tiny_pth} --task <permafrost|taxonomy>" in msg


@pytest.fixture(scope="module")
def reference_round_trip(tmp_path_factory) -> dict[str, Path]:
    """A reference-size (212 M parameters) permafrost .pth with the manifest's names and shapes, imported,
    exported back and imported again."""
    if not MANIFEST.is_file():
        pytest.skip(f"reference state-dict manifest not found at {MANIFEST}")
    from miso_mapper.model.commands import export_command, import_command

    folder = tmp_path_factory.mktemp("reference")
    entry = json.loads(MANIFEST.read_text())["permafrost"]
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randint(0, 9, s, generator=gen) if k.endswith("relative_position_index")
             else torch.randn(s, generator=gen) * 0.02 for k, s in entry["state_dict"].items()}
    torch.save(state, folder / "best_model.pth")
    del state
    first = import_command("reference", folder / "best_model.pth", "permafrost", folder / "a.safetensors")
    (folder / "best_model.pth").unlink()
    exported, left_out = export_command("reference", first, folder / "back.pth")
    assert left_out == []  # an imported reference network has no threshold or class bias to lose
    second = import_command("reference", exported, "permafrost", folder / "b.safetensors")
    return {"entry": entry, "first": first, "exported": exported, "second": second}


def test_reference_size_export_has_the_reference_names_shapes_and_order(reference_round_trip) -> None:
    from safetensors import safe_open

    entry = reference_round_trip["entry"]
    back = torch.load(reference_round_trip["exported"], weights_only=True, mmap=True)
    assert list(back) == list(entry["state_dict"])  # names and order the reference's load_state_dict sees
    assert {k: list(v.shape) for k, v in back.items()} == entry["state_dict"]
    with safe_open(str(reference_round_trip["first"]), "pt") as a, \
            safe_open(str(reference_round_trip["second"]), "pt") as b:
        assert set(a.keys()) == set(b.keys()) == set(back)  # noqa: SIM118
        for k in a.keys():  # noqa: SIM118 - the re-import holds exactly the first import's tensors
            assert torch.equal(a.get_tensor(k), b.get_tensor(k)), k
    card = read_model_card(reference_round_trip["second"])
    assert card.source == "reference:back.pth" and card.config == MisoNetConfig.preset("reference", "permafrost")


@pytest.mark.slow
def test_reference_size_import_maps_and_the_export_maps_identically(reference_round_trip) -> None:
    """Both imports through the MISO predictor (4 windows of 250 px each): same maps. Minutes on 2 cores."""
    from miso_mapper.inference.miso import MisoPredictor
    from miso_mapper.inference.settings import PredictorConfig
    from miso_mapper.inference.synthetic import synthetic_inputs

    a, b = load_checkpoint(reference_round_trip["first"]), load_checkpoint(reference_round_trip["second"])
    assert sum(p.numel() for p in a.parameters()) == reference_round_trip["entry"]["num_params"]
    chunk = synthetic_inputs(260, 260, seed=1)
    settings = PredictorConfig(window=250, stride=10, support=10, ramp=0, query_spacing=5)
    interior = (slice(125, 135), slice(125, 135))
    maps_a = MisoPredictor(a, None, settings).predict_chunk(chunk, interior)["permafrost_probability"].values
    maps_b = MisoPredictor(b, None, settings).predict_chunk(chunk, interior)["permafrost_probability"].values
    assert np.isfinite(maps_a).all() and maps_a.std() > 0
    np.testing.assert_array_equal(maps_a, maps_b)


def test_validate_checks_train_init_relative_to_the_workflow(tiny_pth: Path, tmp_path: Path) -> None:
    import yaml

    from miso_mapper.checks import init_problems
    from miso_mapper.config import load_workflow

    raw = yaml.safe_load((Path(__file__).parents[1] / "workflows/demo.yaml").read_text())
    raw.setdefault("train", {})["init"] = {"satlas": "weights/sentinel2_swinb_si_ms.pth"}
    raw["train"]["size"] = "tiny"
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights/sentinel2_swinb_si_ms.pth").write_bytes(tiny_pth.read_bytes())
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(raw))
    wf = load_workflow(tmp_path / "wf.yaml")
    assert wf.train.init.satlas == tmp_path / "weights/sentinel2_swinb_si_ms.pth"
    [problem] = init_problems(wf)
    assert problem.field == "train.init.satlas" and "needs the reference-size satellite encoder" in problem.message
    raw["train"]["size"] = "reference"
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(raw))
    [problem] = init_problems(load_workflow(tmp_path / "wf.yaml"))
    assert "no keys start with 'backbone.backbone.'" in problem.message  # a MISO .pth is not a Satlas file
    raw["train"]["init"] = {"satlas": "a.pth", "checkpoint": "b.safetensors"}
    (tmp_path / "wf.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(MisoError, match="give satlas or checkpoint, not both"):
        load_workflow(tmp_path / "wf.yaml")
