"""``miso-mapper checkpoint import|export|show``: reference ``.pth`` files in and out, and what a checkpoint is.

Every command checks its inputs and writes ``--out`` atomically only after the weights loaded strictly, so a
failed command leaves nothing at ``--out``. An existing ``--out`` is replaced only with ``--force``.
"""

from __future__ import annotations

import os
from pathlib import Path

from miso_mapper.errors import MisoError, UsageError
from miso_mapper.model.card import PRESETS, architecture, read_model_card
from miso_mapper.model.config import MisoNetConfig


def import_command(source: str, path: Path, task: str, out: Path, size: str = "reference",
                   force: bool = False) -> Path:
    """Import a reference state dict ``path`` as our checkpoint ``out`` (see
    :func:`~miso_mapper.model.reference_io.import_reference`); returns ``out``."""
    if source != "reference":
        raise UsageError(f"--from {source!r}: only 'reference' (a state dict saved by the reference code)")
    if task not in ("permafrost", "taxonomy"):
        raise UsageError(f"--task {task!r}: permafrost or taxonomy")
    _free(out, force)
    from miso_mapper.model.reference_io import import_reference

    return import_reference(path, task, out, size=size)  # type: ignore[arg-type]


def export_command(target: str, checkpoint: Path, out: Path, force: bool = False) -> tuple[Path, list[str]]:
    """Export our checkpoint as a reference ``.pth`` (see
    :func:`~miso_mapper.model.reference_io.export_reference`); returns ``out`` and what the reference's state
    dict cannot carry (the card's decision threshold, class bias and temperature: the user must apply them by
    hand).
    """
    if target != "reference":
        raise UsageError(f"--to {target!r}: only 'reference' (a state dict the reference code loads)")
    _free(out, force)
    card = read_model_card(checkpoint)  # a foreign file fails here, naming the import command, before torch loads
    from miso_mapper.model.reference_io import export_reference

    left = []
    if card.decision_threshold not in (None, 0.5):
        left.append(f"decision threshold {card.decision_threshold:.4g} (the reference maps P >= 0.5)")
    if card.class_bias is not None:
        left.append("class bias " + " ".join(f"{v:+.3f}" for v in card.class_bias) + " (add it to the logits)")
    if card.calibration is not None and card.calibration.method == "temperature":
        left.append(f"temperature {card.calibration.temperature:.4g} (divide the logits, after any class bias)")
    return export_reference(checkpoint, out), left


def describe(path: Path) -> list[tuple[str, str]]:
    """(label, value) lines about checkpoint ``path``: task, size, parameters, source, hashes, threshold, init,
    area of applicability.
    Reads only the file's header and hashes its bytes; no weights are loaded."""
    from miso_mapper.filekind import file_sha256

    card = read_model_card(path)
    rows = [("file", str(path)), ("sha256", file_sha256(path)), ("task", card.config.task),
            ("size", preset_name(card.config)), ("parameters", f"{_parameter_count(path):,}"),
            ("classes", ", ".join(card.class_names)), ("source", card.source or "-")]
    if card.source_sha256:
        rows.append(("source sha256", card.source_sha256))
    threshold = card.decision_threshold
    rows.append(("decision threshold", "-" if threshold is None else f"{threshold:.4g}"))
    if card.class_bias is not None:
        rows.append(("class bias", " ".join(f"{v:+.3f}" for v in card.class_bias)))
    if card.calibration is not None:
        c = card.calibration
        rows.append(("calibration", "none" if c.method == "none" else
                     f"temperature {c.temperature:.4g} ({c.n} validation points)"))
    if card.conformal is not None:
        q = card.conformal
        rows.append(("conformal sets", f"coverage {q.coverage:.3g}, qhat {q.qhat:.4g} ({q.score}, {q.n} points)"))
    if card.init is not None:
        i = card.init
        rows.append(("init", f"{i.kind} {i.file} (sha256 {i.sha256[:16]}..., {i.loaded} loaded, "
                             f"{i.skipped} skipped)"))
    if card.aoa is not None:
        a = card.aoa
        rows.append(("area of applicability", f"{a.file} (sha256 {a.sha256[:16]}..., {a.method}, threshold DI "
                                              f"{a.threshold:.3g})"))
    rows.append(("input standardization", "yes" if card.config.input_standardization else "no"))
    if card.metrics:
        rows.append(("metrics", "  ".join(f"{k} {v:.4g}" for k, v in card.metrics.items())))
    rows += [("created", card.created or "-"), ("software", card.software_version or "-")]
    return rows


def preset_name(config: MisoNetConfig) -> str:
    """The preset whose architecture ``config`` has, or ``custom``."""
    arch = architecture(config)
    return next((p for p in PRESETS if architecture(MisoNetConfig.preset(p, config.task)) == arch), "custom")


def _parameter_count(path: Path) -> int:
    """Elements of every tensor in the file that is not a buffer of ours (from the safetensors header)."""
    import math

    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()  # noqa: SIM118
                   if not k.endswith(("relative_position_index", "relative_coords_table", "attn_mask", "freqs",
                                      "input_mean", "input_std")))


def _free(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise MisoError(f"--out {out} exists; add --force to replace it")
    if not os.access(out.parent if out.parent.exists() else Path.cwd(), os.W_OK):
        raise MisoError(f"--out {out}: cannot write in {out.parent}")
