"""Training and evaluation batches cut from cached chips (see :mod:`miso_mapper.train.chips`).

A training sample follows the reference's recipe: a window around a labelled anchor point shifted at random
by up to the chip margin; up to ``labels_per_chip`` labelled points inside it (the anchor first, then
labelled training neighbours in random order); random unlabelled points to pad to ``labels_per_chip``;
``random_pseudo_points`` more random unlabelled points; and, with ``regular``, the 6 x 6 lattice of points
every ``crop_size / 5`` native pixels (edges included). Unlabelled points carry label -999 and feed only the
contrastive terms. Every sample has the same number of points, so a batch is a plain stack.

Coordinates: ``pixel`` (N, 2) window-relative (x, y) in [-1, 1] (x east, y south), ``geo`` (N, 2)
EPSG:3338 normalised with :func:`miso_mapper.model.normalise_3338`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from miso_mapper.model import normalise_3338
from miso_mapper.model.losses import UNLABELLED
from miso_mapper.train.chips import ChipSet

REGULAR_STEPS = 6  # lattice points per side: 0, crop/5, ..., crop


@dataclass
class SampleSpec:
    """How many points of each kind a training sample carries."""

    labels_per_chip: int = 5
    random_pseudo_points: int = 10
    regular: bool = True

    @property
    def n_points(self) -> int:
        """Points per sample N."""
        return self.labels_per_chip + self.random_pseudo_points + (REGULAR_STEPS**2 if self.regular else 0)


@dataclass
class Batch:
    """A batch of B samples of N points; tensors on CPU."""

    images: torch.Tensor
    """(B, 19, input, input) float32."""
    pixel: torch.Tensor
    """(B, N, 2) float32 window-relative coordinates in [-1, 1]."""
    geo: torch.Tensor
    """(B, N, 2) float32 normalised EPSG:3338."""
    labels: torch.Tensor
    """(B, N) float32, -999 = unlabelled."""


class ChipSampler:
    """Makes batches from a :class:`ChipSet` for one task.

    Args:
        chips: the cached chips.
        labels: (len(chips),) float32 labels of the task, -999 where a point has none.
        neighbours_of: positions (into ``chips``) of the points whose labels may supervise (the fold's
            training points with a label); only they are used as in-window neighbours.
        res: native pixel size in metres.
    """

    def __init__(self, chips: ChipSet, labels: np.ndarray, neighbours_of: np.ndarray, spec: SampleSpec,
                 res: float = 10.0) -> None:
        self.chips, self.labels, self.spec, self.res = chips, labels, spec, res
        g = chips.geometry
        self.geometry = g
        self.col = np.floor(chips.x / res).astype(np.int64)  # pixel lattice of the native grid
        self.row = np.floor(-chips.y / res).astype(np.int64)
        self.supervising = np.asarray(neighbours_of, np.int64)
        reach = g.crop_size / 2 + g.margin * g.scale + 1
        tree = cKDTree(np.column_stack([self.col[self.supervising], self.row[self.supervising]]))
        self._tree, self._reach = tree, reach

    # ---- geometry helpers --------------------------------------------------------------------------
    def _window_origin(self, anchor: int, dx: int, dy: int) -> tuple[float, float]:
        """Native (col, row) continuous position of the crop's upper-left corner (pixel-edge coordinates)."""
        g = self.geometry
        return (self.col[anchor] - g.crop_size / 2 + (dx - g.margin) * g.scale,
                self.row[anchor] - g.crop_size / 2 + (dy - g.margin) * g.scale)

    def _geo_of(self, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(k, 2) normalised EPSG:3338 of native continuous (col, row) positions."""
        x, y = normalise_3338(cols * self.res, -rows * self.res)
        return np.column_stack([x, y])

    def sample(self, anchor: int, dx: int, dy: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """One training sample: (image (19, s, s), pixel (N, 2), geo (N, 2), labels (N,))."""
        g, spec = self.geometry, self.spec
        image = self.chips.images[anchor, :, dy:dy + g.input_size, dx:dx + g.input_size]
        c0, r0 = self._window_origin(anchor, dx, dy)
        pix, geo, lab = [], [], []
        # labelled points: the anchor first (if labelled), then labelled neighbours inside the window
        cand = [anchor] if self.labels[anchor] > UNLABELLED else []
        near = self.supervising[self._tree.query_ball_point([self.col[anchor], self.row[anchor]], self._reach,
                                                            p=np.inf)]
        near = near[near != anchor]
        rng.shuffle(near)
        for k in [*cand, *near.tolist()]:
            if len(lab) >= spec.labels_per_chip:
                break
            u, v = self.col[k] + 0.5 - c0, self.row[k] + 0.5 - r0
            if 0 < u < g.crop_size and 0 < v < g.crop_size:
                pix.append((2 * u / g.crop_size - 1, 2 * v / g.crop_size - 1))
                x, y = normalise_3338(self.chips.x[k], self.chips.y[k])
                geo.append((x, y))
                lab.append(self.labels[k])
        n_random = spec.labels_per_chip - len(lab) + spec.random_pseudo_points
        uv = rng.uniform(0, g.crop_size, size=(n_random, 2))
        if spec.regular:
            steps = np.linspace(0, g.crop_size, REGULAR_STEPS)
            uu, vv = np.meshgrid(steps, steps, indexing="xy")
            uv = np.concatenate([uv, np.column_stack([uu.ravel(), vv.ravel()])])
        pixel = np.concatenate([np.asarray(pix, np.float64).reshape(-1, 2), 2 * uv / g.crop_size - 1])
        geo_all = np.concatenate([np.asarray(geo, np.float64).reshape(-1, 2),
                                  self._geo_of(c0 + uv[:, 0], r0 + uv[:, 1])])
        labels = np.concatenate([np.asarray(lab, np.float32), np.full(len(uv), UNLABELLED, np.float32)])
        return image, pixel, geo_all, labels

    def train_batch(self, anchors: np.ndarray, rng: np.random.Generator) -> Batch:
        """A batch of training samples around ``anchors`` (positions into the chips), random shifts."""
        m = self.geometry.margin
        parts = [self.sample(int(a), int(rng.integers(0, 2 * m + 1)), int(rng.integers(0, 2 * m + 1)), rng)
                 for a in anchors]
        return _stack(parts)

    def eval_batch(self, anchors: np.ndarray) -> Batch:
        """Centred windows, one query at each anchor point (N = 1): what mapping sees."""
        g = self.geometry
        m = g.margin
        images = self.chips.images[anchors, :, m:m + g.input_size, m:m + g.input_size]
        c = (g.crop_size / 2 + 0.5) / g.crop_size * 2 - 1  # the anchor pixel centre, as in production
        pixel = np.full((len(anchors), 1, 2), c)
        x, y = normalise_3338(self.chips.x[anchors], self.chips.y[anchors])
        geo = np.stack([x, y], axis=-1)[:, None]
        return Batch(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(pixel.astype(np.float32)),
                     torch.from_numpy(geo.astype(np.float32)),
                     torch.from_numpy(self.labels[anchors][:, None].astype(np.float32)))


def _stack(parts: list[tuple[np.ndarray, ...]]) -> Batch:
    images, pixel, geo, labels = (np.stack(p) for p in zip(*parts, strict=True))
    return Batch(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(pixel.astype(np.float32)),
                 torch.from_numpy(geo.astype(np.float32)), torch.from_numpy(labels))
