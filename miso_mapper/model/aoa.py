"""Area of applicability (AOA) of a trained network, in its own embedding space (Meyer & Pebesma 2021).

The dissimilarity index DI of a location is its weighted Euclidean distance, in the standardised embedding
space, to the nearest training point, divided by the mean distance between training points. The method
follows the CAST package (``trainDI``/``aoa``): each embedding dimension is standardised with the training
points' mean and standard deviation and multiplied by its importance weight; each training point's own DI is
its distance to the nearest training point of *another* cross-validation fold; the threshold is the upper
whisker of those DIs, ``Q75 + 1.5 IQR``, capped at their maximum. A location with ``DI <= threshold`` is
inside the area of applicability.

Embeddings are the network's ``visual_emb`` (the input of the visual head). CAST weights variables by the
model's variable importance; a network has none, so the importance of an embedding dimension is taken as
the L2 norm of its column in the head's first Linear layer (:func:`head_weights`): how strongly the head
reads that dimension.

The fitted AOA travels with a checkpoint as a sidecar ``<stem>.aoa.safetensors`` (:func:`aoa_path`):
tensors plus JSON metadata, never a pickle.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from miso_mapper.errors import MisoError
from miso_mapper.filekind import DESCRIPTION, file_kind

METHOD = "cast-di"
"""Name of the method stored with an AOA: CAST's DI with the fold-based training DI and whisker threshold."""
META_KEY = "miso_aoa"
FORMAT_VERSION = 1
SUFFIX = ".aoa.safetensors"
_TENSORS = ("train_embeddings", "centre", "scale", "weights")
_PAIRS_PER_CHUNK = 1 << 22  # distances held at once by index()/fit_aoa()


@dataclass
class AreaOfApplicability:
    """A fitted area of applicability: what :meth:`index` needs to give any embedding its DI."""

    train_embeddings: Tensor
    """(N, E) float32 training points' embeddings, standardised and weighted (:meth:`transform`)."""
    centre: Tensor
    """(E,) float32 mean of the raw training embeddings."""
    scale: Tensor
    """(E,) float32 standard deviation (n - 1) of the raw training embeddings; 1 where it is 0."""
    weights: Tensor
    """(E,) float32 importance weight of each dimension (:func:`head_weights`)."""
    mean_distance: float
    """mean weighted distance between two different training points (DI's unit)."""
    threshold: float
    """DI above which a location is outside the area of applicability."""
    method: str = METHOD
    train_di: np.ndarray | None = None
    """(N,) float64 the training points' own DIs when just fitted (:func:`fit_aoa`); not stored in the file."""

    @property
    def dim(self) -> int:
        """Embedding width E."""
        return int(self.centre.shape[0])

    def transform(self, embeddings: Tensor) -> Tensor:
        """Raw ``(P, E)`` embeddings -> standardised and weighted ``(P, E)`` float32 on their device."""
        dev = embeddings.device
        x = embeddings.float()
        return (x - self.centre.to(dev)) / self.scale.to(dev) * self.weights.to(dev)

    def index(self, embeddings: Tensor) -> Tensor:
        """DI ``(P,)`` float32 of raw ``(P, E)`` embeddings (distance to the nearest training point / the mean
        training distance), computed in chunks on the embeddings' device."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.dim:
            raise ValueError(f"expected (P, {self.dim}) embeddings, got {tuple(embeddings.shape)}")
        train = self.train_embeddings.to(embeddings.device)
        step = max(1, _PAIRS_PER_CHUNK // max(1, train.shape[0]))
        out = [_min_distance(self.transform(embeddings[s:s + step]), train)
               for s in range(0, embeddings.shape[0], step)]
        di = torch.cat(out) if out else embeddings.new_zeros(0)
        return (di / self.mean_distance).float()

    def to(self, device: str | torch.device) -> AreaOfApplicability:
        """This AOA with its tensors on ``device`` (so that :meth:`index` copies nothing per call)."""
        moved = {k: getattr(self, k).to(device) for k in _TENSORS}
        return AreaOfApplicability(**moved, mean_distance=self.mean_distance, threshold=self.threshold,
                                   method=self.method, train_di=self.train_di)

    def inside(self, di: Tensor | np.ndarray) -> Tensor | np.ndarray:
        """Bool mask ``di <= threshold`` (same type and shape as ``di``)."""
        return di <= self.threshold


def _min_distance(a: Tensor, b: Tensor) -> Tensor:
    # the matrix-product form loses precision for near neighbours, exactly where DI is decided
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values


def head_weights(model: torch.nn.Module) -> Tensor:
    """(E,) float32 importance of each embedding dimension for a :class:`~miso_mapper.model.network.MisoNet`:
    the column L2 norms of its visual head's first Linear layer (``model.out[0].weight``, shape (H, E)).
    Stands in for CAST's variable importance."""
    weight = model.out[0].weight.detach().float().cpu()  # type: ignore[index]
    return weight.norm(dim=0)


def whisker_threshold(train_di: np.ndarray) -> float:
    """CAST's default threshold: ``Q75 + 1.5 (Q75 - Q25)`` of the training DIs (linear quantiles, as R's
    default), capped at their maximum."""
    di = np.asarray(train_di, np.float64)
    q25, q75 = np.quantile(di, [0.25, 0.75])
    return float(min(q75 + 1.5 * (q75 - q25), di.max()))


def fit_aoa(embeddings: Tensor | np.ndarray, fold_ids: np.ndarray, weights: Tensor | np.ndarray
            ) -> AreaOfApplicability:
    """Fit the AOA of ``embeddings`` (N, E) of the training points, with their cross-validation ``fold_ids``
    (N,) and dimension ``weights`` (E,); the training points' own DIs are kept in ``train_di``.

    A training point's DI is its distance to the nearest training point in another fold (to the nearest
    other point when all share one fold). Raises :class:`MisoError` for fewer than 2 points.
    """
    x = _float64(embeddings)
    folds = np.asarray(fold_ids)
    w = _float64(weights)
    n = x.shape[0]
    if n < 2:
        raise MisoError(f"area of applicability: {n} training point(s), at least 2 are needed")
    if x.ndim != 2 or w.shape != (x.shape[1],) or folds.shape != (n,):
        raise ValueError(f"embeddings {tuple(x.shape)}, fold ids {folds.shape} and weights {tuple(w.shape)} "
                         "do not fit")
    centre = x.mean(dim=0)
    scale = x.std(dim=0)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    z = (x - centre) / scale * w
    total, nearest = _pair_stats(z, folds if np.unique(folds).size > 1 else np.arange(n))
    mean_distance = total / (n * (n - 1))
    if not mean_distance > 0:
        raise MisoError("area of applicability: all training points have the same embedding")
    train_di = nearest / mean_distance
    return AreaOfApplicability(z.float(), centre.float(), scale.float(), w.float(), float(mean_distance),
                               whisker_threshold(train_di), train_di=train_di)


def _float64(a: Tensor | np.ndarray) -> Tensor:
    return a.detach().cpu().double() if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a, np.float64))


def _pair_stats(z: Tensor, group: np.ndarray) -> tuple[float, np.ndarray]:
    """Sum of all pairwise distances of ``z`` (each ordered pair once) and each row's distance to the nearest
    row of another ``group``, in row chunks."""
    g = torch.as_tensor(group.astype(np.int64))
    n = z.shape[0]
    step = max(1, _PAIRS_PER_CHUNK // n)
    total, nearest = 0.0, []
    for s in range(0, n, step):
        d = torch.cdist(z[s:s + step], z, compute_mode="donot_use_mm_for_euclid_dist")
        total += float(d.sum())
        d[g[s:s + step, None] == g[None, :]] = float("inf")
        nearest.append(d.min(dim=1).values)
    return total, torch.cat(nearest).numpy()


# ----------------------------------------------------------------------------------------------- files


def aoa_path(checkpoint: str | os.PathLike[str]) -> Path:
    """The sidecar of a checkpoint: ``<folder>/<stem>.aoa.safetensors``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + SUFFIX)


def save_aoa(aoa: AreaOfApplicability, path: str | os.PathLike[str]) -> Path:
    """Write ``aoa`` to ``path`` (safetensors: the four tensors and JSON metadata); not atomic by itself
    (:func:`~miso_mapper.model.checkpoint.save_checkpoint` writes it to a temporary name first)."""
    from safetensors.torch import save_file

    meta = {"format_version": FORMAT_VERSION, "mean_distance": aoa.mean_distance, "threshold": aoa.threshold,
            "method": aoa.method}
    tensors = {k: getattr(aoa, k).detach().cpu().float().contiguous() for k in _TENSORS}
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    return Path(path)


def load_aoa(path: str | os.PathLike[str], dim: int | None = None) -> AreaOfApplicability:
    """Read a sidecar written by :func:`save_aoa`; ``dim``: the embedding width E it must have.

    Any bad file (missing, not safetensors, truncated, without the metadata, wrong shapes or values, another
    E) raises one :class:`MisoError` line naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MisoError(f"area-of-applicability file {path} does not exist or is not a file")
    kind = file_kind(path)
    if kind != "safetensors":
        raise MisoError(f"{path}: {DESCRIPTION[kind]}, not an area-of-applicability safetensors file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k).float() for k in f.keys() if k in _TENSORS}  # noqa: SIM118
    except KeyError:
        raise MisoError(f"{path}: no area-of-applicability metadata (key {META_KEY!r})") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MisoError(f"{path}: not a readable area-of-applicability file ({exc})") from None
    return _checked(path, meta, tensors, dim)


def _checked(path: Path, meta: dict, tensors: dict[str, Tensor], dim: int | None) -> AreaOfApplicability:
    missing = [k for k in _TENSORS if k not in tensors]
    if missing:
        raise MisoError(f"{path}: area-of-applicability file lacks {', '.join(missing)}")
    emb = tensors["train_embeddings"]
    e = emb.shape[1] if emb.ndim == 2 else -1
    bad = [k for k in _TENSORS[1:] if tuple(tensors[k].shape) != (e,)]
    if e < 1 or emb.shape[0] < 1 or bad:
        shapes = ", ".join(f"{k} {list(tensors[k].shape)}" for k in _TENSORS)
        raise MisoError(f"{path}: area-of-applicability tensors have inconsistent shapes ({shapes})")
    if dim is not None and e != dim:
        raise MisoError(f"{path}: area of applicability of {e}-wide embeddings, the network's are {dim}")
    try:
        mean_distance, threshold = float(meta["mean_distance"]), float(meta["threshold"])
        method = str(meta["method"])
    except (KeyError, TypeError, ValueError):
        raise MisoError(f"{path}: area-of-applicability metadata lacks mean_distance, threshold or method") from None
    finite = all(bool(torch.isfinite(t).all()) for t in tensors.values())
    if not (finite and mean_distance > 0 and np.isfinite(threshold) and threshold >= 0):
        raise MisoError(f"{path}: area-of-applicability values are not finite or not positive")
    return AreaOfApplicability(emb, tensors["centre"], tensors["scale"], tensors["weights"], mean_distance,
                               threshold, method)
