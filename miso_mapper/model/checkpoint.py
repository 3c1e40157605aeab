"""Checkpoints: our own format (safetensors + JSON model card) and the strict reference state-dict loader.

Our format is one ``.safetensors`` file: the full state dict (parameters and persistent buffers, float32
or as saved) and, in the safetensors header metadata under ``miso_model_card``, the JSON
:class:`ModelCard` (network config, input band order, normalisation, class names, training-data hash,
metrics). One file means one hash for provenance. :func:`read_model_card` reads the card without the weights
and :func:`check_checkpoint` checks task and size from it (both torch-free, in :mod:`miso_mapper.model.card`).

Every failure a user can cause (missing, truncated or foreign file, wrong keys or shapes) raises
:class:`miso_mapper.errors.MisoError` naming the file and the first offending keys with counts.
Our own checkpoints are never pickles: a ``.pth`` given as one is refused by its first bytes. Reference and
SatlasPretrain weights (pickles) are only read with ``torch.load(weights_only=True)``; importing, exporting and
the SatlasPretrain start live in :mod:`miso_mapper.model.reference_io`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

from miso_mapper.errors import MisoError
from miso_mapper.filekind import file_sha256
from miso_mapper.model.aoa import AreaOfApplicability, aoa_path, load_aoa, save_aoa
from miso_mapper.model.card import (
    CARD_KEY,
    FORMAT_VERSION,
    AoaRecord,
    CalibrationRecord,
    ModelCard,
    check_checkpoint,
    read_model_card,
)
from miso_mapper.model.config import MisoNetConfig, Task
from miso_mapper.model.location import GridCellEncoding
from miso_mapper.model.network import MisoNet
from miso_mapper.model.swin_cov import SwinBlock, WindowAttention

log = logging.getLogger(__name__)

# the card's names stay importable from here, where they lived before model.card
__all__ = ["CARD_KEY", "FORMAT_VERSION", "ModelCard", "check_checkpoint", "load_checkpoint",
           "load_reference_checkpoint", "read_model_card", "reset_derived_buffers",
           "save_checkpoint"]

_SHOW = 5  # keys listed per category in error messages


def save_checkpoint(model: MisoNet, path: str | os.PathLike[str], card: ModelCard | None = None,
                    aoa: AreaOfApplicability | None = None) -> Path:
    """Write ``model`` and its card to ``path`` (a ``.safetensors`` file), atomically, and ``aoa`` (when given)
    as its sidecar ``<stem>.aoa.safetensors``, recorded in the card (file, sha256, threshold, method).

    Both files are written under temporary names first, so a failure leaves neither; a sidecar of an earlier
    checkpoint at ``path`` is removed when ``aoa`` is None. The card's ``config`` and (if empty)
    ``class_names``, ``created`` and ``software_version`` are set from the model and the running package.
    Returns the path written.
    """
    from miso_mapper import __version__

    path = Path(path)
    card = (card or ModelCard()).model_copy(deep=True)
    card.config = model.config
    card.class_names = card.class_names or model.config.class_names
    if card.class_bias is None and model.logit_bias is not None:
        card.class_bias = tuple(float(v) for v in model.logit_bias)
    if card.calibration is None and model.temperature is not None:
        card.calibration = CalibrationRecord(method="temperature", temperature=float(model.temperature))
    card.created = card.created or datetime.now(UTC).isoformat(timespec="seconds")
    card.software_version = card.software_version or __version__
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    side = aoa_path(path)
    temps = []
    try:
        if aoa is not None:
            temps.append(_temp_beside(side))
            save_aoa(aoa, temps[-1])
            card.aoa = AoaRecord(file=side.name, sha256=file_sha256(temps[-1]), threshold=aoa.threshold,
                                 method=aoa.method)
        else:
            card.aoa = None
        temps.append(_temp_beside(path))
        save_file(tensors, temps[-1], metadata={"format": "pt", CARD_KEY: card.model_dump_json()})
        # sidecar first: a crash in between leaves a sidecar whose hash the old card does not match
        if aoa is not None:
            os.replace(temps[0], side)
        else:
            side.unlink(missing_ok=True)
        os.replace(temps[-1], path)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _temp_beside(path: Path) -> str:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> MisoNet:
    """Load a checkpoint written by :func:`save_checkpoint`; the model is in eval mode on ``device`` and its
    card is available as ``model.card``, its area of applicability (sidecar, on CPU) as ``model.aoa`` (None
    without sidecar)."""
    path = _existing(path)
    card = read_model_card(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MisoError(f"{path}: cannot read weights ({exc})") from None
    model = _load_into_new_model(card.config, state, path)
    model.card = card
    if card.class_bias is not None:
        if len(card.class_bias) != card.config.out_dim:
            raise MisoError(f"{path}: model card class_bias has {len(card.class_bias)} values, the head "
                            f"{card.config.out_dim}")
        model.logit_bias = torch.tensor(card.class_bias, dtype=torch.float32)
    if card.calibration is not None and card.calibration.method == "temperature":
        model.temperature = card.calibration.temperature
    model.aoa = _sidecar(path, card)
    return model.to(device).eval()


def _sidecar(path: Path, card: ModelCard) -> AreaOfApplicability | None:
    """The checkpoint's area of applicability: its sidecar when present (checked against the card's hash and
    the network's embedding width), else None (a card that names a missing sidecar is logged)."""
    side = aoa_path(path)
    if not side.is_file():
        if card.aoa is not None:
            log.warning("%s: its area-of-applicability file %s is missing; the AOA layers will be no data",
                        path, side.name)
        return None
    if card.aoa is not None and file_sha256(side) != card.aoa.sha256:
        raise MisoError(f"{side}: not the area-of-applicability file of {path.name} (sha256 differs from its card)")
    return load_aoa(side, dim=card.config.emb_dim)


def load_reference_checkpoint(path: str | os.PathLike[str], task: Task,
                              config: MisoNetConfig | None = None,
                              device: str | torch.device = "cpu") -> MisoNet:
    """Load a state dict saved by the reference code (``torch.save(model.state_dict())``, e.g. its
    ``best_model.pth``) into the reference-size network, strictly; eval mode.

    Accepts a bare state dict or one wrapped as ``{'model': ...}`` / ``{'state_dict': ...}``, with or without
    a ``module.`` (DistributedDataParallel) prefix. ``config`` overrides the architecture (default: the
    ``reference`` preset of ``task``).
    """
    path = _existing(path)
    cfg = config or MisoNetConfig.preset("reference", task)
    if cfg.task != task:
        raise MisoError(f"config is for task {cfg.task!r} but {task!r} was asked for")
    state = _unwrap_state_dict(_torch_load(path), path)
    model = _load_into_new_model(cfg, state, path)
    from miso_mapper.model.config import TASK_CLASS_NAMES

    model.card = ModelCard(config=cfg, class_names=TASK_CLASS_NAMES[task], source=f"reference:{path.name}")
    return model.to(device).eval()


# --------------------------------------------------------------------------------------------- helpers


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise MisoError(f"checkpoint {p} does not exist or is not a file")
    return p


def _torch_load(path: Path) -> Mapping[str, Any]:
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - e.g. legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle is the file's fault
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MisoError(f"{path}: cannot read as a PyTorch state dict ({type(exc).__name__}: {msg})") from None
    if not isinstance(obj, Mapping):
        raise MisoError(f"{path}: expected a state dict (a mapping), found {type(obj).__name__}")
    return obj


def _unwrap_state_dict(obj: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    for key in ("model", "state_dict", "model_state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            raise MisoError(f"{path}: entry {k!r} is a {type(v).__name__}, not a tensor; not a state dict")
        state[k] = v
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _compare(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, Tensor],
             optional: set[str] | frozenset[str] = frozenset()) -> str:
    """'' when ``state`` has exactly the expected names and shapes, else a readable summary."""
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (file {list(state[k].shape)}, model {list(expected[k])})"
                  for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if items:
            more = f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:_SHOW])}{more}")
    return "; ".join(parts)


def _load_into_new_model(cfg: MisoNetConfig, state: Mapping[str, Tensor], path: Path) -> MisoNet:
    """Build ``cfg`` without random initialisation and copy ``state`` into it, strictly."""
    with torch.device("meta"):
        model = MisoNet(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = _compare(expected, state)
    if problems:
        raise MisoError(f"{path}: weights do not fit the {cfg.task} network "
                        f"(input {cfg.input_size} px, embedding {cfg.emb_dim}): {problems}")
    model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    derived = {k: v.clone() for k, v in model.named_buffers()}
    reset_derived_buffers(model)
    changed = [k for k, v in model.named_buffers() if k in state and not torch.equal(v, derived[k])]
    if changed:
        more = f" (+{len(changed) - _SHOW} more)" if len(changed) > _SHOW else ""
        log.warning("%s: %d index/mask buffers differed from the architecture's and were recomputed: %s%s",
                    path, len(changed), ", ".join(changed[:_SHOW]), more)
    for k, t in model.named_parameters():
        if not torch.isfinite(t).all():
            raise MisoError(f"{path}: weights contain NaN or infinite values (first: {k})")
    return model


def reset_derived_buffers(model: nn.Module) -> None:
    """Recompute every buffer that follows from the architecture alone (relative-position indices and
    coordinate tables, shift masks, location frequencies), in place on its current device.

    Needed after building on the meta device, and a guard against checkpoints with damaged buffers.
    """
    for m in model.modules():
        if isinstance(m, GridCellEncoding | WindowAttention | SwinBlock):
            m.reset_buffers()
        elif isinstance(m, ShiftedWindowAttentionV2):
            dev = m.relative_position_index.device
            m.define_relative_position_index()  # torchvision: registers relative_position_index
            m.define_relative_position_bias_table()  # v2: registers relative_coords_table (no parameter)
            m.to(dev)
