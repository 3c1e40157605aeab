"""Workflow configuration: pydantic models for the YAML files in ``workflows/``.

Every section forbids unknown keys, so a typo is an error rather than a silently ignored setting. Relative
paths in a workflow file are resolved against the directory of that file, so a workflow can be run from
anywhere. :func:`load_workflow` is the one way in; it turns every problem into a :class:`ConfigError`
whose message names the field and the reason.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator, model_validator

from miso_mapper.bands import COVARIATES, SOIL_ORDERS, WINDOW_PX
from miso_mapper.errors import ConfigError
from miso_mapper.inference.settings import PredictorConfig


class StrictModel(BaseModel):
    """Base for every configuration section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]


def known_crs(value: str) -> str:
    """``value`` if pyproj knows the CRS (``EPSG:3338``, WKT, PROJ), else ValueError: an unknown EPSG code
    would otherwise only fail when the region is built."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        CRS.from_user_input(value)
    except CRSError:
        raise ValueError(f"{value!r} is not a CRS pyproj knows (e.g. EPSG:3338)") from None
    return value


class GridConfig(StrictModel):
    """The output grid and how it is cut into tiles, processing chunks and Zarr chunks.

    Defaults are the AKVEG 50 km grid the reference uses: EPSG:3338 at 10 m, tiles of 5000 x 5000 px whose
    upper-left corner is ``origin`` and whose ids are ``{tile_prefix}H{h:02d}V{v:02d}``. Sizes are in pixels.
    """

    crs: str = "EPSG:3338"
    resolution: FiniteFloat = Field(10.0, gt=0, description="pixel size in CRS units (metres)")
    origin_x: FiniteFloat = Field(-2_200_000.0, description="x of the grid's upper-left corner")
    origin_y: FiniteFloat = Field(2_400_000.0, description="y of the grid's upper-left corner")
    tiles_x: PositiveInt = Field(74, description="number of tile columns (H)")
    tiles_y: PositiveInt = Field(48, description="number of tile rows (V)")
    tile_size: PositiveInt = Field(5000, description="tile edge in pixels")
    tile_prefix: str = "AK050"
    index_base: Literal[0, 1] = Field(
        1, description="H/V of the upper-left tile; 1 puts Fairbanks in AK050H50V15 as in the reference"
    )
    chunk_size: PositiveInt = Field(2500, description="processing chunk edge in pixels")
    zarr_chunk: PositiveInt = Field(500, description="Zarr chunk edge in pixels")
    halo: int = Field(PredictorConfig().required_halo(), ge=0,
                      description="context read around each chunk, pixels: half a window plus one predictor "
                                  "stride (125 + 50), what the default MISO predictor needs")

    _crs = field_validator("crs")(known_crs)

    @model_validator(mode="after")
    def _check_alignment(self) -> GridConfig:
        if self.chunk_size % self.zarr_chunk:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must be a whole number of zarr_chunk ({self.zarr_chunk}) "
                "so that no two chunks ever write the same Zarr chunk"
            )
        if self.tile_size % self.chunk_size:
            raise ValueError(
                f"tile_size ({self.tile_size}) must be a whole number of chunk_size ({self.chunk_size}) "
                "so that every chunk lies in exactly one tile"
            )
        return self


class RegionConfig(StrictModel):
    """The area to map: exactly one of a bounding box, a vector file or a list of tile ids."""

    bbox: tuple[FiniteFloat, FiniteFloat, FiniteFloat, FiniteFloat] | None = Field(
        None, description="(xmin, ymin, xmax, ymax) in bbox_crs"
    )
    bbox_crs: str = "EPSG:3338"
    vector: Path | None = Field(None, description="any OGR-readable polygon file; its own CRS is used")
    layer: str | None = None
    tiles: list[str] | None = None

    _bbox_crs = field_validator("bbox_crs")(known_crs)

    @model_validator(mode="after")
    def _exactly_one(self) -> RegionConfig:
        given = [k for k in ("bbox", "vector", "tiles") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bbox, vector, tiles (got {', '.join(given) or 'none'})")
        if self.bbox is not None and not (self.bbox[0] < self.bbox[2] and self.bbox[1] < self.bbox[3]):
            raise ValueError(f"bbox {list(self.bbox)} must be (xmin, ymin, xmax, ymax) with min < max")
        return self


class ImageryConfig(StrictModel):
    """Where the Sentinel-2 L2A scenes come from and how they are chosen for a chunk."""

    stac_url: str | None = Field(
        None, description="STAC API root; may be left out when the workflow has a demo `world` or a `catalog`"
    )
    catalog: Path | None = Field(
        None, description="catalog on disk instead of a STAC API, searched locally: a static catalog.json/"
        "collection.json, an ItemCollection .json or a stac-geoparquet file (or a folder with one); relative "
        "asset hrefs resolve against the item's file"
    )
    collection: str = "sentinel-2-l2a"
    profile: Literal["earth-search-v1", "planetary-computer", "demo"] = "earth-search-v1"
    years: list[int] = Field(default_factory=lambda: [2019, 2020, 2021, 2022, 2023], min_length=1)
    season_start: str = Field("07-01", description="MM-DD, first day of each yearly window")
    season_end: str = Field("08-31", description="MM-DD, last day (inclusive) of each yearly window")
    max_cloud_cover: float = Field(60.0, ge=0, le=100, description="scene eo:cloud_cover ceiling, %")
    max_items: PositiveInt = Field(24, description="items per chunk, least cloudy first")
    loader: Literal["stackstac", "odc"] = "stackstac"
    scl_keep: list[Annotated[int, Field(ge=0, le=11)]] = Field(
        default_factory=lambda: [4, 5, 6, 11],
        description="SCL classes kept: 4 vegetation, 5 bare soil, 6 water, 11 snow; the rest is masked",
        min_length=1,
    )
    composite: Literal["median", "geomedian"] = "median"
    max_block_mb: PositiveInt = Field(256, description="memory budget of one composite block, MB")

    @field_validator("season_start", "season_end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        try:
            dt.date.fromisoformat(f"2000-{value}")
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a MM-DD date") from exc
        return value

    @model_validator(mode="after")
    def _season_order(self) -> ImageryConfig:
        if self.stac_url is not None and self.catalog is not None:
            raise ValueError("give one of stac_url and catalog, not both")
        if self.season_start > self.season_end:
            raise ValueError(f"season_start {self.season_start} is after season_end {self.season_end}")
        return self

    def date_windows(self) -> list[tuple[dt.date, dt.date]]:
        """The inclusive (first day, last day) windows searched, one per year, in year order."""
        return [
            (dt.date.fromisoformat(f"{y}-{self.season_start}"), dt.date.fromisoformat(f"{y}-{self.season_end}"))
            for y in sorted(self.years)
        ]


class CovariatesConfig(StrictModel):
    """The 10 terrain and climate layers: a STAC collection or a folder of COGs/VRTs."""

    source: Literal["stac", "folder"] = "folder"
    path: Path | None = Field(None, description="folder with one COG or VRT per layer (source: folder)")
    stac_url: str | None = Field(None, description="STAC API root (source: stac); defaults to imagery's")
    catalog: Path | None = Field(
        None, description="catalog on disk (source: stac), like imagery.catalog; defaults to imagery's source"
    )
    collection: str | None = Field(None, description="STAC collection (source: stac)")
    layers: list[str] = Field(default_factory=lambda: list(COVARIATES))
    derive_missing: bool = Field(False, description="compute slope, aspect and TPI from elevation if absent")

    @model_validator(mode="after")
    def _source_fields(self) -> CovariatesConfig:
        if self.source == "stac" and not self.collection:
            raise ValueError("source 'stac' needs a collection")
        if self.stac_url is not None and self.catalog is not None:
            raise ValueError("give one of stac_url and catalog, not both")
        if self.layers != list(COVARIATES):
            raise ValueError(f"layers must be the model's 10 covariates in order: {list(COVARIATES)}")
        return self


class SyntheticConfig(StrictModel):
    """The deterministic stand-in predictor of tests and the demo (``model.kind: synthetic``); NOT a model.

    See :class:`~miso_mapper.pipeline.synthetic.SyntheticPredictor`: probabilities are a fixed (``seed``) random
    linear map of the inputs smoothed with a Gaussian of ``sigma`` px, logits scaled by ``logit_scale``.
    """

    seed: int = 0
    sigma: float = Field(3.0, ge=0, description="Gaussian smoothing of the inputs, px")
    logit_scale: float = Field(1.5, description="scale of the random weights (larger: more confident)")


class ModelConfig(StrictModel):
    """Which trained networks to map with. Weights are never downloaded: paths only."""

    permafrost_checkpoint: Path | None = None
    taxonomy_checkpoint: Path | None = None
    size: Literal["reference", "compact", "small", "tiny"] = Field(
        "reference",
        description="network preset: reference (the paper's 212 M-parameter network), compact (the reference's "
        "256 px geometry and 3.9 px feature cells, narrow and shallow: ~1.1 M), small, tiny (64 px input, 15.6 px "
        "cells; the demo's)",
    )
    kind: Literal["miso", "rf", "synthetic"] = Field(
        "miso",
        description="predictor `run` maps with: miso (the checkpoints above), rf (RF-11, `rf_model`) or "
        "synthetic (a deterministic stand-in for tests and the demo; NOT a model)",
    )
    rf_model: Path | None = Field(None, description="RF-11 model file (.skops) written by miso_mapper.baseline.save_rf "
                                                    "(kind: rf); pickles are refused (`miso-mapper rf convert`)")
    predictor: PredictorConfig = Field(
        PredictorConfig(), description="how the MISO predictor tiles, batches and blends (kind: miso)"
    )
    synthetic: SyntheticConfig = Field(
        SyntheticConfig(), description="the synthetic stand-in's settings (kind: synthetic)"
    )


class OutputConfig(StrictModel):
    """Where the products go."""

    directory: Path = Field(Path("out"), description="run folder: maps.zarr, manifest.sqlite, products/, ... "
                                                     "(see miso_mapper.layout)")
    zarr_format: Literal[2, 3] = Field(
        2, description="Zarr format of maps.zarr: 2 (default) is read by GDAL >= 3.4 (QGIS, gdalinfo, rasterio); "
                       "3 only by GDAL >= 3.11 (older ones: 'Unsupported codec: bytes')"
    )
    lock_stale_after: float = Field(
        300.0, gt=0, description="seconds without a heartbeat after which the run lock of `run`/`export` is stale "
                                 "(reported, cleared with `miso-mapper unlock`)"
    )


class ClusterConfig(StrictModel):
    """The Dask cluster the chunks run on."""

    kind: Literal["local", "local-cuda", "slurm", "pbs", "address"] = "local"
    n_workers: PositiveInt = 2
    threads_per_worker: PositiveInt = 1
    memory_limit: str = "auto"
    address: str | None = Field(None, description="scheduler address (kind: address)")
    window: PositiveInt = Field(8, description="chunk tasks in flight at once")
    max_attempts: PositiveInt = Field(3, description="attempts per chunk and run before it is reported failed")
    shutdown_grace: float = Field(
        30.0, ge=0, description="on SIGTERM/SIGINT, seconds `run` waits for chunks in flight before it returns them "
                                "to pending and stops"
    )
    gpus_per_worker: int = Field(
        0, ge=0, description="GPUs per worker: slurm/pbs jobs ask for them (--gres=gpu:N, ngpus=N) and start workers "
        "with the resource GPU=1; address: 1 declares the workers were started with `--resources GPU=1`; either "
        "way prediction tasks then ask for GPU=1. local-cuda always has one GPU per worker; local has none"
    )
    walltime: str = Field("04:00:00", description="slurm/pbs job walltime, HH:MM:SS")
    lifetime_margin: str = Field(
        "15m", description="workers retire this long before walltime (dask --lifetime = walltime - margin)"
    )
    lifetime_stagger: str = Field("5m", description="dask --lifetime-stagger: spread of worker retirements")
    queue: str | None = Field(None, description="slurm partition / pbs queue")
    account: str | None = Field(None, description="slurm account / pbs project")
    job_extra_directives: list[str] = Field(
        default_factory=list, description="extra #SBATCH / #PBS lines (without the prefix)"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list, description="shell lines run before the worker (module load, conda activate ...)"
    )
    log_directory: Path | None = Field(None, description="slurm/pbs worker job logs (default: output/logs)")
    local_directory: str | None = Field(None, description="worker spill folder, e.g. $TMPDIR or node-local SSD")
    interface: str | None = Field(None, description="network interface of workers and scheduler, e.g. ib0")
    dashboard_port: int | None = Field(
        None, ge=1, le=65535, description="port of the Dask dashboard (local, local-cuda, slurm, pbs), for an SSH "
        "tunnel to it; its address is printed when a run starts. null: any free port (local, local-cuda) or "
        "dask-jobqueue's configured one (slurm, pbs; 8787 unless set)"
    )

    @property
    def has_gpu_workers(self) -> bool:
        """True when workers carry the ``GPU`` resource, so prediction tasks ask for ``GPU=1``: local-cuda, or
        slurm/pbs/address with ``gpus_per_worker > 0`` (address: as declared; ``run`` checks the connected
        workers)."""
        return self.kind == "local-cuda" or (self.kind in ("slurm", "pbs", "address") and self.gpus_per_worker > 0)

    @model_validator(mode="after")
    def _address(self) -> ClusterConfig:
        if self.kind == "address" and not self.address:
            raise ValueError("kind 'address' needs an address")
        if self.kind == "local" and self.gpus_per_worker:
            raise ValueError("gpus_per_worker is not used by kind 'local' (its workers have no GPU): use kind "
                             "'local-cuda' for one worker per local GPU")
        return self


def _refuse_keys(data: Any, keys: tuple[str, ...], message: str, join: str) -> Any:
    """``data`` unchanged, or ``ValueError(message.format(the keys found))`` when a section still holds one of
    ``keys`` (settings that were removed or moved: one line saying what to write instead)."""
    found = [k for k in keys if isinstance(data, dict) and k in data]
    if found:
        raise ValueError(message.format(join.join(found)))
    return data


class CostConfig(StrictModel):
    """Figures used by ``plan`` to estimate compute.

    FLOP are not configured: ``plan`` counts them from the workflow's network (``model.size``) and the
    predictor's own layout (:mod:`miso_mapper.inference.chunk_cost`).
    """

    @model_validator(mode="before")
    @classmethod
    def _removed_figures(cls, data: Any) -> Any:
        return _refuse_keys(data, ("query_flop", "encoder_flop_per_window"), "{} is no longer a setting: plan "
                            "counts FLOPs from the network and the predictor's layout; remove it", ", ")

    tasks: int = Field(2, ge=1, le=2, description="task networks run: 1 = permafrost, 2 = permafrost and soil order")
    gpu_sustained_tflops: float = Field(
        200.0, gt=0, description="achieved TFLOP/s of the whole predictor per GPU; 200 (~25% of an "
        "H100's dense bf16 peak) is an assumption until benchmarks/gpu_check.py measures it on your GPU (it prints "
        "the value to set)"
    )
    scenes_per_chunk: PositiveInt | None = Field(None, description="defaults to imagery.max_items")


class WorldConfig(StrictModel):
    """Demo workflows only: the synthetic world that stands in for Alaska's imagery and covariates."""

    directory: Path = Field(Path("demo-out/world"), description="where `world create` writes the world")
    seed: int = 0


class PointsConfig(StrictModel):
    """Labelled field points (training and evaluation) and the polygon layers results are broken down by.

    The points file is GeoJSON with one Point feature per site. Its properties: a unique id (``id_field``), the
    permafrost label (``permafrost_field``: a spelling of present/absent) and the soil order
    (``soil_order_field``: an order's name or a ``soil_order_names`` key), either may be a "no label" value,
    and optionally ``x_3338``/``y_3338`` (EPSG:3338 metres; otherwise the geometry, EPSG:4326 unless the file
    says, is used). Spellings are compared as trimmed lower-case text (:mod:`miso_mapper.labels`).
    Paths left out default to the demo world's files when the workflow has a ``world``.
    """

    path: Path | None = Field(None, description="GeoJSON of labelled points (default: the world's points)")
    permafrost_zones: Path | None = Field(None, description="permafrost-zone polygons (default: the world's)")
    mlra: Path | None = Field(None, description="MLRA polygons (default: the world's)")
    zone_field: str = Field("zone", description="property of the zone polygons holding the zone name")
    mlra_field: str = Field("mlra_id", description="property of the MLRA polygons holding the MLRA id")
    id_field: str = Field("id", min_length=1,
                          description="property holding each point's unique id (else the feature's own id)")
    permafrost_field: str = Field("permafrost", min_length=1,
                                  description="property holding the near-surface permafrost label")
    permafrost_true: list[str] = Field(
        ["1", "true", "yes"], min_length=1,
        description="spellings of 'permafrost present', any case (JSON true reads as 'true', 1 and 1.0 as '1')")
    permafrost_false: list[str] = Field(
        ["0", "false", "no"], min_length=1,
        description="spellings of 'no permafrost', any case (JSON false reads as 'false', 0 and 0.0 as '0')")
    soil_order_field: str = Field("soil_order", min_length=1, description="property holding the soil order")
    soil_order_names: dict[str, str | None] = Field(
        default_factory=dict,
        description="file value -> soil order (or null: no label) for values that are not an order's own name "
                    "(those match in any case, singular too), e.g. {Turbels: Gelisols}; keys match in any case")
    no_label_values: list[str] = Field(
        ["", "na", "n/a", "nan", "null", "none"],
        description="values meaning 'no label', any case, besides JSON null, NaN and a missing property")

    @field_validator("soil_order_names")
    @classmethod
    def _known_orders(cls, names: dict[str, str | None]) -> dict[str, str | None]:
        from miso_mapper.labels import soil_order_index

        bad = sorted({v for v in names.values() if v is not None and soil_order_index(v) is None})
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))} not a soil order (one of {', '.join(SOIL_ORDERS)})")
        return {k: None if v is None else SOIL_ORDERS[soil_order_index(v)] for k, v in names.items()}

    @model_validator(mode="after")
    def _spellings_disjoint(self) -> PointsConfig:
        from miso_mapper.labels import as_text

        sets = {name: {as_text(v) for v in getattr(self, name)}
                for name in ("permafrost_true", "permafrost_false", "no_label_values")}
        for a, b in (("permafrost_true", "permafrost_false"), ("permafrost_true", "no_label_values"),
                     ("permafrost_false", "no_label_values")):
            if sets[a] & sets[b]:
                raise ValueError(f"{a} and {b} share {', '.join(map(repr, sorted(sets[a] & sets[b])))}")
        return self


class InitConfig(StrictModel):
    """Weights training starts from instead of random ones (at most one source)."""

    satlas: Path | None = Field(
        None, description="SatlasPretrain sentinel2_swinb_si_ms.pth: initialises the Sentinel-2 Swin as the "
        "reference does (backbone keys, patch embedding skipped); needs size 'reference'",
    )
    checkpoint: Path | None = Field(
        None, description="one of our .safetensors checkpoints of the same task and size: all its weights"
    )

    @model_validator(mode="after")
    def _one(self) -> InitConfig:
        if self.satlas is not None and self.checkpoint is not None:
            raise ValueError("give satlas or checkpoint, not both")
        return self


class TrainConfig(StrictModel):
    """How MISO is trained (``miso-mapper train``); defaults follow the reference's c19 configs.

    Sizes are in 10 m pixels. A training chip is a ``crop_size`` window around a labelled point, shifted
    by up to ``jitter_px`` in x and y, resized to the network's input size; each chip carries up to
    ``labels_per_chip`` labelled points (the anchor and labelled training neighbours inside the window),
    ``random_pseudo_points`` random unlabelled points and, with ``regular_pseudo_points``, a lattice of
    unlabelled points every ``crop_size / 5`` px; unlabelled points feed only the contrastive terms.
    """

    size: Literal["reference", "compact", "small", "tiny"] | None = Field(
        None, description="network preset (default: model.size)")
    tasks: list[Literal["permafrost", "taxonomy"]] = Field(
        default_factory=lambda: ["permafrost", "taxonomy"], min_length=1, description="tasks `train` trains"
    )
    crop_size: PositiveInt = Field(WINDOW_PX, description="window side cut around a point, pixels")
    jitter_px: int = Field(62, ge=0, description="largest random shift of the window, pixels (reference: crop/4)")
    epochs: PositiveInt = 40
    batch_size: PositiveInt = 32
    lr: float = Field(5e-5, gt=0, description="peak learning rate (AdamW)")
    min_lr: float = Field(5e-6, ge=0, description="learning rate at the end of the cosine schedule")
    warmup_epochs: float = Field(5, ge=0, description="linear warm-up from lr/100, epochs")
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["cosine", "plateau"] = "cosine"
    clip_grad: float | None = Field(1.0, gt=0, description="gradient-norm clip; null = off")
    patience: PositiveInt = Field(11, description="early stopping: epochs without validation improvement")
    early_stop_metric: Literal["loss", "accuracy"] = "loss"
    keep: Literal["best", "last"] = Field(
        "best", description="weights a training ends with: those of the best validation epoch (reference) or of "
        "the last epoch (for validation sets too small or too far away to pick an epoch; the demo's spatial folds)"
    )
    val_fraction: float = Field(0.1, ge=0, lt=0.5, description="share of training points held out for validation")
    labels_per_chip: PositiveInt = 5
    random_pseudo_points: int = Field(10, ge=0)
    regular_pseudo_points: bool = True
    unlabelled_ratio: float = Field(
        0.0, ge=0, lt=1, description="share of chips centred on points without the task's label (contrastive only)"
    )
    chips_per_epoch: PositiveInt | None = Field(None, description="chips drawn per epoch (default: training points)")
    drop_path: float | None = Field(None, ge=0, lt=1, description="override the preset's stochastic depth")
    input_standardization: bool = Field(
        False, description="standardise input channels inside the network with statistics of the training chips"
    )
    init: InitConfig = Field(default_factory=InitConfig, description="starting weights (default: random)")
    class_weights: Literal["none", "balanced", "sqrt"] = Field(
        "none", description="weights of the supervised loss per class, from the training points' label counts: "
        "'balanced' = n / (k n_c) as scikit-learn (BCE of permafrost / CE of soil order), 'sqrt' = its square "
        "root, 'none' = unweighted as the reference (the default: balanced weights cost 0.2-0.4 soil-order "
        "accuracy on the demo world's spatial folds; README 'Demo evaluation')"
    )
    sampling: Literal["uniform", "balanced"] = Field(
        "uniform", description="how an epoch draws its labelled anchor chips: 'uniform' over the training points "
        "(reference) or 'balanced' (each class of the anchor's label equally often)"
    )
    threshold: Literal["fixed", "youden", "f1", "prevalence"] = Field(
        "fixed", description="permafrost decision threshold stored in the model card: 'fixed' 0.5 (reference), "
        "'youden' (max sensitivity + specificity, i.e. balanced accuracy) or 'f1' (max F1 of permafrost), "
        "chosen on the validation points, or 'prevalence' (the share mapped as permafrost at the held-out "
        "points - validation and other-task points - equals the training labels' share)"
    )
    class_prior: Literal["none", "match"] = Field(
        "none", description="soil order: 'match' stores per-order logit shifts in the model card under which the "
        "predicted orders' frequencies at the held-out points (validation and other-task points) match the "
        "training labels' (prior matching; undoes the over-prediction of rare orders that class weights cause); "
        "'none' = the network's own probabilities (reference)"
    )
    calibration: Literal["temperature", "none"] = Field(
        "temperature", description="after training, calibrate the probabilities on the validation points: "
        "'temperature' scaling (one T dividing the logits, fitted by minimum NLL; stored in the model card; "
        "applied before the permafrost threshold is chosen) or 'none' (the network's own probabilities)"
    )
    conformal_coverage: float = Field(
        0.9, gt=0, lt=1, description="soil order: nominal coverage of the conformal prediction set stored in "
        "the model card (split conformal, LAC score 1 - p_true, on the validation points)"
    )
    seed: int = 0
    num_threads: PositiveInt | None = Field(None, description="torch CPU threads (default: all cores)")
    workers: PositiveInt = Field(
        1, description="trainings run side by side (the tasks of `train`, the folds of `evaluate`) in this many "
        "processes with num_threads // workers torch threads each (small networks use 2 cores better as 2 x 1)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bfloat16 autocast on CUDA (never on CPU)")
    directory: Path | None = Field(None, description="checkpoints and chip cache (default: output.directory/train)")


class RFConfig(StrictModel):
    """The RF-11 baseline of ``evaluate``: one of the reference's two ways of running it
    (:data:`miso_mapper.baseline.rf.SETTINGS`), optionally with fewer or more trees or another depth."""

    setting: Literal["rf-script", "rf11-notebook"] = Field(
        "rf-script", description="rf-script: the reference's current RF script (19 raster features, no location, "
        "253 trees, permafrost max_depth 16 / min_samples_split 5); rf11-notebook: its older RF-11 notebook "
        "(the 19 features plus lon/lat in degrees, 100 trees, unlimited depth)")
    trees: PositiveInt | None = Field(None, description="number of trees (default: the setting's, 253 or 100)")
    max_depth: int | None = Field(None, ge=0, description="maximum tree depth for both tasks (default: the "
                                  "setting's; 0: unlimited)")
    jobs: int = Field(1, description="scikit-learn n_jobs of the forest (-1: all cores)")


class EvaluateConfig(StrictModel):
    """Cross-validation of MISO against RF-11 and a majority-class baseline (``miso-mapper evaluate``).

    A scheme is ``random`` (k random folds) or ``spatial-<d>km`` / ``spatial-<d>m``: folds of spatially
    contiguous groups, every training point at least ``d`` from every test point of its fold.
    """

    schemes: list[str] = Field(default_factory=lambda: ["random", "spatial-1km", "spatial-10km"], min_length=1)
    folds: int = Field(5, ge=2)
    seed: int = 0
    rf: RFConfig = Field(default_factory=RFConfig, description="the RF-11 baseline: reference setting "
                         "and overrides (README: RF-11 settings)")
    tasks: list[Literal["permafrost", "taxonomy"]] = Field(
        default_factory=lambda: ["permafrost", "taxonomy"], min_length=1
    )
    quick_folds: int = Field(2, ge=1, description="folds run by --quick (of the `folds` made)")
    quick_epochs: PositiveInt = Field(3, description="MISO epochs under --quick")
    directory: Path | None = Field(None, description="splits, tables and report (default: output.directory/evaluate)")

    @model_validator(mode="before")
    @classmethod
    def _moved_rf_keys(cls, data: Any) -> Any:
        return _refuse_keys(data, ("rf_trees", "rf_jobs"), "{} moved: write evaluate.rf: {{setting: rf-script | "
                            "rf11-notebook, trees: N, jobs: N}} (the setting also fixes the features and depth)",
                            " and ")

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        import re

        for name in value:
            if name != "random" and not re.fullmatch(r"spatial-\d+(\.\d+)?(km|m)", name):
                raise ValueError(f"unknown split scheme {name!r}: use 'random' or 'spatial-<d>km' / 'spatial-<d>m'")
        if len(set(value)) != len(value):
            raise ValueError("split schemes are listed twice")
        return value


class ExportConfig(StrictModel):
    """Products derived from ``maps.zarr`` by ``miso-mapper export``: per-tile COGs, VRT mosaics, overviews, STAC.

    Every COG is internally tiled (``blocksize`` px), compressed with ``compress`` and ``predictor``, with
    internal overviews (average for probabilities, mode for classes). The statewide overview COG of each layer
    has ``overview_resolution`` m pixels: a whole multiple of ``grid.resolution`` dividing a tile.
    """

    directory: Path | None = Field(None, description="products folder (default: output.directory/products)")
    compress: Literal["deflate", "zstd"] = Field("deflate", description="COG compression, with `predictor`")
    level: int | None = Field(None, ge=1, le=22, description="compression level (default: GDAL's)")
    predictor: Literal[1, 2] = Field(2, description="TIFF predictor: 1 none, 2 horizontal differencing")
    blocksize: PositiveInt = Field(512, description="COG internal tile edge, pixels (a multiple of 16)")
    overview_resolution: float = Field(500.0, gt=0, description="pixel size of the statewide overview COGs, m")
    gdal_cache_mb: PositiveInt = Field(64, description="GDAL block cache per export process, MB")

    @field_validator("blocksize")
    @classmethod
    def _blocksize(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"blocksize {value} must be a multiple of 16 (TIFF tiles)")
        return value


class DemoConfig(StrictModel):
    """Demo workflows only: how ``miso-mapper demo`` shortens the job to fit a laptop.

    The demo cross-validates with ``evaluate --quick`` settings (``evaluate.quick_folds`` folds of each scheme);
    ``demo --quick`` also merges ``quick`` over the workflow (same nesting as the file, e.g.
    ``{train: {epochs: 2}}``) before anything runs.
    """

    quick: dict[str, Any] = Field(default_factory=dict, description="workflow overrides applied by `demo --quick`")


class SampleSitesConfig(StrictModel):
    """Field-sampling guidance (``miso-mapper sample-sites``): where a new label would help the maps most.

    Candidates lie on a lattice of every ``lattice_px`` grid pixels inside the mapped area; each is scored by its
    uncertainty (plus 1 outside the area of applicability) and sites are chosen greedily by score, at least
    ``min_distance_m`` apart, optionally inside the polygons of ``mask`` and within ``max_access_distance_m`` of
    the lines of ``access``. The command's flags override these settings.
    """

    n: PositiveInt = Field(20, description="number of sites to propose")
    min_distance_m: float = Field(500.0, ge=0, description="smallest distance between two sites, grid CRS metres")
    lattice_px: PositiveInt = Field(10, description="candidate spacing, grid pixels (10: every 100 m at 10 m)")
    mask: Path | None = Field(None, description="polygons (GeoJSON/GPKG, any CRS) sites must lie in")
    access: Path | None = Field(None, description="access lines (roads, rivers; GeoJSON/GPKG, any CRS)")
    max_access_distance_m: float | None = Field(
        None, gt=0, description="largest distance from a site to the `access` lines, metres (needs access)")
    directory: Path | None = Field(None, description="output folder (default: output.directory/sample-sites)")

    @model_validator(mode="after")
    def _access_pair(self) -> SampleSitesConfig:
        if (self.access is None) != (self.max_access_distance_m is None):
            raise ValueError("access and max_access_distance_m go together: give both or neither")
        return self


class Workflow(StrictModel):
    """A whole workflow file."""

    name: str
    description: str = ""
    grid: GridConfig = GridConfig()
    region: RegionConfig
    imagery: ImageryConfig = ImageryConfig()
    covariates: CovariatesConfig = CovariatesConfig()
    model: ModelConfig = ModelConfig()
    output: OutputConfig = OutputConfig()
    cluster: ClusterConfig = ClusterConfig()
    cost: CostConfig = CostConfig()
    world: WorldConfig | None = Field(None, description="demo only: the synthetic world to serve")
    points: PointsConfig = PointsConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    demo: DemoConfig = DemoConfig()
    sample_sites: SampleSitesConfig = SampleSitesConfig()

    @model_validator(mode="after")
    def _stac_url(self) -> Workflow:
        if self.imagery.stac_url is None and self.imagery.catalog is None and self.world is None:
            raise ValueError("imagery.stac_url or imagery.catalog is required (only a demo workflow with `world` "
                             "may omit both)")
        return self

    @model_validator(mode="after")
    def _predictor_fits_grid(self) -> Workflow:
        """The MISO predictor's windows must fit the chunks and halo, as ``plan`` and ``run`` need."""
        if self.model.kind == "miso":
            try:
                self.model.predictor.check_grid(self.grid.chunk_size, self.grid.halo)
            except ValueError as exc:
                raise ValueError(f"model.predictor: {exc}") from None
        return self

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of this workflow; identifies the config a store was made by."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Make the known path fields of a raw workflow dict absolute, relative to ``base`` (in place)."""
    for section, key in (
        ("train.init", "satlas"),
        ("train.init", "checkpoint"),
        ("region", "vector"),
        ("imagery", "catalog"),
        ("covariates", "path"),
        ("covariates", "catalog"),
        ("model", "permafrost_checkpoint"),
        ("model", "taxonomy_checkpoint"),
        ("model", "rf_model"),
        ("cluster", "log_directory"),
        ("output", "directory"),
        ("world", "directory"),
        ("points", "path"),
        ("points", "permafrost_zones"),
        ("points", "mlra"),
        ("train", "directory"),
        ("evaluate", "directory"),
        ("export", "directory"),
        ("sample_sites", "mask"),
        ("sample_sites", "access"),
        ("sample_sites", "directory"),
    ):
        part: Any = raw
        for name in section.split("."):
            part = part.get(name) if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(part.get(key), str):
            path = Path(part[key]).expanduser()
            part[key] = str(path if path.is_absolute() else (base / path).resolve())


def _describe(error: ValidationError, source: str) -> str:
    """One readable line per problem: ``file: field.path: reason`` (whole-workflow checks name their fields in
    the reason)."""
    lines = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"])
        reason = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            reason = "unknown key (check the spelling; see workflows/demo.yaml for every key)"
        lines.append(f"{source}: {where}: {reason}" if where else f"{source}: {reason}")
    return "\n".join(lines)


def workflow_from_dict(raw: dict[str, Any], source: str = "<workflow>") -> Workflow:
    """Validate an already-parsed workflow; raise :class:`ConfigError` naming each bad field."""
    try:
        return Workflow.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_workflow(path: str | Path, overrides: dict[str, Any] | None = None) -> Workflow:
    """Read and validate a workflow YAML file.

    Relative paths inside it are resolved against the file's folder. ``overrides`` is a nested dict merged
    over the file's content before validation (used by ``demo`` to point imagery at a served world).
    Raises :class:`ConfigError` (exit code 2) for a missing, unreadable, non-YAML or invalid file.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"workflow file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a workflow must be a mapping of sections, got {type(raw).__name__}")
    merge_overrides(raw, overrides or {})
    _resolve_paths(raw, path.resolve().parent)
    return workflow_from_dict(raw, str(path))


def merge_overrides(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Recursively merge ``extra`` into ``base`` in place."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_overrides(base[key], value)
        else:
            base[key] = value
