"""A training's progress bar: one advance per optimizer step, the loss and validation accuracy in its text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class TrainingProgress:
    """A training's bar on a ``rich.progress.Progress`` (one advance per step), or nothing without one."""

    def __init__(self, progress: Any, description: str, epochs: int, steps: int, done_epochs: int) -> None:
        self.progress, self.description, self.epochs = progress, description, epochs
        self.task_id = (progress.add_task(description, total=epochs * steps, completed=done_epochs * steps)
                        if progress is not None else None)

    def _describe(self, extra: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, description=f"{self.description} {extra}")

    def step(self, epoch: int, step: int, loss: float) -> None:
        """Step ``step`` of 0-based epoch ``epoch`` is done, with training loss ``loss``."""
        if self.progress is not None:
            self.progress.advance(self.task_id)
            if step % 5 == 0:
                self._describe(f"ep {epoch + 1}/{self.epochs} loss {loss:.3f}")

    def epoch(self, metrics: dict[str, float]) -> None:
        """An epoch is done with ``metrics`` (as recorded in the history)."""
        val_txt = f" val acc {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
        self._describe(f"ep {metrics['epoch']}/{self.epochs} loss {metrics.get('train_total', float('nan')):.3f}"
                       f"{val_txt}")

    def close(self) -> None:
        """Remove the bar."""
        if self.progress is not None:
            self.progress.remove_task(self.task_id)


@contextlib.contextmanager
def chip_progress(console: Any) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback showing chip reading on ``console`` (None without a console)."""
    if console is None:
        yield None
        return
    from miso_mapper.progressbar import progress_bar

    with progress_bar(console) as bar:
        tasks: list[Any] = []  # added at the first batch: nothing shows when the cache is reused

        def report(done: int, total: int) -> None:
            if not tasks:
                tasks.append(bar.add_task("reading chips", total=total))
            bar.update(tasks[0], completed=done, total=total)

        yield report


def progress_bars(console: Any) -> Any:
    """The ``rich.progress.Progress`` that training bars go on (count, elapsed time, ETA; removed when done; plain
    lines off a terminal, see :mod:`miso_mapper.progressbar`), or None without a console."""
    if console is None:
        return None
    from miso_mapper.progressbar import progress_bar

    return progress_bar(console, transient=True)
