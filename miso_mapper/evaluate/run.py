"""``miso-mapper evaluate``: cross-validate MISO against RF-11 and a majority-class baseline.

For every split scheme (``evaluate.schemes``) and fold, MISO (``train`` settings, network ``train.size`` or
``model.size``) and RF-11 are trained on the same training points and tested on the same test points, for
each task. Chips and RF features come from one cached read of the imagery (:mod:`miso_mapper.train.chips`),
cached in the training folder. Each MISO training keeps a state file under ``<evaluate dir>/runs/``, so a
killed evaluation resumes where it stopped. Outputs in the evaluate directory: ``splits/<scheme>.json``,
``predictions.csv`` (one row per test point, model and task), ``metrics.json``, ``table1_permafrost.{csv,md}``,
``table2_taxonomy.{csv,md}``, ``regions.{csv,md}`` and ``report.html`` (paths:
:class:`miso_mapper.layout.EvaluationLayout`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.config import TrainConfig, Workflow
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout
from miso_mapper.points import PointSet, label_counts, load_points, polygon_path

MODELS = ("MISO", "RF-11", "Majority")


@dataclass
class Predictions:
    """Test-set predictions of one (scheme, task, model), pooled over the folds that ran."""

    ids: list[str] = field(default_factory=list)
    fold: list[int] = field(default_factory=list)
    truth: list[float] = field(default_factory=list)
    prob: list[np.ndarray] = field(default_factory=list)
    """per fold: (n,) P(permafrost) or (n, 7) soil-order probabilities."""
    threshold: list[float] = field(default_factory=list)
    """per fold: the permafrost decision threshold the model used (MISO's from its training; 0.5 for the
    others); empty = 0.5 for every fold."""
    aoa_di: list[np.ndarray] = field(default_factory=list)
    """MISO, per fold: (n,) dissimilarity index of the test points to the fold network's training points
    (:mod:`miso_mapper.model.aoa`); NaN where the fold had no area of applicability; empty for other models."""
    aoa_threshold: list[float] = field(default_factory=list)
    """MISO, per fold: the DI threshold of the fold's area of applicability (NaN: none)."""
    raw_prob: list[np.ndarray] = field(default_factory=list)
    """per fold, MISO: the probabilities before calibration (T = 1; :attr:`prob` are calibrated); empty for the
    models that are not calibrated."""

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(truth (n,), probabilities (n,) or (n, 7), fold (n,)) over all folds."""
        return np.asarray(self.truth), np.concatenate(self.prob), np.asarray(self.fold)

    def raw_probabilities(self) -> np.ndarray:
        """The probabilities before calibration over all folds (:attr:`prob` when there are none)."""
        return np.concatenate(self.raw_prob if self.raw_prob else self.prob)

    def point_thresholds(self) -> np.ndarray:
        """(n,) float64 decision threshold of each pooled point (its fold's)."""
        if not self.threshold:
            return np.full(len(self.truth), 0.5)
        return np.concatenate([np.full(len(p), t) for p, t in zip(self.prob, self.threshold, strict=True)])

    def aoa_arrays(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(DI (n,), inside (n,) bool) of the pooled points, or None when the model has no area of
        applicability (RF-11, majority); points of a fold without one are NaN and not inside."""
        if len(self.aoa_di) != len(self.prob) or not self.aoa_di:
            return None
        di = np.concatenate(self.aoa_di).astype(np.float64)
        thr = np.concatenate([np.full(len(d), t) for d, t in zip(self.aoa_di, self.aoa_threshold, strict=True)])
        return di, di <= thr


@dataclass
class Evaluation:
    """Everything ``evaluate`` computed (see :mod:`miso_mapper.evaluate.report` for the tables)."""

    workflow: str
    schemes: list[str]
    tasks: list[str]
    folds_run: int
    folds: int
    size: str
    epochs: int
    predictions: dict[tuple[str, str, str], Predictions]
    """(scheme, task, model) -> pooled predictions."""
    fold_metrics: dict[tuple[str, str, str], list[dict[str, Any]]]
    """(scheme, task, model) -> metrics of each fold."""
    regions: dict[str, dict[str, str]]
    """'zone' / 'mlra' -> point id -> region name."""
    split_sizes: dict[str, list[dict[str, int]]]
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    """task -> class -> labelled points in the region (:func:`~miso_mapper.points.label_counts`)."""


def run_evaluation(workflow: Workflow, quick: bool = False, console: Any = None, fresh: bool = False) -> Evaluation:
    """Run the cross-validation of ``workflow`` and write its outputs; returns the :class:`Evaluation`.

    ``quick`` runs only ``evaluate.quick_folds`` folds with ``evaluate.quick_epochs`` MISO epochs.
    ``fresh`` ignores saved MISO training states (otherwise finished/killed trainings are resumed).
    """
    import torch

    from miso_mapper.baseline.rf import RFModel, features_from_raw, rf_setting
    from miso_mapper.evaluate.metrics import binary_metrics, majority_prediction, multiclass_metrics
    from miso_mapper.evaluate.report import write_outputs
    from miso_mapper.train.applicability import aoa_folds
    from miso_mapper.train.chips import ChipGeometry, build_chips
    from miso_mapper.train.init import check_init
    from miso_mapper.train.loop import net_config
    from miso_mapper.train.parallel import ChipCacheRef, threads_per_worker, training_pool
    from miso_mapper.train.progress import chip_progress, progress_bars
    from miso_mapper.train.source import ensure_world_exists
    from miso_mapper.train.splits import load_split, make_folds, save_split, scheme_distance, validation_split
    from miso_mapper.train.state import discard_state

    started = time.perf_counter()
    echo = console.print if console is not None else (lambda *a, **k: None)
    ev = workflow.evaluate
    cfg: TrainConfig = workflow.train
    if quick:
        cfg = cfg.model_copy(update={"epochs": ev.quick_epochs, "warmup_epochs": min(cfg.warmup_epochs, 1)})
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    size = cfg.size or workflow.model.size
    check_init(cfg.init, size, list(ev.tasks))  # as `train`: a bad file fails before any chip is read
    layout = RunLayout.of(workflow)
    out = layout.evaluate
    out.directory.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    ensure_world_exists(workflow, echo)
    points = load_points(workflow, ev.tasks, echo=echo)
    geometry = ChipGeometry.for_jitter(cfg.crop_size, net_config(size, ev.tasks[0]).input_size, cfg.jitter_px)
    t0 = time.perf_counter()
    with chip_progress(console) as report:
        chips = build_chips(workflow, points, geometry, layout.train.chips, echo=echo, progress=report)
    timings["chips_s"] = time.perf_counter() - t0
    bad = ~chips.valid
    if bad.any():
        echo(f"[yellow]note:[/] {int(bad.sum())} points have no valid imagery at their pixel and are left out")
    usable = chips.valid & np.isin(np.arange(len(points)), np.flatnonzero(_any_label(points, ev.tasks)))
    regions = _regions(workflow, points)

    n_folds = ev.quick_folds if quick else ev.folds
    n_folds = min(n_folds, ev.folds)
    predictions: dict[tuple[str, str, str], Predictions] = {}
    fold_metrics: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    split_sizes: dict[str, list[dict[str, int]]] = {}
    rf_spec = rf_setting(ev.rf.setting)
    rf_line = rf_spec.describe(ev.rf.trees, ev.rf.max_depth)
    echo(rf_line, highlight=False)
    features = features_from_raw(chips.features, chips.x, chips.y, rf_spec.features, workflow.grid.crs)
    labels_of = {task: points.labels(task) for task in ev.tasks}
    jobs: list[_MisoJob] = []
    for scheme in ev.schemes:
        split_path = out.split(scheme)
        split = make_folds(points.ids[usable], points.x[usable], points.y[usable], scheme, ev.folds, ev.seed)
        if split_path.exists() and load_split(split_path).to_json() != split.to_json():
            echo(f"[yellow]note:[/] {split_path.name} differed from the folds of these points; rewritten")
        save_split(split, split_path)
        split_sizes[scheme] = [{"train": len(f.train), "test": len(f.test), "buffer": len(f.buffer)}
                               for f in split.folds]
        distance = scheme_distance(scheme)
        for fold in split.folds[:n_folds]:
            train_all = chips.index_of(fold.train)
            test_all = chips.index_of(fold.test)
            for task in ev.tasks:
                has = labels_of[task] > -999
                tr, te = train_all[has[train_all]], test_all[has[test_all]]
                if te.size == 0 or tr.size == 0:
                    continue
                keep, val = validation_split(chips.ids[tr], chips.x[tr], chips.y[tr], cfg.val_fraction,
                                             distance, ev.seed + fold.index)
                excluded = np.zeros(len(points), bool)
                excluded[test_all] = True
                run_dir = out.run(scheme, fold.index + 1, task)
                if fresh:
                    discard_state(run_dir)
                aoa_fold_ids = aoa_folds(chips.x[tr[keep]], chips.y[tr[keep]], ev.schemes, ev.folds,
                                         ev.seed + fold.index)[0]
                jobs.append(_MisoJob(scheme, fold.index, task, tr, tr[keep], tr[val],
                                     np.flatnonzero(~has & ~excluded & chips.valid), te, run_dir, aoa_fold_ids))

    workers = min(cfg.workers, max(len(jobs), 1))
    threads = threads_per_worker(cfg, workers)
    ref = ChipCacheRef.of(chips, layout.train.chips)
    progress = progress_bars(console)
    t_miso = t_rf = 0.0
    notes: list[str] = []
    with progress if progress is not None else contextlib.nullcontext(), training_pool(workers, progress) as pool:
        overall = progress.add_task("evaluate", total=len(jobs)) if progress is not None else None
        if pool is not None:
            echo(f"MISO: {len(jobs)} trainings in {workers} processes x {threads} torch thread(s)")
            pending = [_train_and_predict(job, chips, labels_of[job.task], cfg, size, pool, ref, threads)
                       for job in jobs]
            results = (r() for r in pending)
        else:
            results = (_train_and_predict(job, chips, labels_of[job.task], cfg, size, None, ref, threads,
                                          progress)() for job in jobs)
        for job, (miso_prob, miso_raw, trained, aoa_di) in zip(jobs, results, strict=True):
            t_miso += trained.seconds
            miso_threshold = trained.threshold
            for note in trained.notes:
                notes.append(f"{job.scheme} fold {job.fold + 1} {job.task}: {note}")
                echo(f"[yellow]note:[/] {notes[-1]}")
            labels, tr, te = labels_of[job.task], job.train_all, job.test
            t2 = time.perf_counter()
            rf = RFModel.fit(job.task, features[tr], labels[tr], rf_spec, trees=ev.rf.trees,
                             max_depth=ev.rf.max_depth, seed=ev.seed, n_jobs=ev.rf.jobs, crs=workflow.grid.crs)
            rf_prob = rf.predict_proba(job.task, features[te])
            t_rf += time.perf_counter() - t2
            maj_prob = majority_prediction(labels[tr], te.size, job.task)
            thresholds = {"MISO": miso_threshold if miso_threshold is not None else 0.5, "RF-11": 0.5, "Majority": 0.5}
            for model, prob in (("MISO", miso_prob), ("RF-11", rf_prob), ("Majority", maj_prob)):
                key = (job.scheme, job.task, model)
                pred = predictions.setdefault(key, Predictions())
                pred.ids += chips.ids[te].tolist()
                pred.fold += [job.fold + 1] * te.size
                pred.truth += labels[te].tolist()
                pred.prob.append(np.asarray(prob))
                pred.threshold.append(thresholds[model])
                if model == "MISO":
                    pred.aoa_di.append(aoa_di[0])
                    pred.aoa_threshold.append(aoa_di[1])
                metric = (binary_metrics(labels[te], prob, thresholds[model]) | {"threshold": thresholds[model]}
                          if job.task == "permafrost" else multiclass_metrics(labels[te], prob))
                if model == "MISO":
                    pred.raw_prob.append(miso_raw)
                    metric |= _uncertainty(labels[te], miso_prob, miso_raw, job.task, thresholds[model], trained)
                fold_metrics.setdefault(key, []).append(metric)
            if progress is not None:
                progress.advance(overall)
            echo(_fold_line(job, {m: fold_metrics[(job.scheme, job.task, m)][-1] for m in MODELS}, trained,
                            tr.size), highlight=False)
    timings |= {"miso_s": t_miso, "rf_s": t_rf}
    evaluation = Evaluation(workflow.name, list(ev.schemes), list(ev.tasks), n_folds, ev.folds, size, cfg.epochs,
                            predictions, fold_metrics, regions, split_sizes, time.perf_counter() - started, timings,
                            label_counts=label_counts(points, ev.tasks), notes=[rf_line, *notes])
    write_outputs(evaluation, out.directory)
    evaluation.seconds = time.perf_counter() - started
    return evaluation


@dataclass
class _MisoJob:
    """One MISO training of the cross-validation (positions index the chip set)."""

    scheme: str
    fold: int
    """0-based fold index."""
    task: str
    train_all: np.ndarray
    """the fold's labelled training points (training + validation); RF-11 trains on all of them."""
    train: np.ndarray
    val: np.ndarray
    unlabelled: np.ndarray
    test: np.ndarray
    run_dir: Path
    aoa_folds: np.ndarray
    """(len(train),) fold of each training point for the area of applicability's threshold."""


def _fold_line(job: _MisoJob, metrics: dict[str, dict[str, Any]], trained: Any, n_train: int) -> str:
    """The log line of one fold: accuracy and balanced accuracy of each model, and for permafrost the
    presence recall and MISO's decision threshold."""
    parts = []
    for model in MODELS:
        m = metrics[model]
        text = f"{model} acc {m['accuracy']:.3f} bal {m['balanced_accuracy']:.3f}"
        if job.task == "permafrost":
            text += f" PF recall {m['recall_1']:.3f}"
        parts.append(text)
    thr = f", threshold {trained.threshold:.3f}" if trained.threshold is not None else ""
    return (f"{job.scheme} fold {job.fold + 1} {job.task}: {'  '.join(parts)}  (train {n_train}, test "
            f"{job.test.size}, MISO {trained.best_epoch} ep best{thr}, {trained.seconds:.0f} s)")


def _uncertainty(truth: np.ndarray, prob: np.ndarray, raw: np.ndarray, task: str, threshold: float,
                 trained: Any) -> dict[str, float]:
    """MISO's calibration, error-ranking and conformal figures of one fold
    (:func:`~miso_mapper.evaluate.uncertainty.uncertainty_metrics`)."""
    from miso_mapper.evaluate.uncertainty import uncertainty_metrics

    t = trained.calibration.temperature if trained.calibration is not None else 1.0
    return uncertainty_metrics(truth, prob, raw, task, threshold, t, trained.conformal)


def _train_and_predict(job: _MisoJob, chips: Any, labels: np.ndarray, cfg: TrainConfig, size: str,
                       pool: Any, ref: Any, threads: int, progress: Any = None) -> Any:
    """Train MISO for ``job`` (in ``pool`` when given, resuming its state file); a zero-argument callable
    returning (calibrated probabilities at the test points, those before calibration (T = 1), the
    :class:`~miso_mapper.train.loop.TrainResult`, (the test points' DI (n,), the DI threshold) of the network's
    area of applicability, NaN when it has none)."""
    import torch

    from miso_mapper.model.calibration import probabilities
    from miso_mapper.train.applicability import try_fit_network_aoa
    from miso_mapper.train.batches import ChipSampler, SampleSpec
    from miso_mapper.train.loop import point_outputs, train_miso
    from miso_mapper.train.parallel import train_in_worker

    if pool is not None:
        future = pool.submit(train_in_worker, ref, labels, job.train, job.val, job.task, cfg, size, job.run_dir,
                             job.unlabelled, threads, f"MISO {job.scheme} fold {job.fold + 1} {job.task}")
    else:
        future = None
        done = train_miso(chips, labels, job.train, job.val, job.task, cfg, size, run_dir=job.run_dir,
                          unlabelled_idx=job.unlabelled, progress=progress,
                          description=f"MISO {job.scheme} fold {job.fold + 1} {job.task}")

    def result() -> tuple[np.ndarray, np.ndarray, Any, tuple[np.ndarray, float]]:
        trained = future.result() if future is not None else done
        logits, emb = point_outputs(trained.model, ChipSampler(chips, labels, job.train_all, SampleSpec()),
                                    job.test, logits=True)
        t = trained.model.temperature or 1.0
        prob, raw = probabilities(logits, job.task, t), probabilities(logits, job.task)
        aoa, _ = try_fit_network_aoa(trained.model, chips, labels, job.train, job.aoa_folds)
        if aoa is None:
            return prob, raw, trained, (np.full(job.test.size, np.nan), float("nan"))
        return prob, raw, trained, (aoa.index(torch.from_numpy(emb)).numpy(), aoa.threshold)

    return result


def _any_label(points: PointSet, tasks: list[str]) -> np.ndarray:
    keep = np.zeros(len(points), bool)
    for task in tasks:
        keep |= points.labelled(task)
    return keep


def _regions(workflow: Workflow, points: PointSet) -> dict[str, dict[str, str]]:
    """'zone' and 'mlra' -> point id -> region (only for the layers that exist)."""
    from miso_mapper.evaluate.regions import assign_regions

    out: dict[str, dict[str, str]] = {}
    for kind, fld in (("zones", workflow.points.zone_field), ("mlra", workflow.points.mlra_field)):
        path = polygon_path(workflow, kind)
        if path is None:
            continue
        if not path.is_file():
            raise MisoError(f"{'permafrost-zone' if kind == 'zones' else 'MLRA'} polygon file not found: {path}")
        names = assign_regions(points.x, points.y, path, fld, workflow.grid.crs)
        out["zone" if kind == "zones" else "mlra"] = dict(zip(points.ids.tolist(), names.tolist(), strict=True))
    return out


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    """JSON-able summary (metrics per fold, sizes, timings, MISO's calibration and uncertainty per scheme, its
    accuracy inside and outside its area of applicability)."""
    from miso_mapper.evaluate.applicability import aoa_rows
    from miso_mapper.evaluate.uncertainty_report import uncertainty_rows

    return {
        "workflow": ev.workflow, "schemes": ev.schemes, "tasks": ev.tasks, "folds_run": ev.folds_run,
        "folds": ev.folds, "size": ev.size, "epochs": ev.epochs, "seconds": ev.seconds, "timings": ev.timings,
        "split_sizes": ev.split_sizes, "label_counts": ev.label_counts, "notes": ev.notes,
        "fold_metrics": {"/".join(k): v for k, v in ev.fold_metrics.items()},
        "area_of_applicability": aoa_rows(ev),
        "uncertainty": {task: uncertainty_rows(ev, task) for task in ev.tasks},
    }
