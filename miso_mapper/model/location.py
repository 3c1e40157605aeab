"""Space2Vec grid-cell location encoder (Mai et al., ICLR 2020) with the reference's FC stack.

Input: EPSG:3338 coordinates mapped to ``[-1, 1]`` as the reference does (see :func:`normalise_3338`).
Encoding: ``F`` geometric frequencies ``1 / lambda_f``, ``lambda_f = min_r * (max_r / min_r) ** (f / (F - 1))``;
for each coordinate ``d`` (x then y), each frequency ``f``: ``(sin(c_d / lambda_f), cos(c_d / lambda_f))``;
feature index ``d * 2F + 2f + {0: sin, 1: cos}`` (width ``4F`` = 256 for F = 64).
FC stack (``layers``): ``FC(4F -> E, ReLU)``, ``num_residual_layers x FC(E -> E, ReLU, dropout, +skip,
LayerNorm)``, ``FC(E -> E, ReLU)``; every FC stores its weights as ``lin`` (and ``layer_norm``).
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from miso_mapper.model.config import LocationConfig

ArrayT = TypeVar("ArrayT", Tensor, np.ndarray, float)

#: EPSG:3338 extent (metres) that the reference maps to [-1, 1]; y is flipped (north = -1).
X_RANGE_3338: tuple[float, float] = (-2199995.0, 1500005.0)
Y_RANGE_3338: tuple[float, float] = (2400005.0, 5.0)


def normalise_3338(x: ArrayT, y: ArrayT) -> tuple[ArrayT, ArrayT]:
    """EPSG:3338 metres -> the location encoder's ``[-1, 1]`` coordinates (x east, y flipped: north is -1).

    Works on numpy arrays, tensors or floats, keeping their type and dtype; compute in float64 and cast
    to float32 afterwards (float32 metres lose about 0.1 m at Alaska's extent).
    """
    xn = (x - X_RANGE_3338[0]) / (X_RANGE_3338[1] - X_RANGE_3338[0]) * 2 - 1
    yn = (y - Y_RANGE_3338[0]) / (Y_RANGE_3338[1] - Y_RANGE_3338[0]) * 2 - 1
    return xn, yn


def grid_cell_frequencies(num_frequencies: int, min_radius: float, max_radius: float) -> Tensor:
    """``(F,)`` float32 angular frequencies ``1 / lambda_f`` (geometric ``lambda`` from min to max radius)."""
    step = math.log(max_radius / min_radius) / (num_frequencies - 1)
    timescales = min_radius * np.exp(np.arange(num_frequencies, dtype=np.float64) * step)
    return torch.tensor(1.0 / timescales, dtype=torch.float32)


class GridCellEncoding(nn.Module):
    """Parameter-free sin/cos multi-scale encoding: ``(..., 2) -> (..., 4F)``."""

    def __init__(self, num_frequencies: int, min_radius: float, max_radius: float) -> None:
        super().__init__()
        self.out_dim = 4 * num_frequencies
        self._spec = (num_frequencies, min_radius, max_radius)
        self.register_buffer("freqs", grid_cell_frequencies(*self._spec), persistent=False)

    def reset_buffers(self) -> None:
        """Recompute the (unsaved) frequency buffer in place, e.g. after ``to_empty``."""
        self.freqs = grid_cell_frequencies(*self._spec).to(self.freqs.device)

    def forward(self, coords: Tensor) -> Tensor:
        """``coords`` ``(..., 2)`` float in [-1, 1] -> ``(..., 4F)`` float."""
        angles = coords[..., :, None] * self.freqs.to(coords.dtype)  # ..., 2, F
        enc = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # ..., 2, F, 2
        return enc.flatten(-3)


class FCLayer(nn.Module):
    """``y = LayerNorm?(dropout(ReLU(lin(x))) (+ x))``; LayerNorm stored only when used."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, layer_norm: bool = False,
                 skip: bool = False) -> None:
        super().__init__()
        self.skip = skip
        self.lin = nn.Linear(in_dim, out_dim)
        nn.init.xavier_uniform_(self.lin.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.layer_norm = nn.LayerNorm(out_dim) if layer_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        y = self.dropout(torch.relu(self.lin(x)))
        if self.skip:
            y = y + x
        return self.layer_norm(y)


class LocationEncoder(nn.Module):
    """Grid-cell encoding then the FC stack: ``(..., 2)`` normalised EPSG:3338 -> ``(..., E)``."""

    def __init__(self, cfg: LocationConfig, emb_dim: int) -> None:
        super().__init__()
        self.pos_encoder = GridCellEncoding(cfg.num_frequencies, cfg.min_radius, cfg.max_radius)
        layers: list[nn.Module] = [FCLayer(self.pos_encoder.out_dim, emb_dim)]
        layers += [FCLayer(emb_dim, emb_dim, dropout=cfg.dropout, layer_norm=True, skip=True)
                   for _ in range(cfg.num_residual_layers)]
        layers.append(FCLayer(emb_dim, emb_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, coords: Tensor) -> Tensor:
        """``coords`` ``(B, N, 2)`` float -> ``(B, N, E)`` float."""
        return self.layers(self.pos_encoder(coords))
