"""A network's window encoding compiled by ``torch.compile`` for fixed batch shapes (``PredictorConfig.compile``).

The predictor encodes a chunk's windows in groups (windows sharing a query shape and stage lattices) and each
group in batches of up to ``batch_size``. A static-shape graph per batch size it meets would compile again for
every odd-sized last batch, so a batch of ``n`` windows is padded with zero windows up to a *bucket*
(:func:`bucket_size`: the next power of two, at most ``batch_size``) and the padded windows' features are
dropped. Padding to ``batch_size`` itself would waste too much: a 500 px chunk of the default ensemble has 169
windows in 49 groups, 36 of them single windows at the halo's corners (x64 encoder work at a batch of 64);
with buckets it encodes 196 windows with at most ``log2(batch_size) + 1`` graphs (here 1, 8 and 64).

Each window is encoded independently of the others in its batch (Swin attention and LayerNorm act within a
window), so padding does not change the real windows' features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from miso_mapper.model.network import MisoFeatures, MisoNet

Encode = Callable[[Tensor], MisoFeatures]

#: Recompilations dynamo allows per compiled function before it falls back to eager: one graph per bucket
#: (7 at a batch of 64) per distinct network structure, and again after an out-of-memory halving.
RECOMPILE_LIMIT = 32


def bucket_size(n: int, batch_size: int) -> int:
    """Batch shape ``n`` windows are padded to: the smallest power of two ``>= n``, but at most ``batch_size``
    (and never below ``n``)."""
    return max(n, min(batch_size, 1 << max(n - 1, 0).bit_length()))


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
    batch size is part of the graph, hence :func:`encode_windows`' buckets). Compilation happens on the first
    call of each shape; dynamo's recompile limit is raised to at least :data:`RECOMPILE_LIMIT`."""
    if not compile:
        return model.encode
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(model.encode, dynamic=False)


def encode_windows(encode: Encode, images: Tensor, batch_size: int | None) -> MisoFeatures:
    """Features of the ``n`` windows ``images`` ``(n, C, H, W)``. With ``batch_size`` (fixed shapes) the batch
    is padded to :func:`bucket_size` with :func:`pad_batch` and the padded windows' features are dropped; None
    encodes the batch as it is."""
    n = images.shape[0]
    size = n if batch_size is None else bucket_size(n, batch_size)
    if size == n:
        return encode(images)
    return encode(pad_batch(images, size)).select(slice(0, n))
