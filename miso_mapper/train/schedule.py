"""The learning-rate schedule: linear warm-up from lr/100, then cosine decay or plateau reductions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from miso_mapper.config import TrainConfig
from miso_mapper.train.stopping import EarlyStopping

PLATEAU_FACTOR = 0.1
"""``schedule: plateau`` multiplies the learning rate by this at each reduction."""
PLATEAU_PATIENCE = 5
"""``schedule: plateau`` reduces after this many epochs (after warm-up) without improvement."""


def lr_at(step: int, steps_per_epoch: int, cfg: TrainConfig, reductions: int = 0) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up from lr/100, then cosine to
    ``min_lr`` at the last step (``schedule: cosine``) or ``lr * 0.1**reductions`` (``plateau``)."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return cfg.lr / 100 + (cfg.lr - cfg.lr / 100) * step / warm
    if cfg.schedule == "plateau":
        return cfg.lr * PLATEAU_FACTOR**reductions
    total = max(cfg.epochs * steps_per_epoch - warm, 1)
    t = min((step - warm) / total, 1.0)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


@dataclass
class LrSchedule:
    """The learning rate of every step of a run, and (``schedule: plateau``) its reductions so far."""

    cfg: TrainConfig
    steps_per_epoch: int
    plateau: EarlyStopping = field(default_factory=lambda: EarlyStopping(PLATEAU_PATIENCE))
    reductions: int = 0

    def lr(self, epoch: int, step: int) -> float:
        """Learning rate of step ``step`` of epoch ``epoch`` (both 0-based)."""
        return lr_at(epoch * self.steps_per_epoch + step, self.steps_per_epoch, self.cfg, self.reductions)

    def end_epoch(self, epoch: int, score: float) -> None:
        """After epoch ``epoch`` (0-based) scored ``score`` (lower is better): count a plateau reduction when
        the plateau rule has run out of patience (never during warm-up, never for ``schedule: cosine``)."""
        if self.cfg.schedule != "plateau" or epoch + 1 <= self.cfg.warmup_epochs:
            return
        if not self.plateau.observe(score) and self.plateau.should_stop:
            self.reductions += 1
            self.plateau.bad_epochs = 0
