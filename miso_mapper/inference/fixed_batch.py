"""A network's window encoding compiled by ``torch.compile`` for fixed batch shapes (``PredictorConfig.compile``).

The predictor encodes windows in batches of ``batch_size``; only a group's last batch is smaller. Compiling for
each size it meets would pay the compilation again for every last batch, so that batch is padded with zero
windows up to ``batch_size`` and their features are dropped: one graph serves a whole run (another only after
an out-of-memory halving changes the batch size). Each window is encoded independently of the others in its
batch (Swin attention and LayerNorm act within a window), so padding does not change the real windows' features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from miso_mapper.model.network import MisoFeatures, MisoNet

Encode = Callable[[Tensor], MisoFeatures]


def pad_batch(images: Tensor, size: int) -> Tensor:
    """``images`` ``(n, C, H, W)`` with ``size - n`` zero windows appended (same dtype, device and memory format:
    a channels-last batch stays channels-last); returned unchanged when ``n >= size``."""
    n = images.shape[0]
    if n >= size:
        return images
    channels_last = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
    out = torch.empty((size, *images.shape[1:]), dtype=images.dtype, device=images.device,
                      memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out[:n] = images
    out[n:] = 0
    return out


def batch_encoder(model: MisoNet, compile: bool) -> Encode:
    """``model.encode``, or with ``compile`` that method compiled with static shapes (``dynamic=False``: the
    batch size is part of the graph, hence :func:`pad_batch`). Compilation happens on the first call."""
    return torch.compile(model.encode, dynamic=False) if compile else model.encode


def encode_windows(encode: Encode, images: Tensor, batch_size: int | None) -> MisoFeatures:
    """Features of the ``n`` windows ``images`` ``(n, C, H, W)``: with ``batch_size`` (fixed shapes) the batch is
    padded to it with :func:`pad_batch` and the padded windows' features are dropped; None encodes as is."""
    n = images.shape[0]
    if batch_size is None or n >= batch_size:
        return encode(images)
    return encode(pad_batch(images, batch_size)).select(slice(0, n))
