"""``miso-mapper train``: train MISO on all labelled points of a workflow's region, one network per task.

A random ``train.val_fraction`` of the labelled points is held out for early stopping. Checkpoints go to
``<train dir>/<task>.safetensors`` (our format, with a model card holding the training-data hash and the
validation metrics); the state file in ``<train dir>/runs/<task>/`` makes a killed run resumable (paths:
:class:`miso_mapper.layout.TrainLayout`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.layout import RunLayout


def run_training(workflow: Workflow, tasks: list[str] | None = None, console: Any = None,
                 fresh: bool = False) -> dict[str, Path]:
    """Train the workflow's MISO networks; returns task -> checkpoint path."""
    from miso_mapper.model import ModelCard, save_checkpoint
    from miso_mapper.points import load_points
    from miso_mapper.train.applicability import aoa_folds, try_fit_network_aoa
    from miso_mapper.train.chips import ChipGeometry, build_chips
    from miso_mapper.train.init import check_init
    from miso_mapper.train.loop import net_config, pick_device, train_miso
    from miso_mapper.train.parallel import ChipCacheRef, threads_per_worker, train_in_worker, training_pool
    from miso_mapper.train.progress import chip_progress, progress_bars
    from miso_mapper.train.source import ensure_world_exists
    from miso_mapper.train.splits import validation_split
    from miso_mapper.train.state import discard_state

    cfg = workflow.train
    tasks = tasks or list(cfg.tasks)
    size = cfg.size or workflow.model.size
    echo = console.print if console is not None else (lambda *a, **k: None)
    out = RunLayout.of(workflow).train
    init = check_init(cfg.init, size, tasks)  # before any chip is read: a bad file fails in seconds
    ensure_world_exists(workflow, echo)
    points = load_points(workflow, tasks, echo=echo)
    geometry = ChipGeometry.for_jitter(cfg.crop_size, net_config(size, tasks[0]).input_size, cfg.jitter_px)
    with chip_progress(console) as report:
        chips = build_chips(workflow, points, geometry, out.chips, echo=echo, progress=report)
    jobs = []
    for task in tasks:
        labels = points.labels(task)
        has = (labels > -999) & chips.valid
        idx = np.flatnonzero(has)
        if idx.size == 0:
            raise MisoError(f"no labelled {task} point with valid imagery in the region")
        keep, val = validation_split(chips.ids[idx], chips.x[idx], chips.y[idx], cfg.val_fraction, None, cfg.seed)
        run_dir = out.run(task)
        if fresh:
            discard_state(run_dir)
        jobs.append((task, labels, idx[keep], idx[val], np.flatnonzero(~has & chips.valid), run_dir))
    workers = min(cfg.workers, len(jobs))
    threads = threads_per_worker(cfg, workers)
    ref = ChipCacheRef.of(chips, out.chips)
    bars = progress_bars(console) if workers > 1 else None
    with bars if bars is not None else contextlib.nullcontext(), training_pool(workers, bars) as pool:
        if pool is not None:
            echo(f"MISO: {', '.join(tasks)} side by side in {workers} processes x {threads} torch thread(s)")
            futures = [pool.submit(train_in_worker, ref, labels, tr, va, task, cfg, size, run_dir, unl, threads,
                                   f"MISO {task}")
                       for task, labels, tr, va, unl, run_dir in jobs]
            results = [f.result() for f in futures]
        else:
            results = []
            for task, labels, tr, va, unl, run_dir in jobs:
                progress = progress_bars(console)
                with progress if progress is not None else contextlib.nullcontext():
                    results.append(train_miso(chips, labels, tr, va, task, cfg, size, run_dir=run_dir,
                                              unlabelled_idx=unl, progress=progress, description=f"MISO {task}"))
    written: dict[str, Path] = {}
    ev = workflow.evaluate
    for (task, labels, tr, va, _unl, _run_dir), result in zip(jobs, results, strict=True):
        folds, how = aoa_folds(chips.x[tr], chips.y[tr], ev.schemes, ev.folds, cfg.seed)
        aoa, aoa_line = try_fit_network_aoa(result.model, chips, labels, tr, folds, pick_device(cfg.device))
        card = ModelCard(
            training_data_hash=points.subset(tr).content_hash(),
            decision_threshold=result.threshold,
            calibration=result.calibration,
            conformal=result.conformal,
            metrics={k: float(v) for k, v in result.best.items()},
            source=f"miso-mapper train {workflow.name} ({size}, best epoch {result.best_epoch})",
            init=init,
            extra={"points_file_sha256": points.source_hash, "n_train": int(tr.size), "n_val": int(va.size),
                   "chip_key": chips.key, "epochs_run": len(result.history), "class_weights": cfg.class_weights,
                   "sampling": cfg.sampling, "threshold_rule": cfg.threshold,
                   "class_prior": cfg.class_prior, "aoa_folds": how},
        )
        path = save_checkpoint(result.model, out.checkpoint(task), card, aoa=aoa)
        written[task] = path
        resumed = f", resumed after epoch {result.resumed_from}" if result.resumed_from else ""
        metrics = "  ".join(f"{k} {v:.3f}" for k, v in result.best.items())
        for note in result.notes:
            echo(f"[yellow]note:[/] {task}: {note}")
        if result.threshold is not None:
            metrics += f"  threshold {result.threshold:.3f} ({cfg.threshold})"
        if result.model.logit_bias is not None:
            metrics += f"  class prior matched (logit shifts {_shifts(result.model.logit_bias)})"
        if result.calibration is not None and result.calibration.method == "temperature":
            metrics += f"  temperature {result.calibration.temperature:.3f}"
        if result.conformal is not None:
            metrics += f"  conformal qhat {result.conformal.qhat:.3f} ({result.conformal.coverage:.0%} sets)"
        echo(f"[green]✓ {task}[/] {path}  ({len(result.history)} epochs{resumed}, best {result.best_epoch}: "
             f"{metrics or 'no validation'}; {result.seconds:.0f} s)")
        echo(f"  {task} {aoa_line} ({how})" if aoa is not None else f"[yellow]note:[/] {task}: {aoa_line}")
    return written


def _shifts(bias: Any) -> str:
    """The logit shifts of a soil-order network as short text, e.g. '+0.12 -0.40 ...'."""
    return " ".join(f"{float(v):+.2f}" for v in bias)
