"""Publishing a product all at once: hidden temporary names beside the product, then a rename.

A product path never holds a half-written file or folder: an error (or a kill) leaves at most a hidden
temporary name, which the writer removes on any error it sees.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path


def hidden_temp(final: Path, suffix: str) -> Path:
    """A unique hidden temporary path beside ``final`` (same folder, so the final rename is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.{suffix}")


def remove_temporaries(folder: Path, since: float) -> list[Path]:
    """Remove the hidden temporaries (:func:`hidden_temp`, and GDAL's files beside them) under ``folder`` changed
    after ``since`` (epoch seconds): what writers killed in the middle of a product left behind. Returns them."""
    name = re.compile(r"\..+\.[0-9a-f]{12}\..+")
    found = [p for p in folder.rglob(".*") if p.is_file() and name.fullmatch(p.name) and p.stat().st_mtime >= since]
    for path in found:
        path.unlink(missing_ok=True)
    return found


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a hidden temporary file and a rename."""
    tmp = hidden_temp(path, "part")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(tmp: Path, final: Path) -> None:
    """Swap the folder ``tmp`` in at ``final`` (an existing ``final`` is removed only after the swap)."""
    old = hidden_temp(final, "old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
