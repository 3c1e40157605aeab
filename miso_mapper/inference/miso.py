"""The MISO map predictor: batched windows, a sparse ensemble of them per point, seamless, CUDA-ready.

:class:`MisoPredictor` implements :class:`~miso_mapper.inference.predictor.Predictor` with up to two
networks (permafrost and soil order; a missing one gives an all-NaN layer). For one chunk it

1. stacks the chunk's normalised inputs with halo into a ``(19, H, W)`` float32 image (9 S2 bands in
   :data:`~miso_mapper.bands.S2_BANDS` order, then 10 covariates in :data:`~miso_mapper.bands.COVARIATES`
   order; non-finite values become 0, as no-data pixels already are);
2. lays out 250 px windows (:class:`~miso_mapper.inference.windows.WindowLayout`). By default the
   *ensemble* layout: windows on the reference's own 50 px lattice, each answering only for points within
   ``support`` (100) px of its centre with the reference's Gaussian mask tapered to 0 at that distance, and
   queried only every ``query_spacing`` px (5 for the tiny network, 1 for the reference network; see
   :func:`auto_query_spacing`) with bilinear interpolation in between. The reference averages every pixel
   over 25 windows, most of whose weight sits in the nearest 16; a trained network's window-to-window
   differences are what a single window per pixel cannot reproduce (measured: 94 % argmax agreement with
   one window, 98-99 % with this ensemble), and its output is smooth within a feature cell, which the
   spacing exploits. With :meth:`PredictorConfig.reference` the reference's demo setting (stride 50, every
   pixel of every window, Gaussian mask sigma 0.25 x 250), which reproduces ``MISO/demo.py``;
3. encodes the windows in batches (each window once per network) and queries each window at its points,
   ``query_batch`` points per call, with window-relative pixel-centre coordinates exactly as the
   reference builds them (``-1 + 1/w + 2k/w``, float32). With *multi-rate queries* (``multi_rate``, the
   default) each of the four encoder stages is evaluated only on its own lattice (``stage_spacings``, by
   default half its feature cell: 2, 2, 5, 10 px for the reference network's 3.9 / 7.8 / 15.6 / 31 px
   cells), each queried point takes its stage embeddings bilinearly from the four surrounding stage-lattice
   points, and the sum, LayerNorm, mappers and head run per point as in the network. The coarse stages carry
   the widest query MLPs, so this removes most of a query's FLOPs (benchmarks/README.md);
4. turns the visual head's logits (``pred``, the map product of the reference demo) into probabilities
   (sigmoid for permafrost, softmax over the 7 orders for taxonomy), accumulates
   ``sum(weight * p) / sum(weight)`` on the output lattice and interpolates it to the interior's pixels;
   pixels where ``inputs['valid']`` is False are NaN;
5. with ``uncertainty`` (the default) also ``sum(weight * p²)``, so the ensemble's weighted standard deviation
   per channel ``sqrt(E[p²] - E[p]²)`` on the lattice (interpolated like the probabilities), the entropy of the
   averaged order probabilities, and when a network carries an area of applicability (``model.aoa``, see
   :mod:`miso_mapper.model.aoa`) the weighted mean of its ``visual_emb`` per lattice point, whose
   dissimilarity index ``model.aoa.index`` is interpolated to the pixels; with a conformal calibration in the
   soil-order card (``card.conformal.qhat``) the prediction set ``{c : p_c >= 1 - qhat}`` as a bitmask.

Chunk edges: when the chunk size is a multiple of the stride (:meth:`PredictorConfig.check_grid`), two
neighbouring chunks compute their shared edge points from the same windows, so the map has no seam; the
ensemble needs a halo of ``window / 2 + stride`` px (175) for that, the reference setting ``window / 2``.

The location branch (``geo_pred``) is not run: in the ``visual_geo_dual`` network the visual head does not
read it, so it cannot change the map (the literal reference loop in ``benchmarks/`` does run it, as the demo).

On CUDA: bf16 autocast (coordinates stay float32, so the neighbour-cell search is exact), channels-last
encoders and windows, pinned double-buffered host staging with non-blocking copies, a window batch size
chosen from free GPU memory (:func:`estimate_window_bytes`, :func:`estimate_point_bytes`), and on
``torch.OutOfMemoryError`` the batch (and the points per query call) is halved and the same windows are
retried; only when one window with the smallest query call still does not fit does it raise
:class:`~miso_mapper.errors.MisoError`. Nothing is ever skipped. The smaller size is kept for later chunks.

Two speed variants, off by default until a GPU measures which pays: ``attention='sdpa'`` computes the
Sentinel-2 Swin's window attention through ``scaled_dot_product_attention`` (:mod:`miso_mapper.model.swin_sdpa`;
switched only while this predictor maps a chunk, so predictors sharing networks do not interfere), and
``compile=True`` compiles each network's ``encode`` with fixed batch shapes
(:mod:`miso_mapper.inference.fixed_batch`: batches padded to power-of-two buckets).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.errors import MisoError
from miso_mapper.inference.fixed_batch import batch_encoder, encode_windows
from miso_mapper.inference.predictor import interior_coords
from miso_mapper.inference.settings import PredictorConfig
from miso_mapper.inference.windows import StageAxis, Window, WindowLayout, blend_mask, interpolate_lattice
from miso_mapper.model.config import MisoNetConfig
from miso_mapper.model.conformal import prediction_set_bits
from miso_mapper.model.network import MisoNet
from miso_mapper.model.swin_sdpa import window_attention

#: The predictor's (y, x) float32 layers besides the probabilities (NaN = no data); see
#: :meth:`MisoPredictor.predict_chunk`.
EXTRA_OUTPUTS = ("permafrost_spread", "taxonomy_entropy", "taxonomy_spread", "permafrost_aoa_index",
                 "taxonomy_aoa_index", "taxonomy_set")

log = logging.getLogger(__name__)

#: Activation memory of one Swin block relative to its input (tokens x channels): the input and its
#: LayerNorm copy, q/k/v (3), attention output and projection (2), the MLP hidden layer (4) and its
#: activation (4), with slack. Used only for the first guess of the CUDA batch size (OOM halving corrects it).
SWIN_ACTIVATION_FACTOR = 20
#: Smallest number of points per query call the OOM fallback goes down to.
MIN_QUERY_POINTS = 1024
#: Largest automatic number of points per query call on CUDA.
MAX_AUTO_QUERY_POINTS = 1 << 18
#: Defaults on CPU (no memory probe there): windows per batch and points per query call. The query's
#: activations (points x 4 neighbours x hidden) should stay in cache: on the 2-core demo machine 2,048 points
#: per call mapped a tiny-network chunk in 28 s against 48 s with 16,384, and two workers side by side in
#: 30 s each against 94 s (memory bandwidth, not arithmetic, was the limit).
CPU_BATCH_SIZE = 4
CPU_QUERY_POINTS = 2048


def window_pixel_grid(window: int, index: np.ndarray | None = None) -> Tensor:
    """Window-relative centres of pixels ``index`` (default ``0..window - 1``) of a ``window`` px window,
    float32: ``-1 + 1/w + (2/w) k``.

    The same float32 arithmetic as the reference's ``make_grid(-1, 1)``, so coordinates are bit-identical.
    Indices outside the window (a coarse stage lattice may reach a few px past it) give centres outside
    ``[-1, 1]``; the implicit query then clamps the neighbour cells to the edge, as ``grid_sample`` does.
    """
    r = (1 - -1) / (2 * window)
    k = torch.arange(window) if index is None else torch.as_tensor(np.asarray(index), dtype=torch.int64)
    return -1 + r + (2 * r) * k.float()


def estimate_window_bytes(cfg: MisoNetConfig, amp: bool) -> int:
    """First guess of the peak device memory of encoding one window with one network, bytes.

    The input (19 x S x S float32, and its resized copy), per encoder the largest Swin stage's activations
    (``tokens x channels x`` :data:`SWIN_ACTIVATION_FACTOR` plus the attention scores ``tokens x window² x
    heads``) and, kept for the queries, the four stage maps and their projections
    (``tokens_i x (C_i + hidden_i[0])``). ``S = cfg.input_size``; 2 bytes per value under bf16, else 4.
    """
    elt = 2 if amp else 4
    s = cfg.input_size
    total = 2 * cfg.in_bands * s * s * 4
    for enc in (cfg.sat_encoder, cfg.cov_encoder):
        side = s // 4
        peak = kept = 0
        for i, c in enumerate(enc.stage_dims):
            tokens = (side >> i) ** 2
            attn = tokens * min(enc.window_size, side >> i) ** 2 * enc.num_heads[i]
            peak = max(peak, (tokens * c * SWIN_ACTIVATION_FACTOR + attn) * elt)
            kept += tokens * (c + cfg.query_hidden[i][0]) * 4
        total += peak + kept
    return int(total)


def estimate_point_bytes(cfg: MisoNetConfig) -> int:
    """First guess of the device memory per query point, bytes (float32 throughout, as LayerNorm and the
    coordinate arithmetic are): the widest stage's four-neighbour MLP activations ``4 x (h0 + h1 + E)`` twice
    (input and output of each layer), plus about ten ``E``-wide embeddings (stage sums, mappers, heads)."""
    e = cfg.emb_dim
    stage = max(4 * (h0 + h1 + e) * 2 for h0, h1 in cfg.query_hidden)
    return int((stage + 10 * e + 64) * 4)


@dataclass
class PredictStats:
    """What the last :meth:`MisoPredictor.predict_chunk` did (for logs and benchmarks)."""

    windows: int = 0
    windows_skipped: int = 0
    points_queried: int = 0
    stage_points: list[int] = field(default_factory=list)
    """points at which each encoder stage was evaluated, per network (multi-rate: fewer than points_queried)"""
    batch_size: int = 0
    query_batch: int = 0
    oom_retries: int = 0
    seconds: float = 0.0
    batches: list[int] = field(default_factory=list)


class MisoPredictor:
    """Permafrost and soil-order probabilities for a chunk from MISO networks (see the module docstring).

    Args:
        permafrost: a ``task='permafrost'`` network or ``None`` (its layer is then NaN).
        taxonomy: a ``task='taxonomy'`` network or ``None``.
        config: tiling, batching and device settings; default :class:`PredictorConfig` ``()`` (fast).
        uncertainty: also compute the :data:`EXTRA_OUTPUTS` (spread, entropy, AOA index, conformal set);
            False leaves them NaN (the cost benchmark's baseline).

    The networks are moved to the predictor's device once and put in eval mode; keep one predictor per
    worker process.
    """

    def __init__(self, permafrost: MisoNet | None = None, taxonomy: MisoNet | None = None,
                 config: PredictorConfig | None = None, uncertainty: bool = True) -> None:
        self.config = config or PredictorConfig()
        self.uncertainty = uncertainty
        self.models: dict[str, MisoNet] = {}
        for task, model in (("permafrost", permafrost), ("taxonomy", taxonomy)):
            if model is None:
                continue
            cfg = model.config
            if cfg.task != task:
                raise MisoError(f"the {task} network given is a {cfg.task!r} network")
            if cfg.crop_size != self.config.window:
                raise MisoError(f"the {task} network was trained on {cfg.crop_size} px windows but the predictor "
                                f"is configured for {self.config.window} px windows")
            if cfg.in_bands != len(S2_BANDS) + len(COVARIATES):
                raise MisoError(f"the {task} network takes {cfg.in_bands} bands, the inputs have "
                                f"{len(S2_BANDS) + len(COVARIATES)}")
            card = model.card
            if card is not None and (tuple(card.sat_bands) != S2_BANDS or tuple(card.covariates) != COVARIATES):
                raise MisoError(f"the {task} network expects bands {card.sat_bands} + {card.covariates}, "
                                "not the package's band order")
            self.models[task] = model
        if not self.models:
            raise MisoError("a MISO predictor needs a permafrost or a taxonomy network (got neither)")
        self.device = resolve_device(self.config.device)
        self.cuda = self.device.type == "cuda"
        for model in self.models.values():
            model.to(self.device).eval()
            if self.cuda and self.config.channels_last:
                model.sat_encoder.to(memory_format=torch.channels_last)
                model.cov_encoder.to(memory_format=torch.channels_last)
        self._encoders = {task: batch_encoder(model, self.config.compile) for task, model in self.models.items()}
        self.query_spacing, self.stage_spacings = self.config.spacings([m.config for m in self.models.values()])
        self._mask = blend_mask(self.config.window, self.config.blend, self.config.sigma_fraction)
        self._grid = window_pixel_grid(self.config.window)
        self._batch_size: int | None = None
        self._query_batch: int | None = None
        self._stager = _HostStager(self.device, self.config.window)
        self.stats = PredictStats()

    # ----------------------------------------------------------------------------------------------- sizes
    def batch_sizes(self) -> tuple[int, int]:
        """(windows per batch, points per query call), resolved on first use and kept (OOM may shrink them).

        CPU: :data:`CPU_BATCH_SIZE` and :data:`CPU_QUERY_POINTS` unless configured. CUDA: from
        ``torch.cuda.mem_get_info`` x ``gpu_memory_fraction``: the query call gets up to a third of that
        budget (at most :data:`MAX_AUTO_QUERY_POINTS` points, a power of two), the windows the rest at
        :func:`estimate_window_bytes` each, capped by ``max_batch_size``.
        """
        if self._batch_size is None or self._query_batch is None:
            c = self.config
            if not self.cuda:
                self._batch_size = c.batch_size or CPU_BATCH_SIZE
                self._query_batch = c.query_batch or CPU_QUERY_POINTS
            else:
                free, _total = torch.cuda.mem_get_info(self.device)
                budget = free * c.gpu_memory_fraction
                cfgs = [m.config for m in self.models.values()]
                per_point = max(estimate_point_bytes(m) for m in cfgs)
                per_window = max(estimate_window_bytes(m, c.amp) for m in cfgs)
                if c.query_batch is None:
                    pts = int(budget / 3 // per_point)
                    pts = 1 << max(pts, 1).bit_length() - 1
                    self._query_batch = max(MIN_QUERY_POINTS, min(MAX_AUTO_QUERY_POINTS, pts))
                else:
                    self._query_batch = c.query_batch
                left = budget - self._query_batch * per_point
                self._batch_size = c.batch_size or max(1, min(c.max_batch_size, int(left // per_window)))
                log.info("CUDA: %.1f GiB free; %d windows/batch (~%.0f MiB each), %d points/query call",
                         free / 2**30, self._batch_size, per_window / 2**20, self._query_batch)
        return self._batch_size, self._query_batch

    def _shrink_after_oom(self, exc: BaseException) -> None:
        """Halve the batch (and the points per query call); raise :class:`MisoError` when nothing is left."""
        b, q = self.batch_sizes()
        if b == 1 and q <= MIN_QUERY_POINTS:
            raise MisoError(f"out of GPU memory with one window and {q} points per query call on {self.device}: "
                            f"the network does not fit this GPU ({exc})") from exc
        self._batch_size = max(1, b // 2)
        self._query_batch = max(MIN_QUERY_POINTS, q // 2) if q > MIN_QUERY_POINTS else q
        self.stats.oom_retries += 1
        log.warning("out of GPU memory at %d windows x %d points; retrying with %d x %d", b, q,
                    self._batch_size, self._query_batch)
        if self.cuda:
            torch.cuda.empty_cache()

    # --------------------------------------------------------------------------------------------- predict
    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """Probabilities over ``inputs.isel(y=interior[0], x=interior[1])`` (see :class:`Predictor`).

        ``inputs``: from :func:`~miso_mapper.imagery.chunk.read_inputs` on the chunk's halo grid: ``s2``
        (s2_band, y, x) and ``cov`` (cov_band, y, x) normalised float32, ``valid`` (y, x) bool, georeferenced
        (``inputs.odc.geobox``). Returns ``permafrost_probability`` (y, x) and ``taxonomy_probability``
        (class, y, x), float32, NaN where not valid (or where no network was given), on the interior's
        coordinates cut from the inputs' (:func:`~miso_mapper.inference.predictor.interior_coords`), and the
        :data:`EXTRA_OUTPUTS`, (y, x) float32, NaN where not valid or where their source is absent:
        ``permafrost_spread`` (weighted std of P(permafrost) across the windows), ``taxonomy_entropy``
        (Shannon entropy of the averaged order probabilities / ln 7, in [0, 1]), ``taxonomy_spread`` (weighted
        std of the most probable order's probability), ``permafrost_aoa_index`` / ``taxonomy_aoa_index``
        (dissimilarity index of the network's AOA, >= 0) and ``taxonomy_set`` (conformal set bitmask, bit i =
        order i, as float).
        """
        image = stack_inputs(inputs)
        valid = np.asarray(inputs["valid"].values, dtype=bool)
        maps = self.predict_arrays(image, valid, interior)
        return xr.Dataset(
            {
                "permafrost_probability": (("y", "x"), maps["permafrost"][0]),
                "taxonomy_probability": (("class", "y", "x"), maps["taxonomy"]),
                **{name: (("y", "x"), maps[name]) for name in EXTRA_OUTPUTS},
            },
            coords={"class": list(SOIL_ORDERS), **interior_coords(inputs, interior)},
        )

    def predict_arrays(self, image: np.ndarray, valid: np.ndarray,
                       interior: tuple[slice, slice]) -> dict[str, np.ndarray]:
        """The array core of :meth:`predict_chunk`.

        Args:
            image: ``(19, H, W)`` float32 normalised inputs of the halo grid (see :func:`stack_inputs`).
            valid: ``(H, W)`` bool.
            interior: (row, col) slices of the interior in the halo grid.

        Returns:
            ``{'permafrost': (1, h, w), 'taxonomy': (7, h, w)}`` float32 probabilities over the interior,
            NaN where not valid or where that network is absent, and each of :data:`EXTRA_OUTPUTS` ``(h, w)``
            float32 (see :meth:`predict_chunk`).
        """
        t0 = time.perf_counter()
        if image.ndim != 3 or image.shape[0] != len(S2_BANDS) + len(COVARIATES):
            raise MisoError(f"expected a (19, H, W) input stack, got {image.shape}")
        if valid.shape != image.shape[1:]:
            raise MisoError(f"valid mask {valid.shape} does not match the inputs {image.shape[1:]}")
        image = np.ascontiguousarray(np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0), dtype=np.float32)
        try:
            layout = self.config.layout(image.shape[1:], interior, self.query_spacing)
        except ValueError as exc:
            raise MisoError(f"cannot tile this chunk: {exc}") from None
        valid_int = valid[layout.interior]
        self.stats = PredictStats(stage_points=[0] * len(self.stage_spacings))
        out_dims = {"permafrost": 1, "taxonomy": len(SOIL_ORDERS)}
        result = {t: np.full((d, *layout.interior_shape), np.nan, np.float32) for t, d in out_dims.items()}
        result |= {name: np.full(layout.interior_shape, np.nan, np.float32) for name in EXTRA_OUTPUTS}
        if not valid_int.any():
            self.stats.seconds = time.perf_counter() - t0
            return result
        # the attention kind holds only while this predictor runs: predictors sharing networks each get their own
        with torch.inference_mode(), window_attention(self.models.values(), self.config.attention):
            acc = self._accumulate(image, layout, valid_int)
            covered = (acc.wsum > 0).cpu().numpy()

            def to_pixels(lattice: Tensor) -> np.ndarray:
                values = lattice.cpu().numpy()
                values[:, ~covered] = np.nan  # never reached: NaN spreads to the pixels that would use it
                return np.where(valid_int[None], interpolate_lattice(values, layout), np.float32(np.nan))

            for task in acc.sums:
                result[task] = to_pixels(acc.mean(task)).astype(np.float32)
                if self.uncertainty:
                    self._uncertainty(task, acc, to_pixels, result)
        self.stats.seconds = time.perf_counter() - t0
        return result

    def _uncertainty(self, task: str, acc: _Sums, to_pixels: Any, result: dict[str, np.ndarray]) -> None:
        """Fill ``result``'s spread, entropy, AOA index and conformal set of ``task`` (see :meth:`predict_chunk`)
        from the lattice sums and the pixels' probabilities ``result[task]``."""
        model, prob = self.models[task], result[task]
        spread = to_pixels(acc.std(task))
        if task == "permafrost":
            result["permafrost_spread"] = spread[0].astype(np.float32)
        else:
            ok = np.isfinite(prob).all(axis=0)
            top = np.argmax(np.nan_to_num(prob, nan=-1.0), axis=0)
            result["taxonomy_spread"] = np.where(ok, np.take_along_axis(spread, top[None], 0)[0], np.nan)
            result["taxonomy_entropy"] = normalised_entropy(prob)
            qhat = card_qhat(model)
            if qhat is not None:
                bits = prediction_set_bits(torch.from_numpy(np.nan_to_num(np.moveaxis(prob, 0, -1))), qhat)
                result["taxonomy_set"] = np.where(ok, bits.numpy().astype(np.float32), np.float32(np.nan))
        if task in acc.emb_sums:
            emb = acc.mean(task, emb=True)  # (E, rows, cols)
            aoa = getattr(model, "aoa", None)  # set by load_checkpoint from the AOA sidecar
            index = aoa.index(emb.flatten(1).T.contiguous()).float()
            result[f"{task}_aoa_index"] = to_pixels(index.reshape(1, *emb.shape[1:]))[0].astype(np.float32)

    def _accumulate(self, image: np.ndarray, layout: WindowLayout, valid_int: np.ndarray) -> _Sums:
        """Run every window that a valid interior pixel depends on; the weighted sums on the output lattice."""
        acc = _Sums.zeros(self.models, layout.lattice_shape, self.device, self.uncertainty)
        groups: dict[tuple[Any, ...], list[tuple[Window, tuple[slice, slice], tuple[slice, slice]]]] = {}
        for win, (dst, src) in zip(layout.windows, layout.lattice_overlaps(), strict=True):
            if not valid_int[layout.reach(win)].any():
                self.stats.windows_skipped += 1
                continue
            grids = self._stage_grids(win, layout)
            key = (win.query_shape, *((g[0].count, g[0].offset, g[1].count, g[1].offset) for g in grids if g))
            groups.setdefault(key, []).append((win, dst, src))
        for entries in groups.values():
            i = 0
            while i < len(entries):
                b, q = self.batch_sizes()
                batch = entries[i:i + b]
                try:
                    probs = self._predict_batch(image, layout, [e[0] for e in batch], q)
                except torch.OutOfMemoryError as exc:
                    self._shrink_after_oom(exc)
                    continue
                for k, (win, dst, src) in enumerate(batch):
                    wt = torch.from_numpy(win.weights(self._mask)[src].astype(np.float32)).to(self.device)
                    acc.add(probs, k, dst, src, wt)
                self.stats.windows += len(batch)
                self.stats.batches.append(len(batch))
                npts = len(batch) * batch[0][0].query_shape[0] * batch[0][0].query_shape[1]
                self.stats.points_queried += npts
                for k, g in enumerate(self._stage_grids(batch[0][0], layout)):
                    self.stats.stage_points[k] += len(batch) * g[0].count * g[1].count if g else npts
                i += len(batch)
        self.stats.batch_size, self.stats.query_batch = self.batch_sizes()
        return acc

    def _stage_grids(self, win: Window, layout: WindowLayout) -> list[tuple[StageAxis, StageAxis] | None]:
        """Per encoder stage: the window's (rows, cols) stage lattice when that stage is evaluated more coarsely
        than the queried points (multi-rate), else None (evaluated at every queried point)."""
        step = layout.lattice[0].step
        return [win.stage_grid(layout.lattice, sp) if sp > step else None for sp in self.stage_spacings]

    def _predict_batch(self, image: np.ndarray, layout: WindowLayout, windows: Sequence[Window],
                       query_batch: int) -> dict[str, Tensor]:
        """Probabilities ``(B, C, qh, qw)`` float32 on the device for each network (key: its task), for windows
        of one group (same query shape and stage lattices); with ``uncertainty``, for a network with an AOA also
        its ``visual_emb`` ``(B, E, qh, qw)`` float32 (key ``<task>_emb``).

        Raises ``torch.OutOfMemoryError`` untouched (the caller halves and retries); nothing is accumulated
        before every network has finished the batch, so a retry never counts a window twice.
        """
        qh, qw = windows[0].query_shape
        imgs = self._stager.upload(image, windows)
        if self.cuda and self.config.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        coords = self._pixel_coords(windows).to(self.device, non_blocking=True)
        stages = self._stage_inputs(windows, layout)
        n = qh * qw
        step = max(1, query_batch // len(windows))
        out: dict[str, Tensor] = {}
        for task, model in self.models.items():
            with self._autocast():
                feats = encode_windows(self._encoders[task], imgs, self.batch_sizes()[0] if self.config.compile
                                       else None)
                lattices = {"sat": self._stage_lattices(model.sat_encoder, feats.sat, stages, step),
                            "cov": self._stage_lattices(model.cov_encoder, feats.cov, stages, step)}
            probs = torch.empty((len(windows), n, model.config.out_dim), dtype=torch.float32, device=self.device)
            emb = (torch.empty((len(windows), n, model.config.emb_dim), dtype=torch.float32, device=self.device)
                   if self.uncertainty and getattr(model, "aoa", None) is not None else None)
            for j in range(0, n, step):
                pts = slice(j, j + step)
                with self._autocast():
                    sat = self._stage_query(model.sat_encoder, feats.sat, lattices["sat"], stages, coords, pts)
                    cov = self._stage_query(model.cov_encoder, feats.cov, lattices["cov"], stages, coords, pts)
                    decoded = model.decode(sat, cov)
                probs[:, pts] = model.predict_proba(decoded["pred"].float())
                if emb is not None:
                    emb[:, pts] = decoded["visual_emb"].float()
            del feats, lattices
            out[task] = probs.view(len(windows), qh, qw, -1).permute(0, 3, 1, 2)
            if emb is not None:
                out[f"{task}_emb"] = emb.view(len(windows), qh, qw, -1).permute(0, 3, 1, 2)
        return out

    def _stage_inputs(self, windows: Sequence[Window],
                      layout: WindowLayout) -> list[tuple[Tensor, Tensor, Tensor] | None]:
        """Per stage, None (evaluated at the queried points) or, multi-rate, the windows' stage-lattice
        coordinates ``(B, m, 2)`` float32 and each queried point's four lattice neighbours ``(n, 4)`` int64
        with their bilinear weights ``(n, 4)`` float32 (the same for every window of a group)."""
        out: list[tuple[Tensor, Tensor, Tensor] | None] = []
        grids = [self._stage_grids(win, layout) for win in windows]  # per window, per stage
        for k, grid in enumerate(grids[0]):
            if grid is None:
                out.append(None)
                continue
            (ri, rw), (ci, cw) = grid[0].neighbours(), grid[1].neighbours()
            index = ri[:, None, :, None] * grid[1].count + ci[None, :, None, :]  # qh, qw, 2, 2
            weight = rw[:, None, :, None] * cw[None, :, None, :]
            per_window = []
            for win, win_grids in zip(windows, grids, strict=True):
                rows, cols = win_grids[k]  # type: ignore[misc]
                r = rows.g0 - win.row0 + rows.spacing * np.arange(rows.count)
                c = cols.g0 - win.col0 + cols.spacing * np.arange(cols.count)
                gy, gx = window_pixel_grid(self.config.window, r), window_pixel_grid(self.config.window, c)
                gx, gy = torch.meshgrid(gx, gy, indexing="xy")
                per_window.append(torch.stack([gx, gy], dim=-1).reshape(-1, 2))
            out.append((torch.stack(per_window).to(self.device),
                        torch.from_numpy(index.reshape(-1, 4)).to(self.device),
                        torch.from_numpy(weight.reshape(-1, 4).astype(np.float32)).to(self.device)))
        return out

    @staticmethod
    def _stage_lattices(encoder: Any, encoded: Sequence[Tensor], stages: Sequence[tuple[Tensor, Tensor, Tensor] | None],
                        step: int) -> list[Tensor | None]:
        """Each multi-rate stage's embeddings on its lattice, ``(B, m, E)`` (``step`` points per call)."""
        out: list[Tensor | None] = []
        for layer, proj, stage in zip(encoder.query_layers, encoded, stages, strict=True):
            if stage is None:
                out.append(None)
                continue
            pts = stage[0]
            out.append(torch.cat([layer.query(proj, pts[:, j:j + step]) for j in range(0, pts.shape[1], step)], 1))
        return out

    @staticmethod
    def _stage_query(encoder: Any, encoded: Sequence[Tensor], lattices: Sequence[Tensor | None],
                     stages: Sequence[tuple[Tensor, Tensor, Tensor] | None], coords: Tensor,
                     pts: slice) -> Tensor:
        """The encoder's embedding ``(B, p, E)`` at queried points ``pts``: each stage queried there or
        interpolated from its lattice, then :meth:`ImplicitEncoder.combine`."""
        embs = []
        for layer, proj, lattice, stage in zip(encoder.query_layers, encoded, lattices, stages, strict=True):
            if stage is None or lattice is None:
                embs.append(layer.query(proj, coords[:, pts]))
            else:
                index, weight = stage[1][pts], stage[2][pts]
                embs.append((lattice[:, index] * weight[None, :, :, None].to(lattice.dtype)).sum(dim=2))
        return encoder.combine(embs)

    def _pixel_coords(self, windows: Sequence[Window]) -> Tensor:
        """Window-relative (x, y) of each window's queried points, ``(B, qh * qw, 2)`` float32, row-major."""
        out = []
        for win in windows:
            rs, cs = win.local_slices()
            gx, gy = torch.meshgrid(self._grid[cs], self._grid[rs], indexing="xy")
            out.append(torch.stack([gx, gy], dim=-1).reshape(-1, 2))
        coords = torch.stack(out)
        return coords.pin_memory() if self.cuda and _can_pin() else coords

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.cuda and self.config.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


@dataclass
class _Sums:
    """Weighted sums on the output lattice ``(rows, cols)``, on the predictor's device (float32).

    ``sums[task]`` ``(C, rows, cols)`` = sum(w p); ``squares[task]`` = sum(w p²) (with uncertainty);
    ``emb_sums[task]`` ``(E, rows, cols)`` = sum(w visual_emb), only for networks with an AOA (E floats per
    lattice point: the largest accumulator, so never made without one: the reference network's E = 1024 on a
    2,500 px chunk queried every 5 px is ~1 GiB per network, allocated before the CUDA batch size is chosen from
    the free memory); ``wsum`` = sum(w).
    """

    sums: dict[str, Tensor]
    squares: dict[str, Tensor]
    emb_sums: dict[str, Tensor]
    wsum: Tensor

    @classmethod
    def zeros(cls, models: dict[str, MisoNet], shape: tuple[int, int], device: torch.device,
              uncertainty: bool) -> _Sums:
        def z(c: int) -> Tensor:
            return torch.zeros((c, *shape), dtype=torch.float32, device=device)

        return cls({t: z(m.config.out_dim) for t, m in models.items()},
                   {t: z(m.config.out_dim) for t, m in models.items()} if uncertainty else {},
                   {t: z(m.config.emb_dim) for t, m in models.items()
                    if uncertainty and getattr(m, "aoa", None) is not None},
                   torch.zeros(shape, dtype=torch.float32, device=device))

    def add(self, batch: dict[str, Tensor], k: int, dst: tuple[slice, slice], src: tuple[slice, slice],
            wt: Tensor) -> None:
        """Add window ``k`` of a batch (:meth:`MisoPredictor._predict_batch`'s output) with weights ``wt``
        (its ``src`` part lands on the lattice's ``dst``)."""
        for task, acc in self.sums.items():
            p = batch[task][k][(slice(None), *src)]
            acc[(slice(None), *dst)] += p * wt
            if task in self.squares:
                self.squares[task][(slice(None), *dst)] += p * p * wt
            if task in self.emb_sums:
                self.emb_sums[task][(slice(None), *dst)] += batch[f"{task}_emb"][k][(slice(None), *src)] * wt
        self.wsum[dst] += wt

    def mean(self, task: str, emb: bool = False) -> Tensor:
        """Weighted mean per channel (0 where no window reached)."""
        return (self.emb_sums if emb else self.sums)[task] / self.wsum.clamp_min(1e-30)

    def std(self, task: str) -> Tensor:
        """Weighted standard deviation per channel, ``sqrt(max(E[p²] - E[p]², 0))``."""
        m = self.mean(task)
        return (self.squares[task] / self.wsum.clamp_min(1e-30) - m * m).clamp_min(0).sqrt()


def normalised_entropy(prob: np.ndarray) -> np.ndarray:
    """Shannon entropy over axis 0 of ``(C, ...)`` probabilities divided by ``ln C``: float32 in [0, 1], NaN
    where any probability is NaN (0 log 0 = 0)."""
    p = np.asarray(prob, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=0) / np.log(p.shape[0])
    return np.where(np.isfinite(p).all(axis=0), np.clip(h, 0.0, 1.0), np.nan).astype(np.float32)


def card_qhat(model: MisoNet) -> float | None:
    """The conformal threshold ``qhat`` of a network's card (``card.conformal``, object or mapping), or None."""
    entry = getattr(model.card, "conformal", None) if model.card is not None else None
    if entry is None:
        return None
    qhat = entry.get("qhat") if isinstance(entry, dict) else getattr(entry, "qhat", None)
    return None if qhat is None else float(qhat)


class _HostStager:
    """Cuts windows out of the host image into a batch tensor on the device.

    On CUDA, two pinned host buffers are filled alternately and copied with ``non_blocking=True``; a CUDA
    event per buffer makes the next fill wait until that buffer's previous copy has finished. On CPU the
    batch is a plain stacked tensor.
    """

    def __init__(self, device: torch.device, window: int) -> None:
        self.device = device
        self.window = window
        self._buffers: list[Tensor | None] = [None, None]
        self._events: list[Any] = [None, None]
        self._next = 0

    def upload(self, image: np.ndarray, windows: Sequence[Window]) -> Tensor:
        """``(B, C, window, window)`` float32 on the device."""
        w = self.window
        if self.device.type != "cuda":
            return torch.from_numpy(np.stack([image[:, x.row0:x.row0 + w, x.col0:x.col0 + w] for x in windows]))
        i = self._next
        self._next ^= 1
        if self._events[i] is not None:
            self._events[i].synchronize()
        buf = self._buffers[i]
        shape = (len(windows), image.shape[0], w, w)
        if buf is None or buf.shape[0] < shape[0] or buf.shape[1:] != shape[1:]:
            buf = torch.empty(shape, dtype=torch.float32, pin_memory=_can_pin())
            self._buffers[i] = buf
        host = buf.numpy()
        for k, x in enumerate(windows):
            host[k] = image[:, x.row0:x.row0 + w, x.col0:x.col0 + w]
        dev = buf[: shape[0]].to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._events[i] = event
        return dev


def _can_pin() -> bool:
    return torch.cuda.is_available()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is a :class:`MisoError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MisoError(f"device {name!r} was asked for but no CUDA GPU is visible "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return torch.device(name)


def stack_inputs(inputs: xr.Dataset) -> np.ndarray:
    """The model's ``(19, H, W)`` float32 input stack from :func:`~miso_mapper.imagery.chunk.read_inputs`:
    ``s2`` in :data:`~miso_mapper.bands.S2_BANDS` order then ``cov`` in
    :data:`~miso_mapper.bands.COVARIATES` order (selected by name, so the Dataset's order does not matter)."""
    missing = [v for v in ("s2", "cov", "valid") if v not in inputs]
    if missing:
        raise MisoError(f"chunk inputs lack {missing}; expected the output of read_inputs")
    s2 = inputs["s2"].sel(s2_band=list(S2_BANDS)).transpose("s2_band", "y", "x").values
    cov = inputs["cov"].sel(cov_band=list(COVARIATES)).transpose("cov_band", "y", "x").values
    return np.concatenate([s2, cov], axis=0).astype(np.float32, copy=False)


def load_predictor(permafrost_checkpoint: str | os.PathLike[str] | None,
                   taxonomy_checkpoint: str | os.PathLike[str] | None,
                   config: PredictorConfig | None = None) -> MisoPredictor:
    """A :class:`MisoPredictor` from our ``.safetensors`` checkpoints (either may be ``None``).

    Raises :class:`MisoError` for a missing or unreadable checkpoint, a wrong task, or neither given.
    """
    from miso_mapper.model import load_checkpoint

    if permafrost_checkpoint is None and taxonomy_checkpoint is None:
        raise MisoError("give a permafrost checkpoint, a taxonomy checkpoint or both")
    pf = load_checkpoint(permafrost_checkpoint) if permafrost_checkpoint is not None else None
    tx = load_checkpoint(taxonomy_checkpoint) if taxonomy_checkpoint is not None else None
    return MisoPredictor(pf, tx, config)

