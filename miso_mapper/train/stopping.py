"""The early-stopping rule: stop after ``patience`` epochs without an improvement of a validation score."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class EarlyStopping:
    """Counts epochs since a score (lower is better) last improved by more than ``min_delta``.

    The plateau learning-rate schedule uses the same rule to decide when to lower the rate.
    """

    patience: int
    """epochs without improvement after which :attr:`should_stop` is true."""
    min_delta: float = 0.0
    """an improvement must lower the best score by more than this."""
    best: float = math.inf
    """the best score seen so far."""
    bad_epochs: int = 0
    """epochs since the last improvement."""

    def observe(self, score: float) -> bool:
        """Record one epoch's ``score``; True when it improved on the best (which it then becomes)."""
        if score < self.best - self.min_delta:
            self.best, self.bad_epochs = score, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed without an improvement."""
        return self.bad_epochs >= self.patience
