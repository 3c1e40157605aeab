"""What a model file is, told by its first bytes, so that no file is handed to a reader that could run code.

Pickles (``torch.save``, ``joblib.dump``, ``pickle.dump``) run code while they are read; the only model
formats this package reads are safetensors (MISO checkpoints) and skops (RF-11), and both are recognised here
before any reader sees the file.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from pathlib import Path
from typing import Literal

FileKind = Literal["safetensors", "skops", "zip", "pickle", "joblib", "empty", "other"]

#: First bytes of the files ``joblib.dump(..., compress=...)`` writes (zlib, gzip, bz2, xz, lzma, lz4) and of
#: joblib's own legacy compressed format; the payload inside each is a pickle.
_JOBLIB_MAGIC = (b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00", b"\x04\x22\x4d\x18", b"ZF")

#: What each kind is, for error messages.
DESCRIPTION: dict[str, str] = {
    "safetensors": "a safetensors file",
    "skops": "a skops file",
    "zip": "a zip archive (e.g. a PyTorch .pth/.pt saved by torch.save)",
    "pickle": "a Python pickle (e.g. torch.save's legacy format, joblib or pickle)",
    "joblib": "a compressed joblib pickle",
    "empty": "an empty file",
    "other": "of an unknown format",
}


def file_kind(path: Path) -> FileKind:
    """The format of ``path`` by its magic bytes (the file is opened, never unpickled).

    ``skops`` is a zip holding skops' ``schema.json``; any other zip is ``zip``. ``pickle`` is a file starting
    with the pickle protocol-2+ header ``0x80``.
    """
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "skops" if _has_skops_schema(path) else "zip"
    # before the one-byte magics: a safetensors file starts with its header length, which may begin with any byte
    if len(head) == 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < path.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"
    if head.startswith(_JOBLIB_MAGIC):
        return "joblib"
    return "other"


def _has_skops_schema(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return "schema.json" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (streamed; the one file hash of the package: checkpoints, imports, inits)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
