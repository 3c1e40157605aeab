"""Where everything of a run lives: the one place that knows the run folder's file names.

A run folder (``output.directory``) holds::

    maps.zarr/            the map store                       RunLayout.store
    manifest.sqlite       the run manifest beside it           RunLayout.manifest
    write-log/            one file per completed chunk write   RunLayout.write_log
    search/               per-chunk STAC search records        RunLayout.search
    logs/                 Dask worker logs                     RunLayout.logs
    report.html           the run report                       RunLayout.report
    train/                (train.directory)                    RunLayout.train, see TrainLayout
    evaluate/             (evaluate.directory)                 RunLayout.evaluate, see EvaluationLayout
    products/             (export.directory)                   RunLayout.products (inside: miso_mapper.export)
    sample-sites/         (sample_sites.directory)             RunLayout.sample_sites, see SitesLayout

Every module that needs one of these paths asks :meth:`RunLayout.of`; none joins these names itself.
Torch-free and cheap: it depends only on :mod:`miso_mapper.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from miso_mapper.config import Workflow

#: Evaluation table file stems per task (Table 1 and Table 2 of the paper).
TABLE_STEMS = {"permafrost": "table1_permafrost", "taxonomy": "table2_taxonomy"}


@dataclass(frozen=True)
class TrainLayout:
    """The training folder: chip cache, one checkpoint per task and one resumable run folder per task."""

    directory: Path

    @property
    def chips(self) -> Path:
        """Cache of training chips (folders of .npy, memory-mapped), shared by ``train`` and ``evaluate``."""
        return self.directory / "chips"

    def checkpoint(self, task: str) -> Path:
        """The trained network of ``task`` ('permafrost' or 'taxonomy'): ``<task>.safetensors``."""
        return self.directory / f"{task}.safetensors"

    def run(self, task: str) -> Path:
        """Folder of the resumable training state of ``task``."""
        return self.directory / "runs" / task


@dataclass(frozen=True)
class EvaluationLayout:
    """An evaluation folder: splits, per-fold training runs, tables, predictions, metrics and the report."""

    directory: Path

    def split(self, scheme: str) -> Path:
        """The saved folds of split ``scheme`` (JSON)."""
        return self.directory / "splits" / f"{scheme}.json"

    def run(self, scheme: str, fold: int, task: str) -> Path:
        """Folder of the resumable MISO training of ``task`` on fold ``fold`` (1-based) of ``scheme``."""
        return self.directory / "runs" / scheme / f"fold{fold}" / task

    def table(self, task: str, suffix: str) -> Path:
        """Table 1 (``task='permafrost'``) or Table 2 (``'taxonomy'``) as ``suffix`` ('csv' or 'md')."""
        return self.directory / f"{TABLE_STEMS[task]}.{suffix}"

    def regions(self, suffix: str) -> Path:
        """The table of results by permafrost zone and MLRA as ``suffix`` ('csv' or 'md')."""
        return self.directory / f"regions.{suffix}"

    def aoa(self, suffix: str) -> Path:
        """The table of MISO's accuracy inside vs outside the area of applicability as ``suffix`` ('csv', 'md')."""
        return self.directory / f"area_of_applicability.{suffix}"

    @property
    def predictions(self) -> Path:
        """One CSV row per test point, model and task."""
        return self.directory / "predictions.csv"

    @property
    def metrics(self) -> Path:
        """Per-fold metrics, split sizes and timings (JSON)."""
        return self.directory / "metrics.json"

    @property
    def report(self) -> Path:
        """The self-contained HTML report of the evaluation."""
        return self.directory / "report.html"


@dataclass(frozen=True)
class SitesLayout:
    """The output folder of ``miso-mapper sample-sites``: the proposed field sites as GeoJSON and CSV."""

    directory: Path

    @property
    def geojson(self) -> Path:
        """The sites as EPSG:4326 points with their rank, score, reasons and layer values."""
        return self.directory / "sample_sites.geojson"

    @property
    def csv(self) -> Path:
        """The same sites as a CSV table."""
        return self.directory / "sample_sites.csv"


@dataclass(frozen=True)
class RunLayout:
    """Every path of one workflow's run folder (absolute when the workflow was loaded from a file).

    ``train``, ``evaluate``, ``products`` and ``sample_sites`` honour ``train.directory``, ``evaluate.directory``,
    ``export.directory`` and ``sample_sites.directory``; by default they are folders of the run folder.
    """

    directory: Path
    """the run folder, ``output.directory``."""
    train: TrainLayout
    evaluate: EvaluationLayout
    products: Path
    """the export products folder; its inside belongs to :mod:`miso_mapper.export`."""
    sample_sites: SitesLayout

    @classmethod
    def of(cls, workflow: Workflow) -> RunLayout:
        """The layout of ``workflow``'s run folder."""
        out = workflow.output.directory
        return cls(
            directory=out,
            train=TrainLayout(workflow.train.directory or out / "train"),
            evaluate=EvaluationLayout(workflow.evaluate.directory or out / "evaluate"),
            products=workflow.export.directory or out / "products",
            sample_sites=SitesLayout(workflow.sample_sites.directory or out / "sample-sites"),
        )

    @property
    def store(self) -> Path:
        """The Zarr store of map layers."""
        return self.directory / "maps.zarr"

    @property
    def manifest(self) -> Path:
        """The SQLite run manifest beside the store."""
        return self.directory / "manifest.sqlite"

    @property
    def write_log(self) -> Path:
        """Folder of the write log (one file per completed chunk write)."""
        return self.directory / "write-log"

    @property
    def lock(self) -> Path:
        """The run lock: a JSON record naming the command that writes into the run folder now
        (:mod:`miso_mapper.runlock`); its modification time is the holder's heartbeat."""
        return self.directory / "run.lock"

    @property
    def lock_guard(self) -> Path:
        """The OS-locked file that makes taking, breaking and dropping :attr:`lock` one step each."""
        return self.directory / "run.lock.guard"

    @property
    def search(self) -> Path:
        """Folder of the per-chunk STAC search records."""
        return self.directory / "search"

    @property
    def logs(self) -> Path:
        """Folder of the Dask cluster's worker logs."""
        return self.directory / "logs"

    @property
    def report(self) -> Path:
        """The HTML run report (its quicklook PNGs go to ``quicklooks/`` beside it)."""
        return self.directory / "report.html"
