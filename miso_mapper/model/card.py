"""A checkpoint's model card, read and checked without torch and without the weights.

Our checkpoint format (:mod:`miso_mapper.model.checkpoint`) is one ``.safetensors`` file whose header metadata
holds the JSON :class:`ModelCard` under ``miso_model_card``. Reading the card touches only the file's header,
so ``validate``, ``plan`` and the ``run`` client check a checkpoint (:func:`check_checkpoint`) in milliseconds
and before any work, and ``plan`` stays torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.errors import MisoError
from miso_mapper.filekind import DESCRIPTION, file_kind
from miso_mapper.model.config import PRESET_NAMES, MisoNetConfig, PresetName, Task

CARD_KEY = "miso_model_card"
FORMAT_VERSION = 1
PRESETS: tuple[PresetName, ...] = PRESET_NAMES


class InitRecord(BaseModel):
    """Where a trained network's starting weights came from (``train.init``)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["satlas", "checkpoint"] = Field(description="SatlasPretrain backbone or one of our checkpoints")
    file: str = Field(description="file name (without its folder)")
    sha256: str = Field(description="hex sha256 of the file's bytes")
    loaded: int = Field(ge=0, description="tensors copied into the network")
    skipped: int = Field(ge=0, description="tensors of the file not used (Satlas: patch embedding, FPN, heads)")


class AoaRecord(BaseModel):
    """The area-of-applicability sidecar of a checkpoint (:mod:`miso_mapper.model.aoa`), as the card records it."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="sidecar file name, next to the checkpoint (<stem>.aoa.safetensors)")
    sha256: str = Field(description="hex sha256 of the sidecar's bytes")
    threshold: float = Field(ge=0, description="dissimilarity index above which a pixel is outside the area")
    method: str = Field(description="how it was fitted ('cast-di': Meyer & Pebesma 2021, CAST's trainDI/aoa)")


class CalibrationRecord(BaseModel):
    """How a network's probabilities were calibrated (``train.calibration``; :mod:`miso_mapper.model.calibration`)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["temperature", "none"] = Field(description="'temperature' scaling or 'none' (T = 1)")
    temperature: float = Field(1.0, gt=0, description="T: the head's logits (plus class_bias) are divided by T "
                               "before the sigmoid / softmax")
    n: int = Field(0, ge=0, description="validation points T was fitted on")


class ConformalRecord(BaseModel):
    """Split-conformal prediction sets of a soil-order network (``train.conformal_coverage``;
    :mod:`miso_mapper.model.conformal`)."""

    model_config = ConfigDict(extra="forbid")

    coverage: float = Field(gt=0, lt=1, description="nominal coverage: share of points whose set holds the truth")
    qhat: float = Field(ge=0, le=1, description="the set of a pixel is {c : p_c >= 1 - qhat} (calibrated p)")
    n: int = Field(ge=0, description="validation points qhat was computed on")
    score: Literal["lac"] = Field("lac", description="conformity score: 'lac' = 1 - p_true")


class ModelCard(BaseModel):
    """What a checkpoint is: the network config and what its inputs and outputs mean."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    config: MisoNetConfig = Field(default_factory=MisoNetConfig)
    sat_bands: tuple[str, ...] = S2_BANDS
    covariates: tuple[str, ...] = COVARIATES
    normalisation: str = Field("reference", description="name of the input normalisation the weights expect")
    class_names: tuple[str, ...] = ()
    training_data_hash: str | None = None
    decision_threshold: float | None = Field(
        None, ge=0, le=1, description="permafrost networks: P(permafrost) >= this is mapped as permafrost; "
        "None = 0.5"
    )
    class_bias: tuple[float, ...] | None = Field(
        None, description="soil-order networks: added to the head's logits before the softmax, so that the "
        "predicted classes' frequencies match the training labels' (train.class_prior: match); None = no shift"
    )
    calibration: CalibrationRecord | None = Field(
        None, description="temperature scaling of the probabilities (train.calibration); None = not calibrated")
    conformal: ConformalRecord | None = Field(
        None, description="soil order: conformal prediction sets at the stored coverage; None = no sets")
    metrics: dict[str, float] = Field(default_factory=dict)
    source: str = Field("", description="where the weights came from (training run id, imported file)")
    source_sha256: str | None = Field(None, description="hex sha256 of the imported file (checkpoint import)")
    init: InitRecord | None = Field(None, description="the weights training started from (train.init)")
    aoa: AoaRecord | None = Field(None, description="the area-of-applicability sidecar written by train; None = "
                                  "none (the AOA layers are then no data)")
    created: str = ""
    software_version: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


def read_model_card(path: str | os.PathLike[str]) -> ModelCard:
    """The :class:`ModelCard` of a checkpoint written by :func:`~miso_mapper.model.checkpoint.save_checkpoint`.

    Only the safetensors header is read. A missing file, a pickle (``.pth``), a truncated or foreign file and
    a file without a valid card raise :class:`MisoError` naming the file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MisoError(f"checkpoint {path} does not exist or is not a file")
    kind = file_kind(path)
    if kind != "safetensors":
        hint = ("; import a reference .pth first: miso-mapper checkpoint import --from reference "
                f"{path} --task <permafrost|taxonomy> --out <name>.safetensors" if kind in ("zip", "pickle") else "")
        raise MisoError(f"{path}: {DESCRIPTION[kind]}, not a .safetensors checkpoint with a MISO model card{hint}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MisoError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if CARD_KEY not in meta:
        raise MisoError(f"{path}: safetensors file has no MISO model card (metadata key {CARD_KEY!r})")
    try:
        return ModelCard.model_validate_json(meta[CARD_KEY])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MisoError(f"{path}: invalid model card: {where}: {first['msg']}") from None


def check_checkpoint(path: str | os.PathLike[str], task: Task, size: PresetName) -> ModelCard:
    """The card of ``path`` if it is a readable checkpoint of a ``task`` network of preset ``size`` that takes
    this package's input bands; else :class:`MisoError` naming the file and the problem. Weights are not read
    (their names and shapes are checked against the card when a worker loads them)."""
    card = read_model_card(path)
    if card.config.task != task:
        raise MisoError(f"{path}: a {card.config.task} network, given as the {task} checkpoint")
    if architecture(card.config) != architecture(MisoNetConfig.preset(size, task)):
        found = next((p for p in PRESETS if architecture(card.config) == architecture(MisoNetConfig.preset(p, task))),
                     None)
        what = f"a {found!r} network" if found else "a network of no preset size"
        raise MisoError(f"{path}: {what}, but model.size is {size!r}")
    if tuple(card.sat_bands) != S2_BANDS or tuple(card.covariates) != COVARIATES:
        raise MisoError(f"{path}: the network takes other input bands ({', '.join(card.sat_bands)}; "
                        f"{', '.join(card.covariates)}) than this package reads")
    return card


def architecture(config: MisoNetConfig) -> dict[str, Any]:
    """The settings that make two networks' layers the same: ``config`` without the training-only rates
    (stochastic depth, dropout) and the trained input standardisation (two buffers, not a layer)."""
    arch = config.model_dump()
    for encoder in ("sat_encoder", "cov_encoder"):
        del arch[encoder]["drop_path"]
    del arch["location"]["dropout"]
    del arch["input_standardization"]
    return arch
