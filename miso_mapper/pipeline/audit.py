"""Do the chunks the manifest calls ``done`` still have their bytes in the store?

``run --resume`` and ``status`` check every done chunk cheaply: each of its Zarr chunk files must exist, except
those its write left absent because they hold only no data (the manifest's ``absent_keys``). That is one walk of
the layers' folders and no data read. ``--verify`` also re-reads every done chunk and compares the sha256 of its
bytes with the manifest's checksum, which finds a changed or undecodable file as well. Rows recorded before
``absent_keys`` existed are checked by ``--verify`` only.

A chunk that fails is a :class:`Finding`; :func:`return_to_pending` sends it back to ``pending`` so the next
``run --resume`` maps it again (the write log does not count a write whose bytes changed, see
:func:`~miso_mapper.pipeline.tasks.logged_write`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from miso_mapper.pipeline.manifest import ChunkRow, Manifest, one_line_error
from miso_mapper.pipeline.store import MapStore


@dataclass(frozen=True)
class Finding:
    """A done chunk whose stored bytes are not what the manifest recorded, and why (one line)."""

    chunk_id: str
    reason: str

    def line(self) -> str:
        """``'chunk r0146c0492 back to pending: 1 Zarr chunk file(s) missing (...)'``."""
        return f"chunk {self.chunk_id} back to pending: {self.reason}"


def audit_done(manifest: Manifest, store: MapStore, verify: bool = False, threads: int = 4) -> list[Finding]:
    """The done chunks of ``manifest`` that fail the check (with ``verify``, the re-read too), in chunk order."""
    rows = manifest.rows("done")
    stored = store.stored_keys() if rows else set()
    found: dict[str, str] = {}
    for row in rows:
        if row.absent_keys is None:
            continue
        expected = set(store.zarr_chunk_keys(store.grid.chunk_by_id(row.id))) - set(row.absent_keys)
        missing = sorted(expected - stored)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            found[row.id] = f"{len(missing)} Zarr chunk file(s) missing from {store.path} ({shown})"
    if verify:
        todo = [row for row in rows if row.id not in found]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for row, reason in zip(todo, pool.map(lambda r: _reread(store, r), todo), strict=True):
                if reason is not None:
                    found[row.id] = reason
    return [Finding(row.id, found[row.id]) for row in rows if row.id in found]


def _reread(store: MapStore, row: ChunkRow) -> str | None:
    """Why the chunk's stored bytes are not the recorded ones, or None when their checksum matches."""
    try:
        got = store.checksum(store.grid.chunk_by_id(row.id))
    except Exception as exc:  # noqa: BLE001 - any decoding or I/O error means the bytes are not there
        return f"its Zarr chunks cannot be read back ({one_line_error(exc, 200)})"
    if got != row.checksum:
        return (f"its bytes no longer match the manifest's checksum (stored {got[:12]}…, recorded "
                f"{str(row.checksum)[:12]}…)")
    return None


def return_to_pending(manifest: Manifest, findings: list[Finding]) -> None:
    """Send the chunks of ``findings`` back to pending, each with its reason as the last error."""
    for finding in findings:
        manifest.return_to_pending(finding.chunk_id, finding.line())
