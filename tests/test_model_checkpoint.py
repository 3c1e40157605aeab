"""Checkpoints: reference state dicts load strictly, our format round-trips, bad files fail clearly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from miso_mapper.errors import MisoError
from miso_mapper.model import (
    MisoNetConfig,
    ModelCard,
    build_model,
    load_checkpoint,
    load_reference_checkpoint,
    read_model_card,
    save_checkpoint,
)

MANIFEST = Path(__file__).parents[2] / "shared/reference/miso_state_dict_keys.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip(f"reference state-dict manifest not found at {MANIFEST} (it lives outside the repository)")
    return json.loads(MANIFEST.read_text())


@pytest.mark.parametrize("task,wrapping", [("permafrost", "bare"), ("taxonomy", "ddp")])
def test_reference_state_dict_loads_strictly(manifest: dict, tmp_path: Path, task: str, wrapping: str) -> None:
    entry = manifest[task]
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in entry["state_dict"].items():
        if name.endswith("relative_position_index"):
            state[name] = torch.randint(0, 15, shape, generator=gen)
        else:
            state[name] = torch.randn(shape, generator=gen)
    if wrapping == "ddp":  # saved from a DistributedDataParallel model, wrapped in a dict
        saved = {"state_dict": {"module." + k: v for k, v in state.items()}}
    else:
        saved = state
    path = tmp_path / "best_model.pth"
    torch.save(saved, path)
    del saved

    model = load_reference_checkpoint(path, task)
    path.unlink()
    assert not model.training
    assert model.config.out_dim == entry["out_dim"]
    loaded = model.state_dict()
    assert list(loaded) == list(entry["state_dict"])  # same names, same order
    assert {k: list(v.shape) for k, v in loaded.items()} == entry["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params"]
    for name in ("sat_encoder.feature_extractor.features.5.7.attn.qkv.weight",
                 "cov_encoder.feature_extractor.layers.2.blocks.3.attn.relative_position_bias_table",
                 "geo_encoder.layers.2.layer_norm.weight", "out.4.bias", "geo_out.4.weight"):
        assert torch.equal(loaded[name], state[name]), name
    assert model.card is not None and model.card.config.task == task
    # buffers that follow from the architecture (random in this file) are recomputed, not trusted
    mask = loaded["cov_encoder.feature_extractor.layers.0.blocks.1.attn_mask"]
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask == 0).float().mean() > 0.5  # most token pairs share a region
    rpi = loaded["cov_encoder.feature_extractor.layers.3.blocks.0.attn.relative_position_index"]
    assert rpi[0, 0] == 112 and rpi.min() == 0 and rpi.max() == 224  # centre of the 15x15 table is 112
    v2 = loaded["sat_encoder.feature_extractor.features.1.0.attn.relative_position_index"]
    assert torch.equal(v2, rpi.flatten())
    table = loaded["sat_encoder.feature_extractor.features.3.1.attn.relative_coords_table"]
    # torchvision's log-spaced table: sign(d) log2(8 |d| / 7 + 1) / 3, largest at |d| = 7 (log2(9) / 3)
    assert float(table.abs().max()) == pytest.approx(math.log2(9) / 3) and float(table[0, 7, 7].abs().max()) == 0
    # the unsaved location-frequency buffer was rebuilt, not left uninitialised
    freqs = model.geo_encoder.pos_encoder.freqs
    assert float(freqs[0]) == pytest.approx(2000.0) and float(freqs[-1]) == pytest.approx(0.5)


def test_reference_loader_reports_wrong_keys(tmp_path: Path) -> None:
    cfg = MisoNetConfig.preset("tiny", "permafrost")
    state = build_model(cfg).state_dict()
    state["out.9.weight"] = state.pop("out.4.weight")
    state["geo_out.0.bias"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(MisoError) as err:
        load_reference_checkpoint(path, "permafrost", config=cfg)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 missing: out.4.weight" in msg
    assert "1 unexpected: out.9.weight" in msg
    assert "1 shape mismatch: geo_out.0.bias (file [3]" in msg


def test_reference_loader_rejects_garbage_and_absent_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(MisoError, match="junk.pth"):
        load_reference_checkpoint(junk, "permafrost")
    with pytest.raises(MisoError, match="does not exist"):
        load_reference_checkpoint(tmp_path / "nope.pth", "taxonomy")
    listy = tmp_path / "list.pth"
    torch.save([1, 2, 3], listy)
    with pytest.raises(MisoError, match="expected a state dict"):
        load_reference_checkpoint(listy, "permafrost")


def test_save_load_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    card = ModelCard(training_data_hash="sha256:abc", metrics={"accuracy": 0.61}, normalisation="reference")
    path = save_checkpoint(model, tmp_path / "ck" / "tax.safetensors", card)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))

    back = load_checkpoint(path)
    assert not back.training
    assert back.config == model.config
    images, pix, geo = torch.randn(2, 19, 64, 64), torch.rand(2, 9, 2) * 2 - 1, torch.rand(2, 9, 2) * 2 - 1
    with torch.no_grad():
        a, b = model(images, pix, geo), back(images, pix, geo)
    for k in a:
        assert torch.equal(a[k], b[k]), k

    meta = read_model_card(path)
    assert meta == back.card
    assert meta.training_data_hash == "sha256:abc" and meta.metrics == {"accuracy": 0.61}
    assert meta.class_names[2] == "Gelisols" and len(meta.class_names) == 7
    assert meta.sat_bands[:3] == ("red", "green", "blue") and len(meta.covariates) == 10


def test_calibration_and_conformal_records_round_trip_and_the_loaded_network_applies_them(tmp_path: Path) -> None:
    from miso_mapper.model.card import CalibrationRecord, ConformalRecord
    from miso_mapper.model.commands import describe

    torch.manual_seed(0)
    model = build_model(MisoNetConfig.preset("tiny", "taxonomy")).eval()
    bias = torch.linspace(-1, 1, 7)
    model.logit_bias, model.temperature = bias, 1.7  # the card's records come from the model when not given
    conformal = ConformalRecord(coverage=0.9, qhat=0.83, n=41)
    path = save_checkpoint(model, tmp_path / "tax.safetensors", ModelCard(conformal=conformal))
    card = read_model_card(path)
    assert card.calibration == CalibrationRecord(method="temperature", temperature=1.7)
    assert card.conformal == conformal and card.conformal.score == "lac"
    back = load_checkpoint(path)
    assert back.temperature == 1.7 and back.card.conformal.qhat == 0.83
    shown = dict(describe(path))
    assert shown["calibration"] == "temperature 1.7 (0 validation points)"
    assert shown["conformal sets"] == "coverage 0.9, qhat 0.83 (lac, 41 points)"
    logits = torch.randn(3, 7)
    # bias first, then the temperature: the order the temperature was fitted in
    assert torch.allclose(back.predict_proba(logits), ((logits + bias) / 1.7).softmax(-1))
    none = save_checkpoint(build_model(MisoNetConfig.preset("tiny", "permafrost")), tmp_path / "pf.safetensors",
                           ModelCard(calibration=CalibrationRecord(method="none")))
    assert load_checkpoint(none).temperature is None
    with pytest.raises(ValidationError):
        ConformalRecord(coverage=1.0, qhat=0.5, n=3)


def test_truncated_safetensors_raises_miso_error(tmp_path: Path) -> None:
    model = build_model(MisoNetConfig.preset("tiny", "permafrost"))
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MisoError, match="m.safetensors"):
        load_checkpoint(path)
    path.write_bytes(data[:5])
    with pytest.raises(MisoError, match="m.safetensors"):
        load_checkpoint(path)


def test_safetensors_with_wrong_key_raises_miso_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cfg = MisoNetConfig.preset("tiny", "permafrost")
    model = build_model(cfg)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    state["visual_mapper.1.gamma"] = state.pop("visual_mapper.1.weight")
    card = ModelCard(config=cfg).model_dump_json()
    path = tmp_path / "renamed.safetensors"
    save_file(state, str(path), metadata={"miso_model_card": card})
    with pytest.raises(MisoError) as err:
        load_checkpoint(path)
    assert "renamed.safetensors" in str(err.value)
    assert "missing: visual_mapper.1.weight" in str(err.value)
    assert "unexpected: visual_mapper.1.gamma" in str(err.value)
    # a safetensors file without our card is refused too
    bare = tmp_path / "bare.safetensors"
    save_file({"x": torch.zeros(2)}, str(bare))
    with pytest.raises(MisoError, match="no MISO model card"):
        load_checkpoint(bare)


# ------------------------------------------------------------------------------------------- SatlasPretrain


@pytest.fixture(scope="module")
def satlas_file(tmp_path_factory) -> Path:
    """A file in the layout of SatlasPretrain's sentinel2_swinb_si_ms.pth: torchvision swin_v2_b under
    ``backbone.backbone.`` with a 9-band patch embedding, random tensors, plus FPN and head entries."""
    from torchvision.models import swin_v2_b

    gen = torch.Generator().manual_seed(7)
    with torch.device("meta"):
        donor = swin_v2_b().state_dict()
    state = {}
    for k, v in donor.items():
        shape = (128, 9, 4, 4) if k == "features.0.0.weight" else v.shape
        t = torch.randint(0, 9, shape, generator=gen) if v.dtype == torch.int64 else torch.randn(shape, generator=gen)
        state["backbone.backbone." + k] = t
    state["intermediates.0.fpn.inner_blocks.0.0.weight"] = torch.randn(128, 128, 1, 1, generator=gen)
    state["intermediates.0.fpn.layer_blocks.3.0.bias"] = torch.randn(128, generator=gen)
    state["heads.0.layers.0.0.weight"] = torch.randn(2, 128, 3, 3, generator=gen)
    path = tmp_path_factory.mktemp("satlas") / "sentinel2_swinb_si_ms.pth"
    torch.save(state, path)
    return path


def reference_chips(n: int = 2):
    """Chips for the reference network (250 px windows resized to 256, no jitter margin)."""
    import numpy as np

    from miso_mapper.train.chips import ChipGeometry, ChipSet

    g = ChipGeometry(250, 256, 0)
    s = g.stored_size
    images = np.random.default_rng(0).uniform(0, 0.1, (n, 19, s, s)).astype(np.float16)
    chips = ChipSet(np.array([f"P{i}" for i in range(n)]), np.full(n, 260_000.0), np.full(n, 1_660_000.0), images,
                    np.zeros((n, 19), np.float32), np.ones(n, bool), np.ones(n, np.float32), g, "test")
    return chips, (np.arange(n) % 2).astype(np.float32)


def test_satlas_start_initialises_training_like_the_reference(satlas_file: Path) -> None:
    import hashlib

    import numpy as np

    from miso_mapper.config import TrainConfig
    from miso_mapper.train.init import check_init
    from miso_mapper.train.loop import build_state, prepare

    cfg = TrainConfig(init={"satlas": satlas_file}, num_threads=2, seed=1)
    record = check_init(cfg.init, "reference", ["permafrost"])
    assert record is not None and record.kind == "satlas" and record.file == "sentinel2_swinb_si_ms.pth"
    assert record.sha256 == hashlib.sha256(satlas_file.read_bytes()).hexdigest()
    assert record.loaded == 447 and record.skipped == 2 + 3  # patch embedding (2) + FPN/heads (3)

    chips, labels = reference_chips()
    setup = prepare(chips, labels, np.array([0]), np.array([1]), "permafrost", cfg, "reference")
    model = build_state(setup).model
    file = torch.load(satlas_file, weights_only=True)
    sat = model.sat_encoder.feature_extractor.state_dict()
    for k, v in sat.items():
        if k.startswith("features.0.0."):  # the 9-band patch embedding stays the network's own
            assert not torch.equal(v, file["backbone.backbone." + k]), k
        elif k.endswith(("relative_position_index", "relative_coords_table")):
            assert not torch.equal(v, file["backbone.backbone." + k]) or v.numel() == 1, k  # recomputed
        else:
            assert torch.equal(v, file["backbone.backbone." + k]), k
    assert sat["features.0.0.weight"].shape == (128, 9, 4, 4)
    # the covariate encoder is untouched (random, from the seed)
    assert not any(torch.equal(v, t) for v in model.cov_encoder.state_dict().values() for t in file.values()
                   if v.shape == t.shape and v.ndim == 2)


def test_satlas_start_refuses_bad_files_in_one_line(satlas_file: Path, tmp_path: Path) -> None:
    from miso_mapper.config import TrainConfig
    from miso_mapper.train.init import check_init

    def error(path: Path, size: str = "reference") -> str:
        with pytest.raises(MisoError) as err:
            check_init(TrainConfig(init={"satlas": path}).init, size, ["permafrost"])
        msg = str(err.value)
        assert msg.startswith("train.init.satlas: ") and "\n" not in msg, msg
        return msg

    assert "does not exist" in error(tmp_path / "nope.pth")
    truncated = tmp_path / "truncated.pth"
    with open(satlas_file, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    assert "cannot read as a PyTorch state dict" in error(truncated)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2)}, other)
    assert "not a SatlasPretrain Swin checkpoint (first keys: conv1.weight, fc.bias)" in error(other)
    assert "needs the reference-size satellite encoder" in error(satlas_file, "tiny")
    swin_t = tmp_path / "swin_t.pth"
    torch.save({"backbone.backbone.features.1.0.attn.qkv.weight": torch.zeros(288, 96)}, swin_t)
    msg = error(swin_t)
    assert "shape mismatch: features.1.0.attn.qkv.weight (file [288, 96], model [384, 128])" in msg
    assert "missing:" in msg


def test_satlas_file_check_without_torch_reads_key_names_only(satlas_file: Path, tmp_path: Path) -> None:
    from miso_mapper.model.satlas_file import check_satlas_file

    ref, tiny = MisoNetConfig.preset("reference"), MisoNetConfig.preset("tiny")
    assert check_satlas_file(satlas_file, ref) == 445  # every backbone.backbone.features.* entry
    truncated = tmp_path / "t.pth"
    with open(satlas_file, "rb") as f:
        truncated.write_bytes(f.read(4096))
    with pytest.raises(MisoError, match="truncated or damaged zip"):
        check_satlas_file(truncated, ref)
    with pytest.raises(MisoError, match="needs the reference-size satellite encoder"):
        check_satlas_file(satlas_file, tiny)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, other)
    with pytest.raises(MisoError, match="not a SatlasPretrain Swin checkpoint"):
        check_satlas_file(other, ref)
    legacy = tmp_path / "legacy.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(MisoError, match="a Python pickle"):
        check_satlas_file(legacy, ref)
