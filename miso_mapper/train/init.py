"""The weights a training starts from (``train.init``): SatlasPretrain's Sentinel-2 Swin or one of our checkpoints.

:func:`check_init` reads and checks the file once at the start of ``train`` (before any chip is read or cached)
and gives the :class:`~miso_mapper.model.card.InitRecord` the model cards record; :func:`start_from` applies
it to each freshly built network (a resumed run already has its weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from miso_mapper.config import InitConfig
from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNet
from miso_mapper.model.card import InitRecord


def check_init(init: InitConfig, size: str, tasks: Sequence[str]) -> InitRecord | None:
    """The record of ``init`` for networks of preset ``size`` for ``tasks``; ``None`` for random weights.

    Raises :class:`MisoError` (one line naming ``train.init.*`` and the file) for a missing, truncated or
    foreign file, a network that does not fit it, or an init checkpoint of a task that is not trained alone.
    """
    from miso_mapper.model.card import check_checkpoint
    from miso_mapper.model.reference_io import file_sha256, read_satlas_backbone
    from miso_mapper.train.loop import net_config

    try:
        if init.satlas is not None:
            return read_satlas_backbone(init.satlas, net_config(size, tasks[0]))[1]
        if init.checkpoint is not None:
            card = check_checkpoint(init.checkpoint, tasks[0], size)  # type: ignore[arg-type]
            if len(tasks) > 1:
                raise MisoError(f"{init.checkpoint}: one {card.config.task} network cannot start {len(tasks)} "
                                f"tasks; train {card.config.task} alone (--task {card.config.task})")
            return InitRecord(kind="checkpoint", file=init.checkpoint.name, sha256=file_sha256(init.checkpoint),
                              loaded=_weight_count(init.checkpoint), skipped=0)
    except MisoError as exc:
        key = "satlas" if init.satlas is not None else "checkpoint"
        raise MisoError(f"train.init.{key}: {exc}") from None
    return None


def start_from(model: MisoNet, init: InitConfig) -> InitRecord | None:
    """Load the ``init`` weights into a freshly built ``model`` in place; its record, or ``None``."""
    from miso_mapper.model.reference_io import load_init_checkpoint, load_satlas_backbone

    if init.satlas is not None:
        return load_satlas_backbone(model, init.satlas)
    if init.checkpoint is not None:
        return load_init_checkpoint(model, init.checkpoint)
    return None


def _weight_count(path: Path) -> int:
    """Tensors of a checkpoint that :func:`start_from` copies (all but the input-standardisation buffers)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return sum(1 for k in f.keys() if k not in ("input_mean", "input_std"))  # noqa: SIM118
