"""Fitting a trained network's area of applicability on its training points (``train`` and ``evaluate``).

The method and the sidecar file are in :mod:`miso_mapper.model.aoa`. Here: the embeddings of the training
points (the centre of each point's chip, as :func:`~miso_mapper.train.loop.predict_points` reads it) and the
cross-validation folds CAST takes the threshold from: spatial blocks of the first spatial scheme of
``evaluate.schemes`` (:func:`~miso_mapper.train.splits.spatial_groups`, no buffer), else random folds.
"""

from __future__ import annotations

import numpy as np
import torch

from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNet
from miso_mapper.model.aoa import AreaOfApplicability, fit_aoa, head_weights
from miso_mapper.train.batches import ChipSampler, SampleSpec
from miso_mapper.train.chips import ChipSet
from miso_mapper.train.splits import deal_groups, random_folds, scheme_distance, spatial_groups


def aoa_folds(x: np.ndarray, y: np.ndarray, schemes: list[str], k: int, seed: int) -> tuple[np.ndarray, str]:
    """(n,) int fold of each training point at ``x``/``y`` (EPSG:3338 m) and the name of how they were made:
    ``k`` folds of spatial blocks of the first spatial scheme in ``schemes``, else ``k`` random folds."""
    n = len(x)
    k = max(1, min(k, n))
    spatial = next((s for s in schemes if scheme_distance(s) is not None), None)
    if spatial is None or n < 2:
        return random_folds(n, k, seed), f"{k} random folds"
    groups, order = spatial_groups(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                   scheme_distance(spatial), k, seed)  # type: ignore[arg-type]
    return deal_groups(groups, order, k), f"{k} {spatial} folds"


def fit_network_aoa(model: MisoNet, chips: ChipSet, labels: np.ndarray, train_idx: np.ndarray,
                    folds: np.ndarray, device: torch.device | None = None) -> AreaOfApplicability:
    """The area of applicability of ``model`` fitted on its training points ``train_idx`` (positions into
    ``chips``) with their ``folds``; the embeddings are computed on ``device`` (default: the model's) in
    eval mode, and the model is returned to where it was."""
    from miso_mapper.train.loop import point_outputs

    home = next(model.parameters()).device
    device = device or home
    sampler = ChipSampler(chips, labels, train_idx, SampleSpec())
    _, emb = point_outputs(model.to(device), sampler, np.asarray(train_idx, np.int64), device=device)
    model.to(home)
    return fit_aoa(emb, folds, head_weights(model))


def aoa_summary(aoa: AreaOfApplicability) -> str:
    """The log line of a fitted AOA: 'AOA: threshold DI 0.xx, yy % of training points inside'."""
    inside = 100.0 * float(np.mean(aoa.train_di <= aoa.threshold)) if aoa.train_di is not None else float("nan")
    return f"AOA: threshold DI {aoa.threshold:.2f}, {inside:.0f} % of training points inside"


def try_fit_network_aoa(model: MisoNet, chips: ChipSet, labels: np.ndarray, train_idx: np.ndarray,
                        folds: np.ndarray, device: torch.device | None = None
                        ) -> tuple[AreaOfApplicability | None, str]:
    """:func:`fit_network_aoa`, or (None, why) when the points cannot give one (fewer than 2, all alike)."""
    try:
        aoa = fit_network_aoa(model, chips, labels, train_idx, folds, device)
    except MisoError as exc:
        return None, f"no area of applicability: {exc}"
    return aoa, aoa_summary(aoa)
