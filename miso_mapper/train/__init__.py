"""Training MISO: cached chips, splits, the training loop and ``miso-mapper train``.

The labelled points live in the neutral :mod:`miso_mapper.points` (evaluation and the report use them too).

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch starts its OpenMP pool:
busy-waiting worker threads slowed CPU training several-fold on a shared 2-core machine.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# ruff: noqa: E402

from miso_mapper.train.chips import ChipGeometry, ChipSet, build_chips
from miso_mapper.train.loop import TrainResult, net_config, predict_points, train_miso
from miso_mapper.train.splits import Fold, Split, load_split, make_folds, save_split

__all__ = ["ChipGeometry", "ChipSet", "Fold", "Split", "TrainResult", "build_chips",
           "load_split", "make_folds", "net_config", "predict_points", "save_split", "train_miso"]
