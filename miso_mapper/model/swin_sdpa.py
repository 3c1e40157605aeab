"""The Swin v2 window attention of the Sentinel-2 encoder through ``F.scaled_dot_product_attention``.

torchvision's :class:`~torchvision.models.swin_transformer.ShiftedWindowAttentionV2` computes cosine attention
with an explicit matmul and softmax, materialising every ``(windows, heads, N, N)`` score tensor. The same
function, written from its definition, is per window of ``N = wh * ww`` tokens and per head::

    q, k, v = x W_qkv + (b_q, 0, b_v)                (torchvision zeroes the key bias at every call)
    scores  = exp(min(logit_scale, ln 100)) * (q / |q|) (k / |k|)^T + B + M
    out     = softmax(scores) v, heads concatenated, then the output projection

with ``B = 16 sigmoid(cpb_mlp(log-spaced relative coordinates))`` the continuous position bias (the module's own
``get_relative_position_bias``) and ``M`` the shifted-window mask: 0 between tokens of the same region of the
cyclically rolled map, -100 across regions (torchvision's constant, not -inf, so the result is identical). The
map is zero-padded on the bottom/right to whole windows first, rolled by ``-shift`` (no shift along an axis
that one window already covers), cut into windows, and put back the same way afterwards.

Here the per-head scale is folded into the normalised ``q`` and ``B + M`` is one additive float mask, so
``scaled_dot_product_attention`` (``scale=1``) can run it with the fused flash/memory-efficient kernels on CUDA.
Windows are folded into the head dimension, so the mask ``(1, windows x heads, N, N)`` broadcasts over the
batch instead of being copied per image.

Switching is a class swap on each attention module (:func:`set_window_attention`, :func:`window_attention`):
parameters, buffers and the state dict are untouched, so weights load identically and the swap is reversible.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.swin_transformer import ShiftedWindowAttentionV2

AttentionKind = Literal["math", "sdpa"]

#: Largest logit scale of Swin v2's cosine attention: ``exp(min(logit_scale, ln 100))``.
MAX_LOG_LOGIT_SCALE = math.log(100.0)
#: Score added between tokens of different shifted-window regions (torchvision's value, so outputs match).
CROSS_REGION_SCORE = -100.0


def _region_labels(size: int, window: int, shift: int, device: torch.device) -> Tensor:
    """Per position of a rolled, padded axis of ``size``: 0 before the last window, 1 in the last window but
    before the wrapped ``shift`` positions, 2 in those (int64, ``(size,)``)."""
    idx = torch.arange(size, device=device)
    return (idx >= size - window).long() + (idx >= size - shift).long()


def shifted_window_mask(padded: tuple[int, int], window: tuple[int, int], shift: tuple[int, int],
                        device: torch.device) -> Tensor:
    """The shifted-window mask ``M``: ``(windows, N, N)`` float32, 0 within a region, -100 across regions.

    ``padded``: (rows, cols) of the padded map; windows in row-major order, tokens row-major in a window.
    """
    (ph, pw), (wh, ww) = padded, window
    rows = _region_labels(ph, wh, shift[0], device)
    cols = _region_labels(pw, ww, shift[1], device)
    label = (3 * rows[:, None] + cols[None, :]).view(ph // wh, wh, pw // ww, ww)
    label = label.permute(0, 2, 1, 3).reshape(-1, wh * ww)  # (windows, N)
    differ = label[:, :, None] != label[:, None, :]
    return torch.zeros(differ.shape, device=device).masked_fill(differ, CROSS_REGION_SCORE)


def _qkv_bias(bias: Tensor | None) -> Tensor | None:
    """The qkv bias with its key third set to 0 (Swin v2 has no key bias; torchvision zeroes it per call)."""
    if bias is None:
        return None
    third = bias.numel() // 3
    return torch.cat((bias[:third], torch.zeros_like(bias[third:2 * third]), bias[2 * third:]))


def sdpa_window_attention(module: ShiftedWindowAttentionV2, x: Tensor) -> Tensor:
    """``module``'s shifted window attention of ``x`` ``(B, H, W, C)`` (channels last) through
    ``scaled_dot_product_attention``; same shape and dtype as ``x``, equal to torchvision's forward up to
    floating-point rounding (see the module docstring)."""
    b, h, w, c = x.shape
    (wh, ww), heads = module.window_size, module.num_heads
    ph, pw = h + (-h % wh), w + (-w % ww)
    x = F.pad(x, (0, 0, 0, pw - w, 0, ph - h))
    # one window already covering an axis makes its shift a no-op, so torchvision drops it (and its mask)
    shift = (module.shift_size[0] if wh < ph else 0, module.shift_size[1] if ww < pw else 0)
    if any(shift):
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    gh, gw, n = ph // wh, pw // ww, wh * ww
    tokens = x.view(b, gh, wh, gw, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, n, c)

    qkv = F.linear(tokens, module.qkv.weight, _qkv_bias(module.qkv.bias))
    q, k, v = qkv.view(b, gh * gw, n, 3, heads, c // heads).permute(3, 0, 1, 4, 2, 5).unbind(0)  # (b, nW, h, n, d)
    scale = torch.clamp(module.logit_scale, max=MAX_LOG_LOGIT_SCALE).exp()  # (heads, 1, 1)
    # under autocast the norm runs in float32 and would promote q and k; SDPA wants one dtype (v's)
    q = (F.normalize(q, dim=-1) * scale).to(v.dtype)
    k = F.normalize(k, dim=-1).to(v.dtype)
    mask = module.get_relative_position_bias().expand(gh * gw, heads, n, n)
    if any(shift):
        mask = mask + shifted_window_mask((ph, pw), (wh, ww), shift, x.device)[:, None]

    def fold(t: Tensor) -> Tensor:  # windows into the head dimension: the mask then broadcasts over the batch
        return t.reshape(b, gh * gw * heads, n, t.shape[-1])

    attn = F.scaled_dot_product_attention(
        fold(q), fold(k), fold(v), attn_mask=mask.reshape(1, gh * gw * heads, n, n).to(v.dtype),
        dropout_p=module.attention_dropout if module.training else 0.0, scale=1.0)
    out = attn.view(b, gh * gw, heads, n, c // heads).transpose(2, 3).reshape(b, gh * gw, n, c)
    out = F.dropout(F.linear(out, module.proj.weight, module.proj.bias), p=module.dropout, training=module.training)

    out = out.view(b, gh, gw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, c)
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out[:, :h, :w, :].contiguous()


class SdpaShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    """torchvision's module with :func:`sdpa_window_attention` as its forward. Never built directly: an existing
    module's class is swapped (:func:`set_window_attention`), so it keeps its parameters and buffers."""

    def forward(self, x: Tensor) -> Tensor:
        return sdpa_window_attention(self, x)


_CLASSES: dict[str, type[ShiftedWindowAttentionV2]] = {"math": ShiftedWindowAttentionV2,
                                                       "sdpa": SdpaShiftedWindowAttentionV2}


def set_window_attention(roots: nn.Module | Iterable[nn.Module],
                         kind: AttentionKind) -> dict[ShiftedWindowAttentionV2, type]:
    """Make every Swin v2 window attention under ``roots`` compute with ``kind`` (``math`` = torchvision's
    forward, ``sdpa`` = :func:`sdpa_window_attention`); returns each module's previous class (to restore).

    Only the class changes: parameters, buffers, the state dict and the module tree stay as they are.
    """
    if kind not in _CLASSES:
        raise ValueError(f"unknown attention {kind!r}; choose one of {', '.join(_CLASSES)}")
    before: dict[ShiftedWindowAttentionV2, type] = {}
    for root in [roots] if isinstance(roots, nn.Module) else roots:
        for module in root.modules():
            if type(module) in _CLASSES.values():
                before[module] = type(module)
                module.__class__ = _CLASSES[kind]
    return before


@contextlib.contextmanager
def window_attention(roots: nn.Module | Iterable[nn.Module], kind: AttentionKind) -> Iterator[int]:
    """Within the block, the Swin v2 window attentions under ``roots`` compute with ``kind``; afterwards each
    has its previous class again. Yields the number of attention modules switched."""
    before = set_window_attention(roots, kind)
    try:
        yield len(before)
    finally:
        for module, cls in before.items():
            module.__class__ = cls
