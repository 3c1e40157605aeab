"""The MISO training loop: AdamW, warm-up + cosine (or plateau) schedule, early stopping, resumable.

:func:`train_miso` runs named steps: :func:`prepare` (checks and the fixed parts of the run),
:func:`build_state` (network, optimizer, schedule, early stopping), then per epoch :func:`train_epoch`,
:func:`validate`, :func:`end_epoch` (history, best weights, schedule, stopping) and the state file
(:class:`~miso_mapper.train.state.TrainingState`), and finally :func:`training_result`.

Determinism: epoch ``e`` draws its anchors, window shifts and pseudo-points from
``numpy.random.default_rng([seed, e])`` and seeds torch (dropout, stochastic depth) with ``seed * 100003 + e``,
so an interrupted run resumed from its last state file continues exactly as the uninterrupted run would
(on CPU; CUDA kernels may add float noise).
"""

from __future__ import annotations

import hashlib
import json
import math
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
from miso_mapper.model.calibration import fit_temperature, probabilities
from miso_mapper.model.card import CalibrationRecord, ConformalRecord
from miso_mapper.model.config import SwinConfig
from miso_mapper.model.conformal import conformal_qhat
from miso_mapper.model.losses import class_weights
from miso_mapper.train.batches import ChipSampler, SampleSpec
from miso_mapper.train.chips import ChipSet
from miso_mapper.train.init import start_from
from miso_mapper.train.progress import TrainingProgress
from miso_mapper.train.schedule import LrSchedule
from miso_mapper.train.state import TrainingState, state_path
from miso_mapper.train.stopping import EarlyStopping
from miso_mapper.train.threshold import choose_threshold, match_class_prior


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


def channel_statistics(chips: ChipSet, index: np.ndarray, block_bytes: int = 32 << 20
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) standard deviation, (19,) float32 each, of the central crops of
    chips ``index``.

    Reads ``block_bytes`` of float32 crops at a time (chips in file order) and merges the blocks' float64
    means and squared deviations (Chan et al.), so memory stays flat however many chips there are.
    """
    m, s = chips.geometry.margin, chips.geometry.input_size
    c = chips.images.shape[1]
    order = np.sort(np.asarray(index, np.int64))
    per_block = max(1, block_bytes // (c * s * s * 4))
    count, mean, m2 = 0, np.zeros(c), np.zeros(c)
    for start in range(0, order.size, per_block):
        crops = np.asarray(chips.images[order[start:start + per_block], :, m:m + s, m:m + s], np.float32)
        k = crops.shape[0] * s * s
        b_mean = crops.sum(axis=(0, 2, 3), dtype=np.float64) / k
        dev = crops - b_mean.astype(np.float32)[None, :, None, None]
        b_m2 = np.square(dev, out=dev).sum(axis=(0, 2, 3), dtype=np.float64)
        delta, total = b_mean - mean, count + k
        mean, m2 = mean + delta * (k / total), m2 + b_m2 + delta**2 * (count * k / total)
        count = total
    return mean.astype(np.float32), np.sqrt(m2 / max(count, 1)).astype(np.float32)


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
    threshold: float | None = None
    """permafrost: the decision threshold on P(permafrost) chosen by ``train.threshold`` (:func:`permafrost_threshold`;
    0.5 for 'fixed' or when the rule falls back); None for soil order."""
    notes: list[str] = field(default_factory=list)
    """things the run's log should say (e.g. a threshold that fell back to 0.5)."""
    calibration: CalibrationRecord | None = None
    """the temperature scaling fitted on the validation points (``train.calibration``; also set on the model)."""
    conformal: ConformalRecord | None = None
    """soil order: the conformal sets' ``qhat`` from the validation points (``train.conformal_coverage``)."""


def run_key(task: str, cfg: TrainConfig, net: MisoNetConfig, chips: ChipSet, train_ids: np.ndarray,
            val_ids: np.ndarray, extra_ids: np.ndarray) -> str:
    """Hash of everything that defines a training run (what a state file must match to be resumed)."""
    doc = {
        "task": task,
        # the decision rules and the kept epoch are applied after training: changing them must not restart a
        # finished run
        "train": cfg.model_dump(mode="json", exclude={"directory", "num_threads", "device", "tasks", "threshold",
                                                        "class_prior", "keep", "calibration",
                                                        "conformal_coverage"}),
        "net": net.model_dump(mode="json"),
        "chips": chips.key,
        "ids": [np.asarray(a).astype(str).tolist() for a in (train_ids, val_ids, extra_ids)],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


#: Windows per forward pass when predicting at points (:func:`point_outputs`) by device type. On CPU small batches
#: are faster (compact network, one eval pass over 128 windows, 2026-11-30: batch 4 / 8 / 128 took 0.73 / 0.86 /
#: 1.54 s on 2 threads; the activations of a large batch fall out of cache); a GPU wants large ones.
EVAL_BATCH = {"cpu": 8, "cuda": 128}


def predict_points(model: MisoNet, sampler: ChipSampler, index: np.ndarray, batch: int | None = None,
                   device: torch.device | None = None, logits: bool = False) -> np.ndarray:
    """Probabilities at the points ``index`` (positions into the chips) from centred windows.

    Returns (n,) float32 permafrost probabilities or (n, 7) float32 soil-order probabilities
    (:meth:`MisoNet.predict_proba`: with the network's logit bias and temperature); with ``logits`` the head's
    logits plus the logit bias instead, before the temperature (what temperature scaling divides).
    """
    return point_outputs(model, sampler, index, batch, device, logits)[0]


@torch.no_grad()
def point_outputs(model: MisoNet, sampler: ChipSampler, index: np.ndarray, batch: int | None = None,
                  device: torch.device | None = None, logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (or logits, as :func:`predict_points`) and the visual embeddings (n, E) float32
    (``visual_emb``, what the area of applicability compares) at the points ``index``, from centred windows,
    eval mode, ``batch`` windows per pass (default :data:`EVAL_BATCH` of the device type)."""
    device = device or next(model.parameters()).device
    batch = batch or EVAL_BATCH.get(device.type, EVAL_BATCH["cuda"])
    was_training = model.training
    model.eval()
    out, emb = [], []
    for start in range(0, len(index), batch):
        b = sampler.eval_batch(index[start:start + batch])
        res = model(b.images.to(device), b.pixel.to(device), None)
        pred = res["pred"].float()
        if logits:
            bias = model.logit_bias
            pred = pred if bias is None else pred + bias.to(device=pred.device, dtype=pred.dtype)
        else:
            pred = model.predict_proba(pred)
        out.append(pred[:, 0].cpu().numpy())
        emb.append(res["visual_emb"].float()[:, 0].cpu().numpy())
    model.train(was_training)
    probs = np.concatenate(out) if out else np.zeros((0, model.config.out_dim), np.float32)
    embeddings = np.concatenate(emb) if emb else np.zeros((0, model.config.emb_dim), np.float32)
    return (probs[:, 0] if model.config.task == "permafrost" else probs), embeddings


@dataclass(frozen=True)
class TrainingSetup:
    """The fixed parts of one training run: data, settings, network config, device and sampler."""

    chips: ChipSet
    labels: np.ndarray
    """(len(chips),) float32 task labels (0/1 or class index), -999 where none."""
    train_idx: np.ndarray
    val_idx: np.ndarray
    unlabelled_idx: np.ndarray
    """(k,) int64 positions of chips without the task's label (contrastive terms only)."""
    task: str
    cfg: TrainConfig
    net: MisoNetConfig
    device: torch.device
    sampler: ChipSampler
    key: str
    """:func:`run_key` of the run: the state file it may resume."""
    chips_per_epoch: int
    steps: int
    """optimizer steps per epoch (batches, the last one possibly short)."""
    weights: np.ndarray | None = None
    """(k,) float32 loss weight per class (``train.class_weights`` of the training labels); None = unweighted."""

    @property
    def loss_weights(self) -> torch.Tensor | None:
        """:attr:`weights` as a tensor on the training device (None = unweighted)."""
        return None if self.weights is None else torch.from_numpy(self.weights).to(self.device)

    @property
    def validates(self) -> bool:
        """Whether the run has validation points (and so early stopping and best-epoch selection)."""
        return len(self.val_idx) > 0


def prepare(chips: ChipSet, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, task: str,
            cfg: TrainConfig, size: str, unlabelled_idx: np.ndarray | None = None) -> TrainingSetup:
    """Check the inputs of a run and fix its parts (see :func:`train_miso` for the arguments); sets torch's
    thread count when ``cfg.num_threads`` is given. Raises :class:`MisoError` for a run that cannot train."""
    if len(train_idx) == 0:
        raise MisoError(f"no labelled {task} training points")
    device = pick_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    net = net_config(size, task, cfg.drop_path, cfg.input_standardization)
    if net.input_size != chips.geometry.input_size:
        raise MisoError(f"chips were cut for input size {chips.geometry.input_size} px, the {size} network "
                        f"takes {net.input_size} px")
    unlabelled = np.asarray([] if unlabelled_idx is None else unlabelled_idx, np.int64)
    key = run_key(task, cfg, net, chips, chips.ids[train_idx], chips.ids[val_idx], chips.ids[unlabelled])
    spec = SampleSpec(cfg.labels_per_chip, cfg.random_pseudo_points, cfg.regular_pseudo_points)
    per_epoch = cfg.chips_per_epoch or len(train_idx)
    weights = class_weights(labels[train_idx], net.out_dim if task == "taxonomy" else 2, cfg.class_weights)
    return TrainingSetup(chips, labels, train_idx, val_idx, unlabelled, task, cfg, net, device,
                         ChipSampler(chips, labels, train_idx, spec), key, per_epoch,
                         max(1, math.ceil(per_epoch / cfg.batch_size)), weights)


def build_state(setup: TrainingSetup) -> TrainingState:
    """A fresh state: the network initialised from ``cfg.seed``, then ``cfg.init`` (with input statistics of the
    training chips when the network standardises its input), AdamW, the schedule and the early-stopping rule."""
    cfg, device = setup.cfg, setup.device
    torch.manual_seed(cfg.seed)
    model = build_model(setup.net)
    start_from(model, cfg.init)
    model = model.to(device)
    if setup.net.input_standardization:
        mean, std = channel_statistics(setup.chips, setup.train_idx)
        model.set_input_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    # fused AdamW: one kernel per step instead of a Python loop over parameters (a third of a tiny network's
    # step on CPU); same update rule, so results match the unfused optimizer to float rounding
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  fused=device.type in ("cpu", "cuda"))
    return TrainingState(model, optimizer, LrSchedule(cfg, setup.steps), EarlyStopping(cfg.patience))


def epoch_anchors(setup: TrainingSetup, rng: np.random.Generator) -> np.ndarray:
    """The chips (positions) an epoch trains on, in order: ``chips_per_epoch`` less the unlabelled share from
    the training points (:func:`labelled_anchors`), plus that share drawn from the unlabelled chips, shuffled."""
    cfg, n = setup.cfg, setup.chips_per_epoch
    n_unl = int(round(cfg.unlabelled_ratio * n)) if setup.unlabelled_idx.size else 0
    anchors = np.concatenate([labelled_anchors(setup, n - n_unl, rng),
                              rng.choice(setup.unlabelled_idx, n_unl) if n_unl else np.zeros(0, np.int64)])
    return anchors[rng.permutation(anchors.size)]


def labelled_anchors(setup: TrainingSetup, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` training points (positions): ``'uniform'`` sampling repeats or cuts the shuffled training points
    (each used equally often); ``'balanced'`` draws with replacement, each point with probability
    1 / (classes present x its class's count), so every class of the anchor's label is drawn equally often."""
    idx = setup.train_idx
    if setup.cfg.sampling == "uniform":
        return rng.permutation(np.resize(idx, n))
    y = setup.labels[idx].astype(np.int64)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    p = 1.0 / (counts.size * counts[inverse])
    return rng.choice(idx, n, p=p / p.sum())


def train_epoch(setup: TrainingSetup, state: TrainingState, progress: TrainingProgress) -> dict[str, float]:
    """One epoch of optimizer steps on epoch ``state.epoch``'s seeded draws; returns the mean loss terms as
    ``train_<term>`` (a batch of fewer than 2 chips is skipped: the contrastive loss needs negatives)."""
    cfg, device, model, epoch = setup.cfg, setup.device, state.model, state.epoch
    rng = np.random.default_rng([cfg.seed, epoch])
    torch.manual_seed(cfg.seed * 100003 + epoch)
    anchors = epoch_anchors(setup, rng)
    use_amp = cfg.amp and device.type == "cuda"
    model.train()
    sums: dict[str, float] = {}
    for step in range(setup.steps):
        part = anchors[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        if part.size < 2:
            continue
        for group in state.optimizer.param_groups:
            group["lr"] = state.schedule.lr(epoch, step)
        batch = setup.sampler.train_batch(part, rng)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = model(batch.images.to(device), batch.pixel.to(device), batch.geo.to(device))
            out = {k: v.float() for k, v in out.items()}
            loss, parts = miso_loss(out, batch.labels.to(device), setup.task, setup.loss_weights)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        state.optimizer.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        progress.step(epoch, step, parts["total"])
    return {f"train_{k}": v / setup.steps for k, v in sums.items()}


def validate(setup: TrainingSetup, model: MisoNet) -> dict[str, float]:
    """``val_loss`` (mean cross-entropy, each point weighted by its class's training loss weight, so early
    stopping follows the loss that is trained) and ``val_accuracy`` (threshold 0.5 / argmax) at the validation
    points; empty without any."""
    if not setup.validates:
        return {}
    probs = predict_points(model, setup.sampler, setup.val_idx, device=setup.device)
    y = setup.labels[setup.val_idx].astype(int)
    if setup.task == "permafrost":
        p_true = np.where(y == 1, probs, 1 - probs)
        acc = float(np.mean((probs >= 0.5) == (y == 1)))
    else:
        p_true = probs[np.arange(len(y)), y]
        acc = float(np.mean(probs.argmax(1) == y))
    w = setup.weights[y] if setup.weights is not None else np.ones(len(y))
    loss = float(-np.mean(w * np.log(np.clip(p_true, 1e-7, 1))))
    return {"val_loss": loss, "val_accuracy": acc}


def epoch_score(setup: TrainingSetup, metrics: dict[str, float], epoch: int) -> float:
    """The score (lower is better) that early stopping, the best epoch and the plateau schedule follow:
    validation loss or minus validation accuracy; without validation ``-epoch`` (the last epoch is best)."""
    if not setup.validates:
        return -epoch
    return metrics["val_loss"] if setup.cfg.early_stop_metric == "loss" else -metrics["val_accuracy"]


def end_epoch(setup: TrainingSetup, state: TrainingState, metrics: dict[str, float]) -> None:
    """Close epoch ``state.epoch`` with its ``metrics`` (completed with ``epoch`` and ``lr``): record them,
    keep the weights when the score improved, advance the schedule and the epoch; an early stop sets the
    epoch to the last one, so a resumed run does not train further."""
    epoch = state.epoch
    score = epoch_score(setup, metrics, epoch)
    metrics["epoch"] = epoch + 1
    metrics["lr"] = state.optimizer.param_groups[0]["lr"]
    state.history.append(metrics)
    if state.stopping.observe(score):
        state.keep_best(epoch + 1)
    state.schedule.end_epoch(epoch, score)
    state.epoch = epoch + 1
    if setup.validates and state.stopping.should_stop:
        state.epoch = setup.cfg.epochs


def training_result(setup: TrainingSetup, state: TrainingState, seconds: float, resumed_from: int) -> TrainResult:
    """The model with the best weights (eval mode, on CPU) and the run's history and best metrics."""
    model = state.model
    if state.best_weights is not None and setup.cfg.keep == "best":
        model.load_state_dict(state.best_weights)
    best = {}
    if state.best_epoch and setup.validates:
        best = {k: v for k, v in state.history[state.best_epoch - 1].items() if k.startswith("val_")}
    notes = class_prior_shift(setup, model)
    calibration, conformal, more = calibrate(setup, model)
    threshold, last = permafrost_threshold(setup, model)
    return TrainResult(model.cpu().eval(), state.history, state.best_epoch, best, seconds, resumed_from,
                       threshold, notes + last + more, calibration, conformal)


def permafrost_threshold(setup: TrainingSetup, model: MisoNet) -> tuple[float | None, list[str]]:
    """After training and calibration: the permafrost threshold (``train.threshold``) on the network's
    (calibrated) probabilities, and notes for the log; None for soil order.

    The 'prevalence' rule needs no label and is fitted at the held-out points: validation points and the chips
    without this task's label (never in the supervised loss), against the training labels' share; the others
    at the validation points.
    """
    if setup.task != "permafrost":
        return None, []
    cfg, train_labels = setup.cfg, setup.labels[setup.train_idx].astype(int)
    rule = cfg.threshold
    points = np.concatenate([setup.val_idx, setup.unlabelled_idx]) if rule == "prevalence" else setup.val_idx
    needed = points.size and rule != "fixed"
    probs = predict_points(model, setup.sampler, points, device=setup.device) if needed else np.zeros(0)
    share = float(np.mean(train_labels == 1)) if train_labels.size else None
    threshold, note = choose_threshold(setup.labels[points] if needed else np.zeros(0), probs, rule, share)
    return threshold, [note] if note else []


def class_prior_shift(setup: TrainingSetup, model: MisoNet) -> list[str]:
    """After training, before calibration: for soil order with ``train.class_prior: match`` the prior-matching
    logit shifts, set on ``model.logit_bias``; notes for the log.

    Fitted at the held-out points (validation points and the chips without this task's label) against the
    training labels' class shares (no label needed).
    """
    if setup.task != "taxonomy" or setup.cfg.class_prior == "none":
        return []
    train_labels = setup.labels[setup.train_idx].astype(int)
    points = np.concatenate([setup.val_idx, setup.unlabelled_idx])
    if points.size < 2 * model.config.out_dim:
        return [f"class prior: {points.size} held-out points are too few to match; not applied"]
    probs = predict_points(model, setup.sampler, points, device=setup.device)
    prior = np.bincount(train_labels, minlength=model.config.out_dim)
    model.logit_bias = torch.as_tensor(match_class_prior(probs, prior), dtype=torch.float32)
    return []


def calibrate(setup: TrainingSetup, model: MisoNet
              ) -> tuple[CalibrationRecord, ConformalRecord | None, list[str]]:
    """Temperature scaling (``train.calibration``) on the validation points' logits (with the class prior's
    shift, so the probabilities calibrated are those the map uses), set on ``model.temperature``; for soil
    order then the conformal ``qhat`` (``train.conformal_coverage``) of the calibrated probabilities there.

    Without validation points (or, permafrost, with one class only) the network stays uncalibrated (method
    'none') and has no conformal sets; a note says so.
    """
    cfg, task, val = setup.cfg, setup.task, setup.val_idx
    labels = setup.labels[val].astype(np.int64)
    logits = predict_points(model, setup.sampler, val, device=setup.device, logits=True) if val.size else None
    record, notes = CalibrationRecord(method="none", temperature=1.0, n=0), []
    if cfg.calibration == "temperature":
        if logits is None or (task == "permafrost" and np.unique(labels).size < 2):
            what = "no validation points" if logits is None else "validation points of one class"
            notes.append(f"calibration: {what}; probabilities left uncalibrated")
        else:
            t = fit_temperature(logits, labels, task)
            model.temperature = t
            record = CalibrationRecord(method="temperature", temperature=t, n=int(val.size))
    if task != "taxonomy":
        return record, None, notes
    if logits is None:
        return record, None, [*notes, "conformal sets: no validation points; none stored"]
    qhat = conformal_qhat(probabilities(logits, task, record.temperature), labels, cfg.conformal_coverage)
    if qhat >= 1.0:
        notes.append(f"conformal sets: {val.size} validation points are too few for coverage "
                     f"{cfg.conformal_coverage}; every set holds all orders")
    return record, ConformalRecord(coverage=cfg.conformal_coverage, qhat=qhat, n=int(val.size)), notes


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
    setup = prepare(chips, labels, train_idx, val_idx, task, cfg, size, unlabelled_idx)
    state = build_state(setup)
    path = state_path(run_dir) if run_dir is not None else None
    resumed_from = state.epoch if path is not None and state.load(path, setup.key) else 0
    bar = TrainingProgress(progress, description or task, cfg.epochs, setup.steps, resumed_from)
    while state.epoch < cfg.epochs:
        metrics = train_epoch(setup, state, bar)
        metrics |= validate(setup, state.model)
        end_epoch(setup, state, metrics)
        if path is not None:
            state.save(path, setup.key)
        bar.epoch(metrics)
        if on_epoch is not None:
            on_epoch(metrics["epoch"], metrics)
    bar.close()
    return training_result(setup, state, time.perf_counter() - started, resumed_from)
