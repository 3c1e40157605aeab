"""A SatlasPretrain weights file checked without torch and without unpickling it (for ``validate``).

``torch.save`` writes a zip whose ``*/data.pkl`` holds the state dict's structure; its key names are read here
from the pickle's opcodes (:mod:`pickletools`, which never builds an object), so a missing, truncated or foreign
file and a network of the wrong size are reported in milliseconds. Shapes are checked when ``train`` starts
(:func:`miso_mapper.model.reference_io.read_satlas_backbone`).
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

from miso_mapper.errors import MisoError
from miso_mapper.filekind import DESCRIPTION, file_kind
from miso_mapper.model.config import MisoNetConfig

SATLAS_PREFIX = "backbone.backbone."
#: SatlasPretrain's Sentinel-2 Swin-v2-B: (embed_dim, depths, num_heads, window_size).
SATLAS_SWIN = (128, (2, 2, 18, 2), (4, 8, 16, 32), 8)


def satlas_architecture_problem(config: MisoNetConfig) -> str:
    """'' when SatlasPretrain weights fit ``config``'s satellite encoder, else why not (one line)."""
    s = config.sat_encoder
    if (s.embed_dim, s.depths, s.num_heads, s.window_size) == SATLAS_SWIN:
        return ""
    return (f"SatlasPretrain's Swin-v2-B needs the reference-size satellite encoder (size 'reference'); this "
            f"network's has embed_dim {s.embed_dim}, depths {list(s.depths)}")


def check_satlas_file(path: str | Path, config: MisoNetConfig) -> int:
    """The number of backbone keys (``backbone.backbone.*``) in the SatlasPretrain file ``path``.

    Raises :class:`MisoError` naming the file for a network that cannot take Satlas weights, a missing or
    empty file, a file that is not a ``torch.save`` zip, a truncated zip, or one without backbone keys.
    """
    path = Path(path)
    if not path.is_file():
        raise MisoError(f"{path} does not exist or is not a file")
    problem = satlas_architecture_problem(config)
    if problem:
        raise MisoError(f"{path}: {problem}")
    kind = file_kind(path)
    if kind != "zip":
        raise MisoError(f"{path}: {DESCRIPTION[kind]}, not a SatlasPretrain .pth (a torch.save zip archive)")
    keys = _pickled_strings(path)
    n = sum(1 for k in keys if k.startswith(SATLAS_PREFIX + "features."))
    if n == 0:
        raise MisoError(f"{path}: no keys start with {SATLAS_PREFIX!r}; not a SatlasPretrain Swin checkpoint")
    return n


def _pickled_strings(path: Path) -> list[str]:
    """Every string constant in the zip's ``data.pkl`` (the state dict's keys among them), never unpickled."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise MisoError(f"{path}: a zip archive without data.pkl, not a torch.save file")
            data = z.read(name)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise MisoError(f"{path}: truncated or damaged zip archive ({exc})") from None
    try:
        return [arg for _op, arg, _pos in pickletools.genops(data) if isinstance(arg, str)]
    except ValueError as exc:
        raise MisoError(f"{path}: damaged state dict in the archive ({exc})") from None
