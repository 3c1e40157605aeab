"""LIIF-style implicit query: an embedding for any continuous point of a window from multi-scale features.

For each of the four encoder stages (feature map ``(B, n, n, C)``, square) and each query point
``p = (x, y)`` in window-relative coordinates (``[-1, 1]``, x along columns / east, y along rows / south,
pixel centres at ``-1 + (2k + 1) / S``; the convention of :func:`torch.nn.functional.grid_sample`), the
reference (``MISO/models/visual_query.py``) does:

1. Four neighbour cells: shift ``p`` by ``(±1/n + 1e-6, ±1/n + 1e-6)`` (the ``1e-6`` is added on both
   signs), clamp to ``[-1 + 1e-6, 1 - 1e-6]`` and take the nearest cell (``grid_sample`` nearest,
   ``align_corners=False``: index ``round_half_even(((c + 1) n - 1) / 2)``).
2. Relative coordinate ``rel = (p - q) * n`` where ``q`` is the cell centre **as the reference builds it**:
   ``make_coord`` yields (row-centre, column-centre) but ``p`` is (x, y), so the reference computes
   ``rel = ((x - row_centre) n, (y - col_centre) n)``. A trained checkpoint depends on this pairing, so it is
   kept (``rel_coord_order='reference'``); ``'xy'`` pairs x with the column centre instead.
3. ``h_k = MLP([feature_k, rel_k])`` (Linear-ReLU-Linear-ReLU-Linear, widths per stage from the config).
4. Weights ``w_k = 1 / (|rel_k.x * rel_k.y| + 1e-9)``, normalised to sum 1 (no diagonal swap, unlike LIIF),
   ``e = sum_k w_k h_k``, then ``output_layer`` (Linear) and ``norm`` (LayerNorm) per stage.

The encoder sums the four stage embeddings and applies a final LayerNorm (the reference's ``sum`` pooling).

Efficiency: the first MLP layer is linear in the concatenation ``[feature, rel]``, so its feature part
(``W_f f + b``) is computed once per feature cell in :meth:`StageQuery.project_cells` (part of ``encode``)
and gathered per point; per point only ``W_rel rel`` (2 columns) is added. This is exact up to float
rounding and removes about 15 % of the per-point FLOPs, and lets many points share one encoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Neighbour offsets (vx, vy) in the reference's loop order.
_NEIGHBOURS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 1), (1, -1), (1, 1))
_EPS_SHIFT = 1e-6
_EPS_AREA = 1e-9


class MLP(nn.Module):
    """``Linear`` layers with an activation between them, stored as ``layers.{0,2,4,...}``."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "relu") -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "gelu": nn.GELU}[activation]
        mods: list[nn.Module] = []
        last = in_dim
        for h in hidden:
            mods += [nn.Linear(last, h), act()]
            last = h
        mods.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in_dim) -> (..., out_dim)``."""
        return self.layers(x)


def cell_centres(n: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """Centres of ``n`` cells spanning ``[-1, 1]``: ``-1 + 1/n + 2k/n``, ``(n,)`` (as the reference's
    ``make_coord``, same float32 arithmetic)."""
    r = 1.0 / n
    return -1 + r + (2 * r) * torch.arange(n, device=device).to(dtype)


def neighbour_cells(coords: Tensor, n: int, rel_coord_order: str = "reference") -> tuple[Tensor, Tensor]:
    """The four neighbour cells of each point and their relative coordinates.

    Args:
        coords: ``(B, N, 2)`` float, window-relative (x, y) in ``[-1, 1]``.
        n: side of the square feature map.
        rel_coord_order: ``'reference'`` or ``'xy'`` (see the module docstring).

    Returns:
        ``flat_index``: ``(B, N, 4)`` int64, ``row * n + col`` of each neighbour cell;
        ``rel``: ``(B, N, 4, 2)`` float, relative coordinates in units of cells (``(p - q) * n``).
    """
    r = 1.0 / n  # half a cell in [-1, 1] units
    shift = torch.tensor([[vx * r + _EPS_SHIFT, vy * r + _EPS_SHIFT] for vx, vy in _NEIGHBOURS],
                         dtype=coords.dtype, device=coords.device)
    c = (coords[:, :, None, :] + shift).clamp(-1 + _EPS_SHIFT, 1 - _EPS_SHIFT)  # B, N, 4, 2
    idx = torch.round(((c + 1) * n - 1) / 2).long().clamp_(0, n - 1)
    col, row = idx[..., 0], idx[..., 1]
    centres = cell_centres(n, coords.dtype, coords.device)
    if rel_coord_order == "reference":
        q = torch.stack([centres[row], centres[col]], dim=-1)
    else:
        q = torch.stack([centres[col], centres[row]], dim=-1)
    rel = (coords[:, :, None, :] - q) * n
    return row * n + col, rel


def area_weights(rel: Tensor) -> Tensor:
    """Normalised inverse-area weights ``(B, N, 4)`` of the four neighbours from ``rel`` ``(B, N, 4, 2)``."""
    w = 1.0 / (torch.abs(rel[..., 0] * rel[..., 1]) + _EPS_AREA)
    return w / w.sum(dim=-1, keepdim=True)


class StageQuery(nn.Module):
    """Implicit query of one stage: ``mlp`` (ReLU), ``output_layer`` (Linear), ``norm`` (LayerNorm).

    Args:
        feat_dim: channels C of the stage's feature map.
        hidden: the two hidden widths of the MLP.
        out_dim: embedding width E.
        rel_coord_order: see the module docstring.
    """

    def __init__(self, feat_dim: int, hidden: Sequence[int], out_dim: int,
                 rel_coord_order: str = "reference") -> None:
        super().__init__()
        self.feat_dim = feat_dim
        self.rel_coord_order = rel_coord_order
        self.mlp = MLP(feat_dim + 2, out_dim, hidden, "relu")
        self.output_layer = nn.Linear(out_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def project_cells(self, feat: Tensor) -> Tensor:
        """Feature part of the first MLP layer for every cell: ``(B, n, n, C) -> (B, n, n, hidden[0])``."""
        first = self.mlp.layers[0]
        return nn.functional.linear(feat, first.weight[:, : self.feat_dim], first.bias)

    def query(self, projected: Tensor, coords: Tensor) -> Tensor:
        """Embedding of each point.

        Args:
            projected: ``(B, n, n, hidden[0])`` from :meth:`project_cells`.
            coords: ``(B, N, 2)`` or ``(1, N, 2)`` (shared by all B windows), window-relative (x, y).

        Returns:
            ``(B, N, E)`` float, after ``output_layer`` and ``norm``.
        """
        b, n, n2, h1 = projected.shape
        if n != n2:
            raise ValueError(f"implicit query needs a square feature map, got {n}x{n2}")
        flat, rel = neighbour_cells(coords, n, self.rel_coord_order)
        weights = area_weights(rel)
        bq, npts = flat.shape[:2]
        table = projected.reshape(b, n * n, h1)
        index = flat.reshape(bq, npts * 4, 1).expand(b, npts * 4, h1)
        h = torch.gather(table, 1, index).view(b, npts, 4, h1)
        h = h + nn.functional.linear(rel, self.mlp.layers[0].weight[:, self.feat_dim:])
        for layer in self.mlp.layers[1:]:
            h = layer(h)
        out = (h * weights[..., None]).sum(dim=2)
        return self.norm(self.output_layer(out))

    def forward(self, feat: Tensor, coords: Tensor) -> Tensor:
        """``feat`` ``(B, n, n, C)``, ``coords`` ``(B, N, 2)`` -> ``(B, N, E)``."""
        return self.query(self.project_cells(feat), coords)


class ImplicitEncoder(nn.Module):
    """A multi-stage feature extractor plus one :class:`StageQuery` per stage and a final LayerNorm.

    Subclasses set ``feature_extractor`` and implement :meth:`stages`. Attribute order
    (``feature_extractor``, ``query_layers``, ``norm``) fixes the state-dict order of the reference.
    """

    feature_extractor: nn.Module

    def _init_queries(self, stage_dims: Sequence[int], hidden: Sequence[Sequence[int]], emb_dim: int,
                      rel_coord_order: str) -> None:
        self.emb_dim = emb_dim
        self.query_layers = nn.ModuleList(
            StageQuery(c, h, emb_dim, rel_coord_order) for c, h in zip(stage_dims, hidden, strict=True)
        )
        self.norm = nn.LayerNorm(emb_dim)

    def stages(self, x: Tensor) -> list[Tensor]:
        """``(B, bands, S, S)`` -> four channels-last maps ``(B, n_i, n_i, C_i)``."""
        raise NotImplementedError

    def encode(self, x: Tensor) -> list[Tensor]:
        """Everything that does not depend on the query points: per stage ``(B, n_i, n_i, hidden_i[0])``."""
        return [q.project_cells(f) for q, f in zip(self.query_layers, self.stages(x), strict=True)]

    def query(self, encoded: Sequence[Tensor], coords: Tensor) -> Tensor:
        """``encoded`` from :meth:`encode`, ``coords`` ``(B|1, N, 2)`` -> ``(B, N, E)`` (summed, normalised)."""
        return self.combine([q.query(proj, coords) for q, proj in zip(self.query_layers, encoded, strict=True)])

    def combine(self, stage_embeddings: Sequence[Tensor]) -> Tensor:
        """The encoder's embedding from its stages' ``(B, N, E)`` embeddings (stage order): their sum, then the
        final LayerNorm (the reference's ``sum`` pooling). Multi-rate prediction calls this with stage
        embeddings interpolated from coarser lattices."""
        total = stage_embeddings[0]
        for e in stage_embeddings[1:]:
            total = total + e
        return self.norm(total)

    def forward(self, x: Tensor, coords: Tensor) -> Tensor:
        """``x`` ``(B, bands, S, S)``, ``coords`` ``(B, N, 2)`` -> ``(B, N, E)``."""
        return self.query(self.encode(x), coords)
