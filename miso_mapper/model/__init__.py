"""The MISO network (arXiv 2506.17302), its losses and its checkpoints.

Typical use::

    model = load_checkpoint("permafrost.safetensors", device="cuda")   # eval mode
    feats = model.encode(windows)                  # (B, 19, 250|256, 250|256) -> per-window features
    out = model.query(feats, pixel_xy, geo_xy)     # (B, N, 2) each -> out["pred"] (B, N, out_dim) logits

The names below are imported on first use, so ``miso_mapper.model.config`` (the architecture settings, which
``plan`` reads) can be imported without torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from miso_mapper.model.card import ModelCard, check_checkpoint, read_model_card
    from miso_mapper.model.checkpoint import (
        load_checkpoint,
        load_reference_checkpoint,
        save_checkpoint,
    )
    from miso_mapper.model.config import LocationConfig, MisoNetConfig, SwinConfig
    from miso_mapper.model.location import normalise_3338
    from miso_mapper.model.losses import info_nce, miso_loss, task_loss
    from miso_mapper.model.network import MisoFeatures, MisoNet, build_model
    from miso_mapper.model.reference_io import export_reference, import_reference, load_satlas_backbone

#: Public name -> the submodule that defines it.
_HOME = {
    "ModelCard": "card",
    "check_checkpoint": "card",
    "load_checkpoint": "checkpoint",
    "load_reference_checkpoint": "checkpoint",
    "load_satlas_backbone": "reference_io",
    "import_reference": "reference_io",
    "export_reference": "reference_io",
    "read_model_card": "card",
    "save_checkpoint": "checkpoint",
    "LocationConfig": "config",
    "MisoNetConfig": "config",
    "SwinConfig": "config",
    "normalise_3338": "location",
    "info_nce": "losses",
    "miso_loss": "losses",
    "task_loss": "losses",
    "MisoFeatures": "network",
    "MisoNet": "network",
    "build_model": "network",
}

__all__ = [
    "LocationConfig",
    "MisoFeatures",
    "MisoNet",
    "MisoNetConfig",
    "ModelCard",
    "SwinConfig",
    "build_model",
    "check_checkpoint",
    "export_reference",
    "import_reference",
    "info_nce",
    "load_checkpoint",
    "load_reference_checkpoint",
    "load_satlas_backbone",
    "miso_loss",
    "normalise_3338",
    "read_model_card",
    "save_checkpoint",
    "task_loss",
]


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first access (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
