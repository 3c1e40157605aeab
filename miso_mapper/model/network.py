"""The MISO network: two implicit-query Swin encoders, a location encoder, mappers and heads.

Composition (reference ``MISO/models/decoders.py``, decoder ``visual_geo_dual``), per query point::

    image (B, 19, S, S) = [9 normalised S2 bands | 10 normalised covariates]     ("c19")
    sat_emb    = sat_mapper(sat_encoder(image[:, :9],  pixel_coords))           (B, N, E)
    cov_emb    = cov_mapper(cov_encoder(image[:, 9:19], pixel_coords))          (B, N, E)
    visual_emb = visual_mapper(sat_emb + cov_emb)                               (B, N, E)
    pred       = out(visual_emb)                                                (B, N, out_dim) logits
    geo_emb    = geo_mapper(geo_encoder(geo_coords))                            (B, N, E)
    geo_pred   = geo_out(geo_emb)                                               (B, N, out_dim) logits

Mappers are ``Sequential(MLP(E -> E -> E, GELU), LayerNorm)``; heads are ``Linear(E, E) GELU Linear(E, E/2)
GELU Linear(E/2, out_dim)``. ``pred`` is the map product (sigmoid for permafrost, softmax over the 7 soil
orders for taxonomy); ``geo_pred`` is the auxiliary location-only head. The visual branch does not read the
location branch (``visual_geo_dual`` ties them only through the losses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from miso_mapper.model.config import MisoNetConfig
from miso_mapper.model.implicit_query import MLP, ImplicitEncoder
from miso_mapper.model.location import LocationEncoder
from miso_mapper.model.sat_encoder import build_sat_backbone, sat_stage_features
from miso_mapper.model.swin_cov import SwinV1

if TYPE_CHECKING:
    from miso_mapper.model.aoa import AreaOfApplicability
    from miso_mapper.model.checkpoint import ModelCard


class SatEncoder(ImplicitEncoder):
    """Sentinel-2 branch: torchvision Swin v2 (``feature_extractor``) + implicit query."""

    def __init__(self, cfg: MisoNetConfig) -> None:
        super().__init__()
        self.feature_extractor = build_sat_backbone(cfg.sat_encoder, cfg.sat_bands)
        self._init_queries(cfg.sat_encoder.stage_dims, cfg.query_hidden, cfg.emb_dim, cfg.rel_coord_order)

    def stages(self, x: Tensor) -> list[Tensor]:
        """``(B, 9, S, S)`` -> four ``(B, S/4/2**i, S/4/2**i, 128 * 2**i)`` maps (reference sizes)."""
        return sat_stage_features(self.feature_extractor, x)


class CovEncoder(ImplicitEncoder):
    """Covariate branch: Swin v1 in Microsoft layout (``feature_extractor``) + implicit query."""

    def __init__(self, cfg: MisoNetConfig) -> None:
        super().__init__()
        c = cfg.cov_encoder
        self.feature_extractor = SwinV1(cfg.cov_bands, cfg.input_size, c.embed_dim, c.depths, c.num_heads,
                                        c.window_size, c.drop_path)
        self._init_queries(c.stage_dims, cfg.query_hidden, cfg.emb_dim, cfg.rel_coord_order)

    def stages(self, x: Tensor) -> list[Tensor]:
        """``(B, 10, S, S)`` -> four ``(B, S/4/2**i, S/4/2**i, 128 * 2**i)`` maps (reference sizes)."""
        return self.feature_extractor(x)


def _mapper(emb_dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(MLP(emb_dim, emb_dim, [hidden], "gelu"), nn.LayerNorm(emb_dim))


def _head(emb_dim: int, hidden: tuple[int, int], out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(emb_dim, hidden[0]), nn.GELU(), nn.Linear(hidden[0], hidden[1]), nn.GELU(),
                         nn.Linear(hidden[1], out_dim))


@dataclass
class MisoFeatures:
    """Per-window encoding from :meth:`MisoNet.encode`, reusable for any number of query points.

    ``sat`` and ``cov`` hold one tensor per stage, ``(B, n_i, n_i, hidden_i[0])`` (n_i = 64, 32, 16, 8 and
    hidden = 256, 256, 512, 1024 at reference size), in the model's dtype and device.
    """

    sat: list[Tensor]
    cov: list[Tensor]

    @property
    def batch_size(self) -> int:
        """Number of windows B."""
        return self.sat[0].shape[0]

    def select(self, index: slice | Tensor) -> MisoFeatures:
        """The features of a subset of the windows (``index`` along the batch dimension)."""
        return MisoFeatures([t[index] for t in self.sat], [t[index] for t in self.cov])


class MisoNet(nn.Module):
    """The MISO network. Build with :func:`miso_mapper.model.build_model`.

    Submodule registration order reproduces the reference state dict order:
    ``sat_encoder, sat_mapper, cov_encoder, cov_mapper, visual_mapper, out, geo_encoder, geo_mapper, geo_out``.
    """

    card: ModelCard | None
    aoa: AreaOfApplicability | None
    """area of applicability of the embeddings (``load_checkpoint`` attaches the sidecar); None = none."""
    logit_bias: Tensor | None
    """(out_dim,) added to the head's logits by :meth:`predict_proba` (soil order: the card's ``class_bias``,
    prior matching); not a weight, so not in the state dict. None = no shift."""
    temperature: float | None
    """T of temperature scaling (the card's ``calibration``): :meth:`predict_proba` divides the logits, after
    :attr:`logit_bias`, by T. None = 1 (not calibrated)."""

    def __init__(self, config: MisoNetConfig) -> None:
        super().__init__()
        self.config = config
        self.card = None
        self.aoa = None
        self.logit_bias = None
        self.temperature = None
        e = config.emb_dim
        self.sat_encoder = SatEncoder(config)
        self.sat_mapper = _mapper(e, config.mapper_hidden)
        self.cov_encoder = CovEncoder(config)
        self.cov_mapper = _mapper(e, config.mapper_hidden)
        self.visual_mapper = _mapper(e, config.mapper_hidden)
        self.out = _head(e, config.head_hidden, config.out_dim)
        self.geo_encoder = LocationEncoder(config.location, e)
        self.geo_mapper = _mapper(e, config.mapper_hidden)
        self.geo_out = _head(e, config.head_hidden, config.out_dim)
        if config.input_standardization:
            self.register_buffer("input_mean", torch.zeros(config.in_bands))
            self.register_buffer("input_std", torch.ones(config.in_bands))

    def set_input_statistics(self, mean: Tensor, std: Tensor) -> None:
        """Set the per-channel ``(19,)`` mean and standard deviation used by ``input_standardization``.

        ``std`` is floored at 1e-6 so a constant channel maps to 0 instead of infinity.
        """
        if not self.config.input_standardization:
            raise ValueError("this network was built without input_standardization")
        self.input_mean.copy_(torch.as_tensor(mean, dtype=self.input_mean.dtype))
        self.input_std.copy_(torch.as_tensor(std, dtype=self.input_std.dtype).clamp_min(1e-6))

    def prepare_images(self, images: Tensor) -> Tensor:
        """Resize windows to the model's input size as the reference does (bilinear, no antialias).

        ``images``: ``(B, 19, H, W)`` float32 (the reference cuts 250x250 and resizes to 256x256);
        returned unchanged when already ``input_size`` (then standardised per channel when the network was built
        with ``input_standardization``).
        """
        s = self.config.input_size
        if images.ndim != 4 or images.shape[1] != self.config.in_bands:
            raise ValueError(f"expected (B, {self.config.in_bands}, H, W) windows, got {tuple(images.shape)}")
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        if self.config.input_standardization:
            images = (images - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        return images

    def encode(self, images: Tensor) -> MisoFeatures:
        """Run both image encoders once per window.

        Args:
            images: ``(B, 19, H, W)`` float, 9 normalised S2 bands (order of ``bands.S2_BANDS``) then 10
                normalised covariates (``bands.COVARIATES``); resized to ``input_size`` if needed.
        """
        x = self.prepare_images(images)
        nsat = self.config.sat_bands
        return MisoFeatures(self.sat_encoder.encode(x[:, :nsat]), self.cov_encoder.encode(x[:, nsat:]))

    def query_location(self, geo_coords: Tensor) -> tuple[Tensor, Tensor]:
        """Location branch only: ``geo_coords`` ``(B, N, 2)`` -> ``(geo_emb, geo_pred)``,
        ``(B, N, E)`` and ``(B, N, out_dim)`` logits."""
        geo_emb = self.geo_mapper(self.geo_encoder(geo_coords))
        return geo_emb, self.geo_out(geo_emb)

    def query(self, features: MisoFeatures, pixel_coords: Tensor, geo_coords: Tensor | None) -> dict[str, Tensor]:
        """Predict at points of the encoded windows.

        Args:
            features: from :meth:`encode` (B windows).
            pixel_coords: ``(B, N, 2)`` or ``(1, N, 2)``/``(N, 2)`` shared by all windows; float, window-relative
                ``(x, y)`` in ``[-1, 1]`` (x to the east / along columns, y to the south / along rows;
                pixel ``(col, row)`` of a 250 px window has centre ``(-1 + (2 col + 1) / 250, ...)``).
            geo_coords: ``(B, N, 2)`` float, EPSG:3338 of the same points normalised with
                :func:`miso_mapper.model.location.normalise_3338`; ``None`` skips the location branch.

        Returns:
            ``pred`` ``(B, N, out_dim)`` logits of the visual head, ``sat_emb``, ``cov_emb``, ``visual_emb``
            ``(B, N, E)``; with ``geo_coords`` also ``geo_emb`` ``(B, N, E)`` and ``geo_pred`` logits.
        """
        if pixel_coords.ndim == 2:
            pixel_coords = pixel_coords[None]
        out = self.decode(self.sat_encoder.query(features.sat, pixel_coords),
                          self.cov_encoder.query(features.cov, pixel_coords))
        if geo_coords is not None:
            if geo_coords.ndim == 2:
                geo_coords = geo_coords[None]
            out["geo_emb"], out["geo_pred"] = self.query_location(geo_coords)
        return out

    def decode(self, sat_query: Tensor, cov_query: Tensor) -> dict[str, Tensor]:
        """The visual branch after the implicit queries: mappers and head, per point.

        Args:
            sat_query, cov_query: ``(B, N, E)`` embeddings of the two encoders' implicit queries
                (:meth:`ImplicitEncoder.query` or, multi-rate, :meth:`ImplicitEncoder.combine`).

        Returns:
            ``pred`` ``(B, N, out_dim)`` logits, ``sat_emb``, ``cov_emb``, ``visual_emb`` ``(B, N, E)``.
        """
        sat_emb = self.sat_mapper(sat_query)
        cov_emb = self.cov_mapper(cov_query)
        visual_emb = self.visual_mapper(sat_emb + cov_emb)
        return {"pred": self.out(visual_emb), "sat_emb": sat_emb, "cov_emb": cov_emb, "visual_emb": visual_emb}

    def forward(self, images: Tensor, pixel_coords: Tensor, geo_coords: Tensor | None) -> dict[str, Tensor]:
        """``query(encode(images), pixel_coords, geo_coords)``; same shapes as :meth:`query`."""
        return self.query(self.encode(images), pixel_coords, geo_coords)

    @torch.no_grad()
    def predict_proba(self, logits: Tensor) -> Tensor:
        """Head logits (plus :attr:`logit_bias`, then divided by :attr:`temperature`) -> probabilities: sigmoid
        (permafrost, ``(..., 1)``) or softmax (taxonomy, ``(..., 7)``).

        The bias comes first because training fits T on the shifted logits
        (:func:`miso_mapper.train.loop.calibrate`); T > 0 keeps each point's argmax, so the prior matching the
        bias does still holds."""
        if self.logit_bias is not None:
            logits = logits + self.logit_bias.to(device=logits.device, dtype=logits.dtype)
        if self.temperature is not None:
            logits = logits / self.temperature
        return torch.sigmoid(logits) if self.config.task == "permafrost" else logits.softmax(dim=-1)


def build_model(config: MisoNetConfig | None = None) -> MisoNet:
    """A randomly initialised :class:`MisoNet` (train mode); ``None`` = the reference permafrost network."""
    return MisoNet(config if config is not None else MisoNetConfig())
