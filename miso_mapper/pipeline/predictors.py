"""What a worker builds to map with: how a workflow names its predictor (``model.kind``) as a :class:`PredictorSpec`.

* ``miso``: :func:`miso_mapper.inference.miso.load_predictor` on ``model.permafrost_checkpoint`` and/or
  ``model.taxonomy_checkpoint`` with ``model.predictor`` (:class:`~miso_mapper.inference.settings.PredictorConfig`)
* ``rf``: the RF-11 baseline saved at ``model.rf_model`` (:func:`miso_mapper.baseline.rf_file.load_rf`),
  mapped with the features its card names (its setting's: lon/lat degrees, none, or legacy x/y metres)
* ``synthetic``: :class:`~miso_mapper.pipeline.synthetic.SyntheticPredictor` with ``model.synthetic``, a
  deterministic stand-in for tests, benchmarks of the pipeline and the demo. **It is not a model.**

The client resolves a spec once, checking the model files as ``validate`` does
(:func:`miso_mapper.checks.model_file_problems`: readable, the right task and size, no pickle) and hashing
them, so a bad model file stops the run before the store is created or any imagery read; workers build from it
through the per-process cache (:func:`~miso_mapper.pipeline.predictor_cache.get_predictor`), so each worker
loads the model once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miso_mapper.config import GridConfig, ModelConfig
from miso_mapper.errors import MisoError
from miso_mapper.inference.predictor import Predictor
from miso_mapper.inference.settings import PredictorConfig, checked_predictor_config


@dataclass(frozen=True)
class PredictorSpec:
    """Everything a worker needs to build the predictor: kind, files with their sha256, settings."""

    kind: str
    files: dict[str, str] = field(default_factory=dict)
    """role (``permafrost``, ``taxonomy``, ``rf``) -> absolute path"""
    hashes: dict[str, str] = field(default_factory=dict)
    """role -> sha256 of the file"""
    options: dict[str, Any] = field(default_factory=dict)
    """keyword arguments of the predictor's settings (JSON values): PredictorConfig (miso), SyntheticPredictor"""
    torch_threads: int | None = None
    decision_threshold: float = 0.5
    """P(permafrost) from which the map's class is permafrost: the permafrost checkpoint card's
    ``decision_threshold`` (None there: 0.5); 0.5 for RF-11 and synthetic. Not part of :attr:`key`: it is
    read from the checkpoint, whose hash the key holds, and the predictor does not use it."""
    aoa_thresholds: dict[str, float] = field(default_factory=dict)
    """task -> the area-of-applicability threshold its checkpoint's card records (``card.aoa.threshold``; the
    store derives the AOA masks from it); empty for RF-11, synthetic and networks without an AOA. Not part of
    :attr:`key`, like ``decision_threshold``."""

    @property
    def key(self) -> str:
        """Cache key: kind, file hashes and options (not paths: the same weights anywhere are the same)."""
        return json.dumps([self.kind, sorted(self.hashes.items()), self.options], sort_keys=True, default=str)


def resolve_spec(model: ModelConfig, grid: GridConfig, torch_threads: int | None = None) -> PredictorSpec:
    """Check the model files of a workflow (:func:`~miso_mapper.checks.model_file_problems`) and hash them, and
    (MISO) that the predictor's windows fit the grid's halo and chunk size; raises :class:`MisoError` with one
    line per bad file (``field: path: problem``) or naming the bad setting."""
    from miso_mapper.checks import model_file_problems
    from miso_mapper.pipeline.store import sha256_file

    problems = model_file_problems(model, required=True)
    if problems:
        raise MisoError("\n".join(str(p) for p in problems))
    files: dict[str, Path] = {}
    options: dict[str, Any] = {}
    if model.kind == "miso":
        for role, path in (("permafrost", model.permafrost_checkpoint), ("taxonomy", model.taxonomy_checkpoint)):
            if path is not None:
                files[role] = path
        options = checked_predictor_config(model.predictor, grid.chunk_size, grid.halo).model_dump(mode="json")
    elif model.kind == "rf" and model.rf_model is not None:
        files["rf"] = model.rf_model
    elif model.kind == "synthetic":
        options = model.synthetic.model_dump(mode="json")
    hashes = {role: sha256_file(Path(p)) for role, p in files.items()}
    aoa = {role: t for role in ("permafrost", "taxonomy") if (t := _aoa_threshold(files.get(role))) is not None}
    return PredictorSpec(model.kind, {r: str(p) for r, p in files.items()}, hashes, options, torch_threads,
                         _decision_threshold(files.get("permafrost")), aoa)


def _aoa_threshold(checkpoint: Path | None) -> float | None:
    """The AOA threshold a checkpoint's model card records (``card.aoa``), or None."""
    if checkpoint is None:
        return None
    from miso_mapper.model.card import read_model_card

    record = getattr(read_model_card(checkpoint), "aoa", None)
    return None if record is None else float(record.threshold)


def _decision_threshold(permafrost_checkpoint: Path | None) -> float:
    """The threshold a permafrost checkpoint's model card names (0.5 when it names none, or without one)."""
    from miso_mapper.pipeline.store import DEFAULT_THRESHOLD, checked_threshold

    if permafrost_checkpoint is None:
        return DEFAULT_THRESHOLD
    from miso_mapper.model.card import read_model_card

    card = read_model_card(permafrost_checkpoint)
    if card.decision_threshold is None:
        return DEFAULT_THRESHOLD
    return checked_threshold(card.decision_threshold, f"{permafrost_checkpoint}: model card")


def build_predictor(spec: PredictorSpec) -> Predictor:
    """A new predictor from ``spec`` (no caching; workers use
    :func:`~miso_mapper.pipeline.predictor_cache.get_predictor`). Sets torch's thread count when the spec says."""
    if spec.torch_threads:
        import torch

        torch.set_num_threads(spec.torch_threads)
    if spec.kind == "miso":
        from miso_mapper.inference.miso import load_predictor

        return load_predictor(spec.files.get("permafrost"), spec.files.get("taxonomy"),
                              PredictorConfig(**spec.options))
    if spec.kind == "rf":
        from miso_mapper.baseline.rf_file import load_rf

        return load_rf(Path(spec.files["rf"]))
    if spec.kind == "synthetic":
        from miso_mapper.pipeline.synthetic import SyntheticPredictor

        return SyntheticPredictor(**spec.options)
    raise MisoError(f"unknown predictor kind {spec.kind!r}")
