"""Training losses of MISO, as the reference (``MISO/models/losses.py``) combines them for the c19 configs.

* permafrost (``aksdb_pf1m_bin``): ``BCE(pred) + 0.1 InfoNCE(sat_emb, cov_emb) + 0.1 InfoNCE(visual_emb, geo_emb)``
* taxonomy (``tax_order``): ``CE(pred) + CE(geo_pred) + 0.1 InfoNCE(sat_emb, cov_emb)``
  (the reference config also lists ``vg_nce``, a name its loss code does not know, so it has no effect).

Supervised terms use only labelled points: the reference pads each window with unlabelled points (label
``-999``) that take part in the contrastive terms only. The reference's supervised terms are unweighted
(``nn.BCEWithLogitsLoss()`` / ``nn.CrossEntropyLoss()`` without weights); :func:`class_weights` adds the
usual correction for class imbalance as an option (``train.class_weights``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

#: Label value of unlabelled (pseudo) points.
UNLABELLED = -999.0
#: Weight of each contrastive term and its temperature.
NCE_WEIGHT = 0.1
NCE_TEMPERATURE = 0.1


def info_nce(a: Tensor, b: Tensor, temperature: float = NCE_TEMPERATURE) -> Tensor:
    """Symmetric InfoNCE between paired embeddings, negatives taken across windows at the same point slot.

    Args:
        a, b: ``(B, N, C)`` float (or ``(B, C)``, read as N = 1): ``a[i, n]`` and ``b[i, n]`` are a positive
            pair; ``b[j, n]`` for ``j != i`` are the negatives of ``a[i, n]`` (and vice versa).
        temperature: divides the cosine similarities.

    Returns:
        Scalar: ``CE(a->b) + CE(b->a)``, each a mean over the ``B * N`` anchors (the sum of both directions,
        as the reference's ``NCELoss``).
    """
    if a.shape != b.shape:
        raise ValueError(f"paired embeddings differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 2:
        a, b = a[:, None], b[:, None]
    bsz, n, _ = a.shape
    an = F.normalize(a, dim=-1).transpose(0, 1)  # N, B, C
    bn = F.normalize(b, dim=-1).transpose(0, 1)
    logits = torch.bmm(an, bn.transpose(1, 2)) / temperature  # N, B, B: [n, i, j] = cos(a_i, b_j)
    labels = torch.arange(bsz, device=a.device).repeat(n)
    return (F.cross_entropy(logits.reshape(n * bsz, bsz), labels)
            + F.cross_entropy(logits.transpose(1, 2).reshape(n * bsz, bsz), labels))


def class_weights(labels: np.ndarray, n_classes: int, rule: str) -> np.ndarray | None:
    """Loss weight of each class from the training labels' counts; None for ``rule='none'`` (unweighted).

    Args:
        labels: (n,) class indices (0/1 for permafrost); values <= -999 (unlabelled) are ignored.
        n_classes: k (2 for permafrost, 7 for soil order).
        rule: ``'balanced'``: ``n / (k_present * n_c)`` (scikit-learn's ``class_weight='balanced'`` over the
            classes present, so the mean weight over the training points is 1); ``'sqrt'``: its square root
            (a milder correction); ``'none'``.

    Returns:
        (k,) float32; a class absent from the labels gets weight 1 (it never enters the loss).
    """
    if rule == "none":
        return None
    y = np.asarray(labels)
    y = y[y > UNLABELLED].astype(np.int64)
    counts = np.bincount(y, minlength=n_classes)[:n_classes].astype(np.float64)
    present = counts > 0
    weights = np.ones(n_classes)
    weights[present] = y.size / (present.sum() * counts[present])
    if rule == "sqrt":
        weights = np.sqrt(weights)
    elif rule != "balanced":
        raise ValueError(f"unknown class-weight rule {rule!r}")
    return weights.astype(np.float32)


def task_loss(logits: Tensor, labels: Tensor, task: str, weights: Tensor | None = None) -> Tensor:
    """Supervised loss on labelled points.

    Args:
        logits: ``(B, N, 1)`` (permafrost) or ``(B, N, 7)`` (taxonomy).
        labels: ``(B, N)`` or ``(B, N, 1)`` float; 0/1 for permafrost, class index for taxonomy,
            :data:`UNLABELLED` (any value <= -999) for points without a label.
        task: ``'permafrost'`` (BCE with logits) or ``'taxonomy'`` (cross-entropy).
        weights: optional ``(k,)`` per-class weights (k = 2 for permafrost) from :func:`class_weights`;
            each point's loss is multiplied by its class's weight.

    Returns:
        Scalar mean over labelled points of the (weighted) per-point loss — divided by the number of points,
        not by the sum of weights, so balanced weights keep the loss's scale; 0 (still attached to the graph)
        when there are none.
    """
    out_dim = logits.shape[-1]
    logits = logits.reshape(-1, out_dim)
    labels = labels.reshape(-1)
    mask = labels > UNLABELLED
    if not bool(mask.any()):
        return logits.sum() * 0.0
    target = labels[mask]
    if task == "permafrost":
        per_point = F.binary_cross_entropy_with_logits(logits[mask, 0], target.to(logits.dtype), reduction="none")
    elif task == "taxonomy":
        per_point = F.cross_entropy(logits[mask], target.long(), reduction="none")
    else:
        raise ValueError(f"unknown task {task!r}")
    if weights is not None:
        per_point = per_point * weights.to(per_point)[target.long()]
    return per_point.mean()


def miso_loss(outputs: dict[str, Tensor], labels: Tensor, task: str,
              weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Total training loss of the reference configuration for ``task`` and its parts (as floats, for logs).

    Args:
        outputs: from :meth:`MisoNet.forward` with ``geo_coords`` given (needs ``pred``, ``sat_emb``,
            ``cov_emb``, and ``visual_emb``/``geo_emb`` (permafrost) or ``geo_pred`` (taxonomy)).
        labels: ``(B, N)`` as in :func:`task_loss`.
        task: ``'permafrost'`` or ``'taxonomy'``.
        weights: per-class weights of the supervised terms (:func:`task_loss`); None = unweighted (reference).
    """
    base = task_loss(outputs["pred"], labels, task, weights)
    parts: dict[str, Tensor] = {"base": base, "sat_cov_nce": info_nce(outputs["sat_emb"], outputs["cov_emb"])}
    total = base + NCE_WEIGHT * parts["sat_cov_nce"]
    if task == "permafrost":
        parts["visual_geo_nce"] = info_nce(outputs["visual_emb"], outputs["geo_emb"])
        total = total + NCE_WEIGHT * parts["visual_geo_nce"]
    else:
        parts["geo"] = task_loss(outputs["geo_pred"], labels, task, weights)
        total = total + parts["geo"]
    return total, {k: float(v.detach()) for k, v in parts.items()} | {"total": float(total.detach())}
