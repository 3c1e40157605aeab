"""The MISO network (arXiv 2506.17302), its losses and its checkpoints.

Typical use::

    model = load_checkpoint("permafrost.safetensors", device="cuda")   # eval mode
    feats = model.encode(windows)                  # (B, 19, 250|256, 250|256) -> per-window features
    out = model.query(feats, pixel_xy, geo_xy)     # (B, N, 2) each -> out["pred"] (B, N, out_dim) logits
"""

from miso_mapper.model.checkpoint import (
    ModelCard,
    load_checkpoint,
    load_reference_checkpoint,
    load_satlas_backbone,
    read_model_card,
    save_checkpoint,
)
from miso_mapper.model.config import LocationConfig, MisoNetConfig, SwinConfig
from miso_mapper.model.location import normalise_3338
from miso_mapper.model.losses import info_nce, miso_loss, task_loss
from miso_mapper.model.network import MisoFeatures, MisoNet, build_model

__all__ = [
    "LocationConfig",
    "MisoFeatures",
    "MisoNet",
    "MisoNetConfig",
    "ModelCard",
    "SwinConfig",
    "build_model",
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
