"""Cross-validation splits: k random folds, and spatial holdouts with a guaranteed minimum distance.

Spatial scheme ``spatial-<d>``: points are first joined into groups, the connected components of the graph
linking points closer than ``d`` (single linkage, as DBSCAN with ``min_samples=2`` does in the reference).
Components holding more than half a fold are cut into square blocks of side ``block_m`` (at most ``d``),
walked in serpentine order so that consecutive blocks are neighbours. Groups are assigned to folds in
contiguous runs of about equal point counts. For each fold, the test set is the fold's points and the
training set is every other point whose distance to the nearest test point is at least ``d``; points closer
than that are left out of that fold's training ("buffer"). So, exactly:

* every point is tested in exactly one fold;
* no training point of a fold lies within ``d`` of any of that fold's test points;
* the same points, scheme, ``k`` and seed give the same folds.

When the points span little more than ``d`` (e.g. 10 km on the 10 km demo world), the buffer empties the
training set; :func:`make_folds` then raises a :class:`MisoError` saying so instead of weakening the rule.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from miso_mapper.errors import MisoError

#: A fold whose training set keeps less than this share of the non-test points is refused.
MIN_TRAIN_SHARE = 0.05


@dataclass
class Fold:
    """One fold: point ids of its training and test sets (and of the buffer left out of training)."""

    index: int
    train: list[str]
    test: list[str]
    buffer: list[str] = field(default_factory=list)


@dataclass
class Split:
    """All folds of one scheme, with what made them."""

    scheme: str
    distance_m: float | None
    seed: int
    folds: list[Fold]

    def to_json(self) -> dict:
        """Plain JSON: ``{"scheme", "distance_m", "seed", "folds": [{"index", "train", "test", "buffer"}]}``."""
        return {"scheme": self.scheme, "distance_m": self.distance_m, "seed": self.seed,
                "folds": [vars(f) for f in self.folds]}

    @classmethod
    def from_json(cls, doc: dict) -> Split:
        """Inverse of :meth:`to_json`."""
        return cls(doc["scheme"], doc["distance_m"], doc["seed"], [Fold(**f) for f in doc["folds"]])


def scheme_distance(scheme: str) -> float | None:
    """``'random'`` -> None; ``'spatial-1km'`` -> 1000.0; ``'spatial-500m'`` -> 500.0 (metres)."""
    if scheme == "random":
        return None
    m = re.fullmatch(r"spatial-(\d+(?:\.\d+)?)(km|m)", scheme)
    if not m:
        raise MisoError(f"unknown split scheme {scheme!r}: use 'random' or 'spatial-<d>km' / 'spatial-<d>m'")
    return float(m[1]) * (1000.0 if m[2] == "km" else 1.0)


def random_folds(n: int, k: int, seed: int) -> np.ndarray:
    """(n,) int fold of each point: a seeded permutation dealt into ``k`` folds of sizes differing by <= 1."""
    if n < k:
        raise MisoError(f"cannot make {k} folds of {n} points")
    order = np.random.default_rng(seed).permutation(n)
    fold = np.empty(n, np.int64)
    fold[order] = np.arange(n) % k
    return fold


def components(x: np.ndarray, y: np.ndarray, distance: float) -> np.ndarray:
    """(n,) int component label: points closer than ``distance`` (metres) share a component, transitively."""
    xy = np.column_stack([x, y])
    pairs = cKDTree(xy).query_pairs(np.nextafter(distance, 0), output_type="ndarray")
    n = len(xy)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def spatial_groups(x: np.ndarray, y: np.ndarray, distance: float, k: int, seed: int) -> tuple[np.ndarray, list]:
    """Group labels (n,) and the group order to deal into folds (see the module docstring)."""
    comp = components(x, y, distance)
    n = x.size
    cap = max(1, n // (2 * k))
    groups = np.empty(n, np.int64)
    order: list[int] = []
    rng = np.random.default_rng(seed)
    next_id = 0
    comp_ids = np.unique(comp)
    rng.shuffle(comp_ids)
    for c in comp_ids:
        members = np.flatnonzero(comp == c)
        if members.size <= cap:
            groups[members] = next_id
            order.append(next_id)
            next_id += 1
            continue
        # a large component: cut into blocks small enough to make at least ~4k blocks, walked serpentine
        cx, cy = x[members], y[members]
        span = max(cx.max() - cx.min(), cy.max() - cy.min(), 1.0)
        block = min(distance, span / math.ceil(math.sqrt(4 * k)))
        ox, oy = cx.min() - rng.uniform(0, block), cy.max() + rng.uniform(0, block)
        col = np.floor((cx - ox) / block).astype(np.int64)
        row = np.floor((oy - cy) / block).astype(np.int64)
        serp = np.where(row % 2 == 0, col, col.max() + 1 - col)
        key = row * (col.max() + 2) + serp
        for b in np.unique(key):  # ascending key = serpentine walk
            groups[members[key == b]] = next_id
            order.append(next_id)
            next_id += 1
    return groups, order


def deal_groups(groups: np.ndarray, order: list[int], k: int) -> np.ndarray:
    """(n,) fold of each point: groups taken in ``order`` fill fold 0, then 1, ... to about n/k points each."""
    sizes = np.bincount(groups)
    n = int(sizes.sum())
    fold_of_group = np.zeros(sizes.size, np.int64)
    filled, fold = 0, 0
    for g in order:
        target = (fold + 1) * n / k
        if fold < k - 1 and filled + sizes[g] / 2 > target:
            fold += 1
        fold_of_group[g] = fold
        filled += sizes[g]
    return fold_of_group[groups]


def make_folds(ids: np.ndarray, x: np.ndarray, y: np.ndarray, scheme: str, k: int = 5, seed: int = 0) -> Split:
    """The ``k`` folds of ``scheme`` ('random' or 'spatial-<d>km'/'spatial-<d>m') over the given points.

    ``ids`` (n,) str, ``x``/``y`` (n,) EPSG:3338 metres. Raises :class:`MisoError` when a spatial fold would
    be left (almost) without training points.
    """
    ids = np.asarray(ids).astype(str)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = ids.size
    distance = scheme_distance(scheme)
    if n < k:
        raise MisoError(f"cannot make {k} folds of {n} points")
    if distance is None:
        fold = random_folds(n, k, seed)
    else:
        groups, order = spatial_groups(x, y, distance, k, seed)
        fold = deal_groups(groups, order, k)
    folds = []
    tree = cKDTree(np.column_stack([x, y])) if distance is not None else None
    for f in range(k):
        test = fold == f
        if not test.any():
            raise MisoError(f"{scheme}: fold {f + 1} of {k} has no points (too few groups of points)")
        train = ~test
        buffer = np.zeros(n, bool)
        if tree is not None and distance is not None:
            near = tree.query_ball_point(np.column_stack([x[test], y[test]]), np.nextafter(distance, 0))
            close = np.zeros(n, bool)
            for hits in near:
                close[hits] = True
            buffer = train & close
            train = train & ~close
        if train.sum() < max(1, MIN_TRAIN_SHARE * (~test).sum()):
            span = max(x.max() - x.min(), y.max() - y.min()) / 1000
            raise MisoError(
                f"{scheme}: fold {f + 1} keeps {int(train.sum())} training points after removing those within "
                f"{distance / 1000:g} km of its test points; the points span only {span:.1f} km, "
                "so use a smaller distance or a larger region"
            )
        folds.append(Fold(f, ids[train].tolist(), ids[test].tolist(), ids[buffer].tolist()))
    return Split(scheme, distance, seed, folds)


def save_split(split: Split, path: Path) -> Path:
    """Write ``split`` as JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(split.to_json()))
    os.replace(tmp, path)
    return path


def load_split(path: Path) -> Split:
    """Read a split written by :func:`save_split`."""
    try:
        return Split.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MisoError(f"cannot read split file {path}: {exc}") from None


def validation_split(ids: np.ndarray, x: np.ndarray, y: np.ndarray, fraction: float, distance: float | None,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bool masks (train, val) over training points for early stopping: random, or whole spatial groups
    (components/blocks at ``min(distance, 1 km)``) when ``distance`` is given. No buffer (validation only)."""
    n = len(ids)
    val = np.zeros(n, bool)
    if fraction <= 0 or n < 10:
        return ~val, val
    rng = np.random.default_rng(seed + 7919)
    if distance is None:
        val[rng.permutation(n)[: max(1, int(round(fraction * n)))]] = True
    else:
        k = max(2, int(round(1 / fraction)))
        groups, order = spatial_groups(np.asarray(x), np.asarray(y), min(distance, 1000.0), k, seed + 7919)
        val = deal_groups(groups, order, k) == int(rng.integers(k))
    return ~val, val
