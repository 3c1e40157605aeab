"""Sentinel-2 encoder backbone: torchvision Swin v2 (``swin_v2_b`` at reference size), 9-band patch embedding.

The module is torchvision's own :class:`~torchvision.models.SwinTransformer`, so its parameter names are
``features.{0..7}``, ``norm``, ``head`` exactly as in the reference and in SatlasPretrain's
``sentinel2_swinb_si_ms.pth`` (there under ``backbone.backbone.``). Only ``features.0.0`` (the patch
convolution) is replaced, by a ``Conv2d(9, 128, 4, stride 4)``. ``norm`` and ``head`` are kept (unused) so that
the state dict matches the reference; they are never run.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import swin_v2_b
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

from miso_mapper.model.config import SwinConfig

_SWIN_V2_B = SwinConfig(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=8,
                        drop_path=0.5)


def build_sat_backbone(cfg: SwinConfig, in_bands: int) -> SwinTransformer:
    """A randomly initialised Swin v2 with an ``in_bands``-channel patch embedding; never downloads weights.

    At the reference sizes (stochastic depth 0.5) this is ``torchvision.models.swin_v2_b(weights=None)``;
    other sizes build the same torchvision classes with the same arguments.
    """
    if cfg == _SWIN_V2_B:
        net = swin_v2_b(weights=None)
    else:
        net = SwinTransformer(
            patch_size=[4, 4], embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
            window_size=[cfg.window_size, cfg.window_size], stochastic_depth_prob=cfg.drop_path,
            block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2,
        )
    net.features[0][0] = nn.Conv2d(in_bands, cfg.embed_dim, kernel_size=(4, 4), stride=(4, 4))
    return net


def sat_stage_features(backbone: SwinTransformer, x: Tensor) -> list[Tensor]:
    """Run the backbone and return the output of each attention stage, before its patch merging.

    Args:
        backbone: from :func:`build_sat_backbone`.
        x: ``(B, in_bands, S, S)`` float32, normalised S2 reflectances, S = input size (256).

    Returns:
        4 tensors ``(B, S/4/2**i, S/4/2**i, embed_dim * 2**i)``, channels last.
    """
    feats = []
    h = backbone.features[0](x)  # conv, permute to channels-last, LayerNorm
    for i in range(1, len(backbone.features)):
        h = backbone.features[i](h)
        if i % 2 == 1:  # odd indices are the attention stages, even ones the patch merges
            feats.append(h)
    return feats
