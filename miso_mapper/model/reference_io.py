"""Weights in and out of the reference code: the SatlasPretrain start, and reference ``.pth`` import/export.

* :func:`load_satlas_backbone` initialises the Sentinel-2 Swin from SatlasPretrain's
  ``sentinel2_swinb_si_ms.pth`` the way the reference does (``MISO/models/build.py``, ``load_Satlas_weight``):
  it keeps the keys under ``backbone.backbone.`` (torchvision ``swin_v2_b`` names), drops the patch
  embedding ``features.0.0.{weight,bias}`` (the MISO network keeps its own randomly initialised 9-band
  convolution) and ignores everything else in the file (FPN ``intermediates.*``, task ``heads.*``).
  The reference loads non-strictly; here every backbone weight must be present with its shape (buffers
  that follow from the architecture may be absent and are always recomputed), so a wrong or damaged file
  is an error instead of a silently half-initialised encoder.
* :func:`import_reference` turns a state dict saved by the reference training (``best_model.pth``) into our
  ``.safetensors`` checkpoint with a filled-in model card; :func:`export_reference` writes one of ours back
  as a ``.pth`` that the reference's ``load_test_model`` loads strictly (same names, shapes, order).

Pickled files are only ever read with ``torch.load(weights_only=True)``: tensors and plain containers.
"""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor

from miso_mapper.errors import MisoError
from miso_mapper.filekind import file_sha256
from miso_mapper.model.card import PRESETS, InitRecord, ModelCard, architecture
from miso_mapper.model.checkpoint import (
    _compare,
    _existing,
    _torch_load,
    _unwrap_state_dict,
    load_checkpoint,
    load_reference_checkpoint,
    reset_derived_buffers,
    save_checkpoint,
)
from miso_mapper.model.config import TASK_OUT_DIM, MisoNetConfig, PresetName, Task
from miso_mapper.model.network import MisoNet
from miso_mapper.model.satlas_file import SATLAS_PREFIX, satlas_architecture_problem

#: Keys of the Satlas backbone that the reference does not load: the patch embedding of Satlas' band set.
SATLAS_SKIPPED = ("features.0.0.weight", "features.0.0.bias")
#: Buffers recomputed from the architecture, so a file may lack them.
_DERIVED = ("relative_position_index", "relative_coords_table")
_SHOW = 5


# --------------------------------------------------------------------------------------- SatlasPretrain


def read_satlas_backbone(path: str | os.PathLike[str], config: MisoNetConfig) -> tuple[dict[str, Tensor], InitRecord]:
    """The backbone weights of a SatlasPretrain file that the satellite encoder of ``config`` takes, checked.

    Returns the state dict (torchvision names, patch embedding removed, memory-mapped where possible) and the
    :class:`InitRecord` for the model card. Raises :class:`MisoError` (one line naming the file) for a missing,
    truncated or foreign file, a file without ``backbone.backbone.`` keys, a network that is not the
    reference size, or backbone weights with other names or shapes. Builds the encoder on the meta device
    only, so this is cheap enough to run before any training data is read.
    """
    path = _existing(path)
    problem = satlas_architecture_problem(config)
    if problem:
        raise MisoError(f"{path}: {problem}")
    raw = _torch_load(path)
    if not any(str(k).startswith(SATLAS_PREFIX) for k in raw):
        raw = _unwrap_state_dict(raw, path)
    state = {k[len(SATLAS_PREFIX):]: v for k, v in raw.items() if str(k).startswith(SATLAS_PREFIX)}
    if not state:
        raise MisoError(f"{path}: no keys start with {SATLAS_PREFIX!r}; not a SatlasPretrain Swin checkpoint "
                        f"(first keys: {', '.join(str(k) for k in list(raw)[:_SHOW])})")
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise MisoError(f"{path}: entry {SATLAS_PREFIX}{bad[0]} is not a tensor; not a SatlasPretrain checkpoint")
    skipped = [k for k in SATLAS_SKIPPED if k in state]
    for k in skipped:
        del state[k]
    with torch.device("meta"):
        backbone = MisoNet(config).sat_encoder.feature_extractor
    expected = {k: tuple(v.shape) for k, v in backbone.state_dict().items() if k not in SATLAS_SKIPPED}
    optional = {k for k in expected if k.endswith(_DERIVED)}
    problems = _compare(expected, state, optional=optional)
    if problems:
        raise MisoError(f"{path}: SatlasPretrain backbone does not fit the satellite encoder: {problems}")
    for k, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise MisoError(f"{path}: SatlasPretrain weights contain NaN or infinite values (first: {k})")
    record = InitRecord(kind="satlas", file=path.name, sha256=file_sha256(path), loaded=len(state),
                        skipped=len(skipped) + sum(1 for k in raw if not str(k).startswith(SATLAS_PREFIX)))
    return state, record


def load_satlas_backbone(model: MisoNet, path: str | os.PathLike[str]) -> InitRecord:
    """Initialise the Sentinel-2 Swin of ``model`` (reference size) from SatlasPretrain
    ``sentinel2_swinb_si_ms.pth``, as the reference does (see the module docstring); in place.

    Returns the :class:`InitRecord`: file name, sha256, backbone tensors loaded, tensors skipped (the patch
    embedding and every non-backbone entry).
    """
    state, record = read_satlas_backbone(path, model.config)
    backbone = model.sat_encoder.feature_extractor
    with torch.no_grad():
        own = backbone.state_dict()
        for k, v in state.items():
            own[k].copy_(v)
    reset_derived_buffers(backbone)
    return record


# ------------------------------------------------------------------------------ our own checkpoint as start


def load_init_checkpoint(model: MisoNet, path: str | os.PathLike[str]) -> InitRecord:
    """Copy the weights of one of our checkpoints with the same architecture into ``model``, in place.

    The input-standardisation buffers are not copied (the new run fits its own on its training chips).
    """
    path = _existing(path)
    start = load_checkpoint(path)
    if architecture(start.config) != architecture(model.config):
        raise MisoError(f"{path}: a {start.config.task} network of another architecture than the one trained "
                        f"(train.init.checkpoint needs the same task and size)")
    state = {k: v for k, v in start.state_dict().items() if k not in ("input_mean", "input_std")}
    with torch.no_grad():
        own = model.state_dict()
        for k, v in state.items():
            own[k].copy_(v)
    return InitRecord(kind="checkpoint", file=path.name, sha256=file_sha256(path), loaded=len(state), skipped=0)


# ------------------------------------------------------------------------------------ reference .pth files


def import_reference(path: str | os.PathLike[str], task: Task, out: str | os.PathLike[str],
                     size: PresetName = "reference") -> Path:
    """Read a state dict saved by the reference code and write it as our checkpoint ``out``.

    The card records the network config, class names, ``source`` ``reference:<file name>`` with the file's
    sha256, the time and the package version. Nothing is written when the file does not load strictly.
    ``size`` other than ``reference`` is for files of the same layout at a preset's size (tests).
    """
    path, out = _existing(path), _checked_out(out, ".safetensors")
    cfg = MisoNetConfig.preset(size, task)
    head = _torch_head_width(path)
    if head is not None and head != cfg.out_dim:
        other = next((t for t, d in TASK_OUT_DIM.items() if d == head), None)
        hint = f": a {other} network, use --task {other}" if other else ""
        raise MisoError(f"{path}: its heads have {head} output(s), a {task} network has {cfg.out_dim}{hint}")
    model = load_reference_checkpoint(path, task, config=cfg)
    card = ModelCard(config=cfg, source=f"reference:{path.name}", source_sha256=file_sha256(path))
    return save_checkpoint(model, out, card)


def export_reference(checkpoint: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write our checkpoint as the state dict the reference code's model loads strictly (``torch.save``).

    Refuses networks the reference cannot build: other sizes, ``rel_coord_order: xy``, input standardisation.
    """
    out = _checked_out(out, ".pth", ".pt")
    model = load_checkpoint(checkpoint)
    problem = reference_export_problem(model.config)
    if problem:
        raise MisoError(f"{checkpoint}: cannot export for the reference code: {problem}")
    state = OrderedDict((k, v.detach().to("cpu").contiguous()) for k, v in model.state_dict().items())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def reference_export_problem(config: MisoNetConfig) -> str:
    """'' when the reference code builds ``config``'s network, else what differs (one line)."""
    if config.input_standardization:
        return ("the network standardises its input with buffers the reference network lacks "
                "(trained with train.input_standardization: true)")
    ours, ref = architecture(config), architecture(MisoNetConfig.preset("reference", config.task))
    if ours == ref:
        return ""
    preset = next((p for p in PRESETS if architecture(MisoNetConfig.preset(p, config.task)) == ours), None)
    what = f"a {preset!r} network" if preset else "a network of no preset size"
    differ = ", ".join(k for k in ref if ours.get(k) != ref[k])
    return f"{what} (differs in {differ}); the reference code builds only the 'reference' size"


def _torch_head_width(path: Path) -> int | None:
    """Output width of the visual head in a reference state dict (``out.4.weight`` rows), if present."""
    state = _unwrap_state_dict(_torch_load(path), path)
    w = state.get("out.4.weight")
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def _checked_out(out: str | os.PathLike[str], *suffixes: str) -> Path:
    out = Path(out)
    if out.suffix.lower() not in suffixes:
        raise MisoError(f"--out {out}: expected a {' or '.join(suffixes)} file name")
    if out.is_dir():
        raise MisoError(f"--out {out} is a folder")
    return out
