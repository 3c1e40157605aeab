"""What changes while a network trains, and the resumable state file it is saved to after every epoch.

The state file (``state.pt`` in a run folder, written atomically) holds the model, the optimizer and the
progress (epoch, history, best weights, early-stopping and plateau counters). It is keyed by a hash of
everything that defines the run, so a changed run starts afresh instead of resuming a stale one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from miso_mapper.model import MisoNet
from miso_mapper.train.schedule import LrSchedule
from miso_mapper.train.stopping import EarlyStopping

STATE_NAME = "state.pt"


def state_path(run_dir: Path) -> Path:
    """The state file of the run folder ``run_dir``."""
    return run_dir / STATE_NAME


def discard_state(run_dir: Path) -> None:
    """Delete the state file of ``run_dir`` (if any), so that its training starts afresh."""
    state_path(run_dir).unlink(missing_ok=True)


@dataclass
class TrainingState:
    """A training in progress: model, optimizer, learning-rate schedule, early stopping and history."""

    model: MisoNet
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    stopping: EarlyStopping
    epoch: int = 0
    """epochs done (set to the last epoch when early stopping ends the run)."""
    history: list[dict[str, float]] = field(default_factory=list)
    """metrics of each epoch done, in order."""
    best_epoch: int = 0
    """1-based epoch of the best score so far; 0 before the first epoch."""
    best_weights: dict[str, torch.Tensor] | None = None
    """CPU copy of the model's weights after ``best_epoch``."""

    def keep_best(self, epoch: int) -> None:
        """Record the model's current weights as the best, reached after 1-based epoch ``epoch``."""
        self.best_epoch = epoch
        self.best_weights = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def progress(self) -> dict[str, Any]:
        """Everything but model and optimizer, as stored in the state file (keys kept from earlier versions,
        so a run killed before an upgrade still resumes)."""
        return {"epoch": self.epoch, "history": self.history, "best_metric": self.stopping.best,
                "best_epoch": self.best_epoch, "best_state": self.best_weights,
                "bad_epochs": self.stopping.bad_epochs, "reductions": self.schedule.reductions,
                "plateau_best": self.schedule.plateau.best, "plateau_bad": self.schedule.plateau.bad_epochs}

    def save(self, path: Path, key: str) -> None:
        """Write the state file ``path`` for the run identified by ``key`` (atomically: a kill mid-write
        leaves the previous file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"key": key, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "state": self.progress()}, tmp)
        os.replace(tmp, path)

    def load(self, path: Path, key: str) -> bool:
        """Restore this state from ``path`` when it exists and belongs to the run ``key``; True if it did."""
        if not path.exists():
            return False
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            return False
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        p = saved["state"]
        self.epoch, self.history, self.best_epoch, self.best_weights = (p["epoch"], p["history"], p["best_epoch"],
                                                                        p["best_state"])
        self.stopping.best, self.stopping.bad_epochs = p["best_metric"], p["bad_epochs"]
        self.schedule.reductions = p["reductions"]
        self.schedule.plateau.best, self.schedule.plateau.bad_epochs = p["plateau_best"], p["plateau_bad"]
        return True
