"""How a workflow names its predictor (``model.kind``), and the once-per-worker predictor cache.

* ``miso``: :func:`miso_mapper.inference.miso.load_predictor` on ``model.permafrost_checkpoint`` and/or
  ``model.taxonomy_checkpoint`` with ``model.predictor`` as :class:`~miso_mapper.inference.miso.PredictorConfig`
* ``rf``: the RF-11 baseline saved at ``model.rf_model`` (:func:`miso_mapper.baseline.rf.load_rf`)
* ``synthetic``: :class:`SyntheticPredictor`, a deterministic stand-in for tests, benchmarks of the pipeline
  and the demo. **It is not a model**: it maps a fixed random linear function of the smoothed inputs.

The client resolves a :class:`PredictorSpec` once (checking that files exist and hashing them, so a missing
checkpoint stops the run before any work); workers call :func:`get_predictor`, which loads the predictor the
first time a spec is seen in the process and keeps it, so each worker loads the model once.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from scipy.ndimage import gaussian_filter

from miso_mapper.bands import COVARIATES, S2_BANDS, SOIL_ORDERS
from miso_mapper.config import GridConfig, ModelConfig
from miso_mapper.errors import MisoError
from miso_mapper.inference.predictor import Predictor, interior_coords


@dataclass(frozen=True)
class PredictorSpec:
    """Everything a worker needs to build the predictor: kind, files with their sha256, settings."""

    kind: str
    files: dict[str, str] = field(default_factory=dict)
    """role (``permafrost``, ``taxonomy``, ``rf``) -> absolute path"""
    hashes: dict[str, str] = field(default_factory=dict)
    """role -> sha256 of the file"""
    options: dict[str, Any] = field(default_factory=dict)
    torch_threads: int | None = None

    @property
    def key(self) -> str:
        """Cache key: kind, file hashes and options (not paths: the same weights anywhere are the same)."""
        return json.dumps([self.kind, sorted(self.hashes.items()), self.options], sort_keys=True, default=str)


def resolve_spec(model: ModelConfig, grid: GridConfig, torch_threads: int | None = None) -> PredictorSpec:
    """Check the model files of a workflow and hash them, and (MISO) that the predictor settings are valid and
    its windows fit the grid's halo and chunk size; raises :class:`MisoError` naming a missing file or the
    bad setting."""
    from miso_mapper.pipeline.store import sha256_file

    files: dict[str, Path] = {}
    if model.kind == "miso":
        for role, path in (("permafrost", model.permafrost_checkpoint), ("taxonomy", model.taxonomy_checkpoint)):
            if path is not None:
                files[role] = path
        if not files:
            raise MisoError("model.kind is 'miso' but neither model.permafrost_checkpoint nor "
                            "model.taxonomy_checkpoint is set")
        _check_files(files)
        from miso_mapper.inference.miso import checked_predictor_config

        checked_predictor_config(model.predictor, grid.chunk_size, grid.halo)
    elif model.kind == "rf":
        if model.rf_model is None:
            raise MisoError("model.kind is 'rf' but model.rf_model is not set")
        files["rf"] = model.rf_model
    _check_files(files)
    hashes = {role: sha256_file(Path(p)) for role, p in files.items()}
    return PredictorSpec(model.kind, {r: str(p) for r, p in files.items()}, hashes, dict(model.predictor),
                         torch_threads)


def _check_files(files: dict[str, Path]) -> None:
    for role, path in files.items():
        if not Path(path).is_file():
            raise MisoError(f"model {role} file not found: {path}")


_CACHE: dict[str, Predictor] = {}
_LOADS: dict[str, int] = {}
_LOCK = threading.Lock()


#: glibc mallopt parameters (malloc.h) and the values set on workers by :func:`relax_malloc_trim`.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES, MMAP_THRESHOLD_BYTES = 256 << 20, 64 << 20


def relax_malloc_trim() -> bool:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` for this process (glibc only; returns whether it applied).

    Dask's nanny starts workers with that variable (good for pandas-style workloads). It also pins glibc's
    mmap threshold, so every tensor temporary above 128 KiB is a fresh mmap whose pages fault in and are
    returned at free: on the demo machine a tiny-network chunk took 81-86 s instead of 26-28 s. Raising
    both thresholds with ``mallopt`` at run time restores normal reuse of freed memory.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
                    and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to undo
        return False


def build_predictor(spec: PredictorSpec) -> Predictor:
    """A new predictor from ``spec`` (no caching; use :func:`get_predictor` on workers).

    Also calls :func:`relax_malloc_trim`, since this is the first thing a worker does before mapping.
    """
    relax_malloc_trim()
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    if spec.kind == "miso":
        from miso_mapper.inference.miso import PredictorConfig, load_predictor

        return load_predictor(spec.files.get("permafrost"), spec.files.get("taxonomy"),
                              PredictorConfig(**spec.options))
    if spec.kind == "rf":
        from miso_mapper.baseline.rf import load_rf

        return load_rf(Path(spec.files["rf"]))
    if spec.kind == "synthetic":
        return SyntheticPredictor(**spec.options)
    raise MisoError(f"unknown predictor kind {spec.kind!r}")


def get_predictor(spec: PredictorSpec) -> tuple[Predictor, int]:
    """The process's predictor for ``spec``, loaded on first use; also how many times this process loaded it."""
    with _LOCK:
        predictor = _CACHE.get(spec.key)
        if predictor is None:
            predictor = build_predictor(spec)
            _CACHE[spec.key] = predictor
            _LOADS[spec.key] = _LOADS.get(spec.key, 0) + 1
        return predictor, _LOADS[spec.key]


def clear_cache() -> None:
    """Forget every cached predictor of this process (tests)."""
    with _LOCK:
        _CACHE.clear()
        _LOADS.clear()


class SyntheticPredictor:
    """NOT A MODEL: a deterministic stand-in :class:`~miso_mapper.inference.predictor.Predictor` for tests.

    Probabilities are a fixed (``seed``) random linear map of the 19 normalised inputs (``s2``, ``cov``),
    each smoothed with a Gaussian of ``sigma`` px over the whole halo grid before the interior is cut out:
    so every output pixel depends on its neighbourhood, as MISO's do, and a pipeline that misplaced the
    interior or the halo would show seams at chunk edges. Permafrost: sigmoid; orders: softmax over 7.
    NaN where ``inputs['valid']`` is False. CPU only, about a second per 750 x 750 px chunk.
    """

    def __init__(self, seed: int = 0, sigma: float = 3.0, logit_scale: float = 1.5) -> None:
        rng = np.random.default_rng(seed)
        n_in = len(S2_BANDS) + len(COVARIATES)
        self.sigma = float(sigma)
        self.weights = rng.normal(size=(1 + len(SOIL_ORDERS), n_in)) * logit_scale / np.sqrt(n_in)
        self.bias = rng.normal(size=1 + len(SOIL_ORDERS)) * 0.5

    def predict_chunk(self, inputs: xr.Dataset, interior: tuple[slice, slice]) -> xr.Dataset:
        """See :class:`~miso_mapper.inference.predictor.Predictor`."""
        s2 = inputs["s2"].sel(s2_band=list(S2_BANDS)).transpose("s2_band", "y", "x").values
        cov = inputs["cov"].sel(cov_band=list(COVARIATES)).transpose("cov_band", "y", "x").values
        image = np.nan_to_num(np.concatenate([s2, cov]).astype(np.float32))
        smooth = gaussian_filter(image, sigma=(0, self.sigma, self.sigma), mode="nearest", truncate=3.0)
        rows, cols = interior
        z = np.einsum("ob,byx->oyx", self.weights, smooth[:, rows, cols]) + self.bias[:, None, None]
        pf = 1.0 / (1.0 + np.exp(-z[0]))
        t = z[1:] - z[1:].max(axis=0, keepdims=True)
        tx = np.exp(t)
        tx /= tx.sum(axis=0, keepdims=True)
        valid = np.asarray(inputs["valid"].values, dtype=bool)[rows, cols]
        pf = np.where(valid, pf, np.nan).astype(np.float32)
        tx = np.where(valid[None], tx, np.nan).astype(np.float32)
        return xr.Dataset(
            {"permafrost_probability": (("y", "x"), pf), "taxonomy_probability": (("class", "y", "x"), tx)},
            coords={"class": list(SOIL_ORDERS), **interior_coords(inputs, interior)},
        )


def worker_pid() -> int:
    """This process's id (run on workers by tests)."""
    return os.getpid()
