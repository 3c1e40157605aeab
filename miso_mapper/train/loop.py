"""The MISO training loop: AdamW, warm-up + cosine (or plateau) schedule, early stopping, resumable.

Determinism: epoch ``e`` draws its anchors, window shifts and pseudo-points from
``numpy.random.default_rng([seed, e])`` and seeds torch (dropout, stochastic depth) with ``seed * 100003 + e``,
so an interrupted run resumed from its last state file continues exactly as the uninterrupted run would
(on CPU; CUDA kernels may add float noise).

The state file (``state.pt`` in the run directory, written atomically after every epoch) holds the model,
the optimizer, the epoch, the schedule state, the best weights so far and the history; it is keyed by a
hash of everything that defines the run, so a changed run starts afresh instead of resuming a stale one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from miso_mapper.config import TrainConfig
from miso_mapper.errors import MisoError
from miso_mapper.model import MisoNet, MisoNetConfig, build_model, miso_loss
from miso_mapper.model.config import SwinConfig
from miso_mapper.train.batches import ChipSampler, SampleSpec
from miso_mapper.train.chips import ChipSet

STATE_NAME = "state.pt"
PLATEAU_FACTOR = 0.1
PLATEAU_PATIENCE = 5


def net_config(size: str, task: str, drop_path: float | None = None,
               input_standardization: bool = False) -> MisoNetConfig:
    """The network preset ``size`` for ``task``, with both encoders' stochastic depth set to ``drop_path``
    and optionally per-channel input standardisation (fitted on the training chips by :func:`train_miso`)."""
    cfg = MisoNetConfig.preset(size, task)  # type: ignore[arg-type]
    if input_standardization:
        cfg = cfg.model_copy(update={"input_standardization": True})
    if drop_path is None:
        return cfg
    sat = SwinConfig.model_validate(cfg.sat_encoder.model_dump() | {"drop_path": drop_path})
    cov = SwinConfig.model_validate(cfg.cov_encoder.model_dump() | {"drop_path": drop_path})
    return MisoNetConfig.model_validate(cfg.model_dump() | {"sat_encoder": sat, "cov_encoder": cov})


def channel_statistics(chips: ChipSet, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation, (19,) float32 each, of the central crops of chips ``index``."""
    m, s = chips.geometry.margin, chips.geometry.input_size
    crops = chips.images[np.sort(index), :, m:m + s, m:m + s].astype(np.float32)
    return crops.mean(axis=(0, 2, 3)), crops.std(axis=(0, 2, 3))


def pick_device(choice: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a MisoError."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise MisoError("train.device is 'cuda' but no CUDA device is available")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


@dataclass
class TrainResult:
    """What :func:`train_miso` produced."""

    model: MisoNet
    """the network with the best validation weights, eval mode, on CPU."""
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    """validation metrics of the best epoch (``val_loss``, ``val_accuracy``); empty without validation."""
    seconds: float = 0.0
    resumed_from: int = 0
    """epochs that were already done in the state file this run resumed from."""


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


def run_key(task: str, cfg: TrainConfig, net: MisoNetConfig, chips: ChipSet, train_ids: np.ndarray,
            val_ids: np.ndarray, extra_ids: np.ndarray) -> str:
    """Hash of everything that defines a training run (what a state file must match to be resumed)."""
    doc = {
        "task": task,
        "train": cfg.model_dump(mode="json", exclude={"directory", "num_threads", "device", "tasks"}),
        "net": net.model_dump(mode="json"),
        "chips": chips.key,
        "ids": [np.asarray(a).astype(str).tolist() for a in (train_ids, val_ids, extra_ids)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@torch.no_grad()
def predict_points(model: MisoNet, sampler: ChipSampler, index: np.ndarray, batch: int = 128,
                   device: torch.device | None = None) -> np.ndarray:
    """Probabilities at the points ``index`` (positions into the chips) from centred windows.

    Returns (n,) float32 permafrost probabilities or (n, 7) float32 soil-order probabilities.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(index), batch):
        b = sampler.eval_batch(index[start:start + batch])
        res = model(b.images.to(device), b.pixel.to(device), None)
        out.append(model.predict_proba(res["pred"].float())[:, 0].cpu().numpy())
    model.train(was_training)
    probs = np.concatenate(out) if out else np.zeros((0, model.config.out_dim), np.float32)
    return probs[:, 0] if model.config.task == "permafrost" else probs


def _val_metrics(model: MisoNet, sampler: ChipSampler, val_idx: np.ndarray, labels: np.ndarray,
                 task: str, device: torch.device) -> dict[str, float]:
    probs = predict_points(model, sampler, val_idx, device=device)
    y = labels[val_idx]
    if task == "permafrost":
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        loss = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        acc = float(np.mean((probs >= 0.5) == (y == 1)))
    else:
        loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y.astype(int)], 1e-7, 1))))
        acc = float(np.mean(probs.argmax(1) == y.astype(int)))
    return {"val_loss": loss, "val_accuracy": acc}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_miso(
    chips: ChipSet,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    task: str,
    cfg: TrainConfig,
    size: str,
    run_dir: Path | None = None,
    unlabelled_idx: np.ndarray | None = None,
    progress: Any = None,
    description: str = "",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train one MISO network for ``task`` on cached chips.

    Args:
        chips: cached chips of all points involved.
        labels: (len(chips),) float32 task labels (0/1 or class index), -999 where none.
        train_idx, val_idx: positions of the training and validation points (labelled ones).
        cfg: training settings; ``size``: network preset ('tiny', 'small', 'reference').
        run_dir: where ``state.pt`` lives (resumable); None = no state file.
        unlabelled_idx: positions of chips without the task's label usable for the contrastive terms.
        progress: a ``rich.progress.Progress`` to report on (optional).
        on_epoch: called after each epoch's state is saved with (epoch, metrics) (tests use it to interrupt).
    """
    started = time.perf_counter()
    if len(train_idx) == 0:
        raise MisoError(f"no labelled {task} training points")
    device = pick_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    net = net_config(size, task, cfg.drop_path, cfg.input_standardization)
    if net.input_size != chips.geometry.input_size:
        raise MisoError(f"chips were cut for input size {chips.geometry.input_size} px, the {size} network "
                        f"takes {net.input_size} px")
    unlabelled_idx = np.asarray([] if unlabelled_idx is None else unlabelled_idx, np.int64)
    key = run_key(task, cfg, net, chips, chips.ids[train_idx], chips.ids[val_idx], chips.ids[unlabelled_idx])
    spec = SampleSpec(cfg.labels_per_chip, cfg.random_pseudo_points, cfg.regular_pseudo_points)
    sampler = ChipSampler(chips, labels, train_idx, spec)
    n_per_epoch = cfg.chips_per_epoch or len(train_idx)
    steps = max(1, math.ceil(n_per_epoch / cfg.batch_size))

    torch.manual_seed(cfg.seed)
    model = build_model(net).to(device)
    if net.input_standardization:
        mean, std = channel_statistics(chips, train_idx)
        model.set_input_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    # fused AdamW: one kernel per step instead of a Python loop over parameters (a third of a tiny network's
    # step on CPU); same update rule, so results match the unfused optimizer to float rounding
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    state: dict[str, Any] = {"epoch": 0, "history": [], "best_metric": math.inf, "best_epoch": 0,
                             "best_state": None, "bad_epochs": 0, "reductions": 0, "plateau_best": math.inf,
                             "plateau_bad": 0}
    state_path = run_dir / STATE_NAME if run_dir is not None else None
    resumed_from = 0
    if state_path is not None and state_path.exists():
        saved = torch.load(state_path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            state = saved["state"]
            resumed_from = state["epoch"]
    use_amp = cfg.amp and device.type == "cuda"
    task_id = None
    if progress is not None:
        task_id = progress.add_task(description or task, total=cfg.epochs * steps, completed=resumed_from * steps)

    def log_desc(extra: str) -> None:
        if progress is not None:
            progress.update(task_id, description=f"{description or task} {extra}")

    stopped = False
    while state["epoch"] < cfg.epochs and not stopped:
        epoch = state["epoch"]
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100003 + epoch)
        n_unl = int(round(cfg.unlabelled_ratio * n_per_epoch)) if unlabelled_idx.size else 0
        anchors = np.concatenate([rng.permutation(np.resize(train_idx, n_per_epoch - n_unl)),
                                  rng.choice(unlabelled_idx, n_unl) if n_unl else np.zeros(0, np.int64)])
        anchors = anchors[rng.permutation(anchors.size)]
        model.train()
        sums: dict[str, float] = {}
        for step in range(steps):
            part = anchors[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            if part.size < 2:  # InfoNCE needs negatives
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch * steps + step, steps, cfg, state["reductions"])
            batch = sampler.train_batch(part, rng)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                out = model(batch.images.to(device), batch.pixel.to(device), batch.geo.to(device))
                out = {k: v.float() for k, v in out.items()}
                loss, parts = miso_loss(out, batch.labels.to(device), task)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress is not None:
                progress.advance(task_id)
                if step % 5 == 0:
                    log_desc(f"ep {epoch + 1}/{cfg.epochs} loss {parts['total']:.3f}")
        metrics = {f"train_{k}": v / steps for k, v in sums.items()}
        if len(val_idx):
            metrics |= _val_metrics(model, sampler, val_idx, labels, task, device)
            score = metrics["val_loss"] if cfg.early_stop_metric == "loss" else -metrics["val_accuracy"]
        else:
            score = -epoch  # no validation: the last epoch is the best
        metrics["epoch"] = epoch + 1
        metrics["lr"] = optimizer.param_groups[0]["lr"]
        state["history"].append(metrics)
        if score < state["best_metric"]:
            state.update(best_metric=score, best_epoch=epoch + 1, bad_epochs=0,
                         best_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        if cfg.schedule == "plateau" and epoch + 1 > cfg.warmup_epochs:
            if score < state["plateau_best"]:
                state.update(plateau_best=score, plateau_bad=0)
            else:
                state["plateau_bad"] += 1
                if state["plateau_bad"] >= PLATEAU_PATIENCE:
                    state.update(reductions=state["reductions"] + 1, plateau_bad=0)
        state["epoch"] = epoch + 1
        if len(val_idx) and state["bad_epochs"] >= cfg.patience:
            stopped = True
            state["epoch"] = cfg.epochs  # early stop is final: a resume does not train further
        if state_path is not None:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save({"key": key, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "state": state}, state_path)
        val_txt = f" val acc {metrics['val_accuracy']:.3f}" if "val_accuracy" in metrics else ""
        log_desc(f"ep {epoch + 1}/{cfg.epochs} loss {metrics.get('train_total', float('nan')):.3f}{val_txt}")
        if on_epoch is not None:
            on_epoch(epoch + 1, metrics)
    if progress is not None:
        progress.remove_task(task_id)
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    best = {}
    if state["best_epoch"] and len(val_idx):
        best = {k: v for k, v in state["history"][state["best_epoch"] - 1].items() if k.startswith("val_")}
    model = model.cpu().eval()
    return TrainResult(model, state["history"], state["best_epoch"], best,
                       time.perf_counter() - started, resumed_from)
