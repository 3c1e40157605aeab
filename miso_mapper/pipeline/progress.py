"""What a run reports while it maps: the events the engine sends and the callbacks that receive them.

The engine (:mod:`miso_mapper.pipeline.run`) renders nothing itself. It calls a :class:`RunProgress`:
``notice`` for each one-line remark before the mapping (a done chunk sent back to pending), ``started`` once
before the first chunk is submitted (not at all when every chunk is already done), ``chunk_finished`` each
time a chunk attempt comes back, and ``finished`` once with the :class:`RunSummary`.
The base class does nothing; the command line renders a progress bar and a summary table
(:class:`miso_mapper.pipeline.commands.RichRunProgress`). Areas are in km², times in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


@dataclass
class RunSummary:
    """What a run did. Areas in km², times in seconds."""

    store: Path
    planned: int
    selected: int
    skipped: int = 0
    todo: int = 0
    """chunks this run set out to map (selected, not yet done, at most ``--max-chunks``)"""
    done: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    km2: float = 0.0
    dashboard: str | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    manifest_counts: dict[str, int] = field(default_factory=dict)
    """chunks per status in the manifest when the run ended"""

    @property
    def km2_per_hour(self) -> float:
        """Area mapped by this run per wall-clock hour of the mapping phase."""
        return self.km2 / (self.seconds / 3600) if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class RunStart:
    """The mapping phase begins: ``chunks`` chunks of ``km2`` km² in all are to be mapped."""

    workflow: str
    chunks: int
    km2: float
    dashboard: str | None = None


@dataclass(frozen=True)
class ChunkReport:
    """One chunk attempt came back.

    ``status``: ``done`` (written and recorded), ``retrying`` (failed, will be resubmitted) or ``failed``
    (failed on its last attempt). ``seconds``: wall time from this attempt's submission to its answer.
    ``result``: the worker's result dict when done (:func:`~miso_mapper.pipeline.tasks.predict_write_task`);
    ``error``: one line when not.
    """

    chunk_id: str
    status: Literal["done", "retrying", "failed"]
    attempt: int
    seconds: float
    km2: float
    result: dict[str, Any] | None = None
    error: str | None = None


class RunProgress:
    """Callbacks of a run; each does nothing here. Override the ones you need."""

    def notice(self, line: str) -> None:
        """A one-line remark for the user (e.g. a done chunk whose store files are gone goes back to pending)."""

    def started(self, start: RunStart) -> None:
        """The first chunks are about to be submitted."""

    def chunk_finished(self, report: ChunkReport) -> None:
        """A chunk attempt came back (called on the client, between submissions: keep it quick)."""

    def finished(self, summary: RunSummary) -> None:
        """The run is over and recorded in the manifest."""
