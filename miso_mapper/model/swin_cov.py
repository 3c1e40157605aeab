"""Swin Transformer v1 for the covariate stack, in the original Microsoft (SimMIM) parameter layout.

Parameter names follow ``patch_embed.{proj,norm}``, ``layers.N.blocks.M.{norm1,attn,norm2,mlp}``,
``layers.N.downsample.{reduction,norm}``, with the persistent buffers ``attn.relative_position_index``
(``(W*W, W*W)`` int64) and, for shifted blocks, ``attn_mask`` (``(num_windows, W*W, W*W)``, 0 / -100).
There is no final norm and no classification head: the encoder returns the output of every stage *before*
its patch merging, which is what the implicit query reads.

As in the reference, a stage whose resolution is not larger than the window uses one window of the whole
stage and no shift (the last stage of the 256 px reference network: 8x8 tokens, window 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth


def window_partition(x: Tensor, window: int) -> Tensor:
    """Split ``(B, H, W, C)`` into ``(B * H/window * W/window, window * window, C)`` row-major windows."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window * window, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // window) * (w // window))
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def relative_position_index(window: int) -> Tensor:
    """Index ``(window**2, window**2)`` int64 into the ``(2*window-1)**2`` relative-bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[:, :, 0] * (2 * window - 1) + rel[:, :, 1]


def shifted_window_mask(resolution: int, window: int, shift: int) -> Tensor:
    """Additive mask ``(num_windows, window**2, window**2)`` float32: 0 within a region, -100 across."""
    img = torch.zeros(1, resolution, resolution, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            img[:, hs, ws, :] = label
            label += 1
    win = window_partition(img, window).squeeze(-1)  # nW, window*window
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows with a learned relative-position bias (Swin v1)."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def reset_buffers(self) -> None:
        """Recompute ``relative_position_index`` (it depends only on the window size)."""
        dev = self.relative_position_index.device
        self.relative_position_index = relative_position_index(self.window).to(dev)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x``: ``(B * nW, window**2, C)``; ``mask``: ``(nW, window**2, window**2)`` or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        bias = bias.view(n, n, self.num_heads).permute(2, 0, 1)  # heads, n, n
        if mask is not None:  # windows are batch-major: index = b * nW + w
            nw = mask.shape[0]
            bias = bias[None] + mask[:, None]  # nW, heads, n, n
            q, k, v = (t.reshape(bw // nw, nw, *t.shape[1:]) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Two-layer GELU MLP of a Swin block (``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., dim) -> (..., dim)``."""
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention block operating on ``(B, H*W, C)`` tokens."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int,
                 drop_path: float) -> None:
        super().__init__()
        if resolution <= window:  # one window covers the stage: no partition, no shift
            window, shift = resolution, 0
        self.resolution, self.window, self.shift, self.drop_path = resolution, window, shift, drop_path
        self.register_buffer("attn_mask", shifted_window_mask(resolution, window, shift) if shift else None)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)

    def reset_buffers(self) -> None:
        """Recompute ``attn_mask`` (it depends only on resolution, window and shift)."""
        if self.attn_mask is not None:
            dev = self.attn_mask.device
            self.attn_mask = shifted_window_mask(self.resolution, self.window, self.shift).to(dev)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, resolution**2, C)`` tokens (row-major) -> same shape."""
        b, length, c = x.shape
        r = self.resolution
        y = self.norm1(x).view(b, r, r, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask=self.attn_mask)
        y = window_reverse(y, self.window, r, r)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + stochastic_depth(y.reshape(b, length, c), self.drop_path, "row", self.training)
        return x + stochastic_depth(self.mlp(self.norm2(x)), self.drop_path, "row", self.training)


class PatchMerging(nn.Module):
    """2x2 token merging: concatenate the four neighbours (4C), LayerNorm, project to 2C without bias."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, r*r, C)`` -> ``(B, r*r/4, 2C)``."""
        b, _, c = x.shape
        r = self.resolution
        x = x.view(b, r, r, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` convolution then LayerNorm: ``(B, C, H, W)`` -> ``(B, HW/p², D)``."""

    def __init__(self, in_chans: int, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W)`` -> ``(B, H*W/16, D)`` tokens, row-major."""
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class BasicLayer(nn.Module):
    """One stage: ``depth`` blocks alternating plain and shifted windows, then optional patch merging."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int,
                 drop_paths: list[float], downsample: bool) -> None:
        super().__init__()
        self.resolution = resolution
        self.blocks = nn.ModuleList(
            SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(input of the next stage, this stage's output before merging)``."""
        for blk in self.blocks:
            x = blk(x)
        return (self.downsample(x) if self.downsample is not None else x), x


class SwinV1(nn.Module):
    """Swin v1 feature extractor returning the four stage maps.

    Args:
        in_chans: input channels (10 covariates in the reference).
        img_size: input side in pixels (256); fixed, because the shift masks depend on it.
        embed_dim, depths, num_heads, window_size: Swin sizes (reference: 128, (2,2,18,2), (4,8,16,32), 8).
        drop_path_rate: stochastic depth, linearly increasing over all blocks (reference default 0.1).
    """

    def __init__(self, in_chans: int, img_size: int, embed_dim: int, depths: tuple[int, ...],
                 num_heads: tuple[int, ...], window_size: int, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dim)
        total = sum(depths)  # linearly increasing rate (torch.linspace(0, rate, total), in plain Python)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        res = img_size // 4
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(BasicLayer(embed_dim * 2**i, res // 2**i, depth, num_heads[i], window_size,
                                          dpr[start:start + depth], downsample=i < len(depths) - 1))
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> list[Tensor]:
        """``x``: ``(B, in_chans, img_size, img_size)`` float -> list of 4 maps ``(B, H_i, W_i, C_i)``,
        H_i = img_size / 4 / 2**i, C_i = embed_dim * 2**i (channels last)."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"covariate encoder expects {self.img_size}x{self.img_size}, got {tuple(x.shape)}")
        x = self.patch_embed(x)
        out = []
        for layer in self.layers:
            x, stage = layer(x)
            b, n, c = stage.shape
            side = layer.resolution
            out.append(stage.view(b, side, side, c))
        return out


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
