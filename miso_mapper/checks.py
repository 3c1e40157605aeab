"""Everything about a workflow that can be checked offline, beyond what its pydantic models check alone.

* the region: its file exists and is readable, its tile ids are the grid's, it lies inside the grid
  (:func:`region_problems`, through :func:`~miso_mapper.region.region_geometry`, the function ``plan`` and
  ``run`` build the region with);
* the files a run or a training reads (:func:`input_problems`): a catalog on disk (``imagery.catalog``,
  ``covariates.catalog``: it opens as STAC and holds items of the collection searched), the covariate folder
  with its layers (source ``folder``), the labelled-points files (when set), the package an imagery profile
  signs hrefs with (:func:`profile_problems`), and the model files ``model.kind`` maps with, when set
  (:func:`model_file_problems`: a MISO checkpoint is a readable safetensors file whose card says the right
  task and ``model.size``; an RF-11 file is a skops file made only of forests, never a pickle);
* the labelled points as ``train`` and ``evaluate`` read them (:func:`points_problems`): label fields,
  spellings and a label of each of their tasks inside the region.
* the weights training starts from (:func:`init_problems`, ``train.init``): a SatlasPretrain zip with backbone
  keys for a reference-size network, or one of our checkpoints of the trained task and size.
* the compute (:func:`compute_problems`): mapping with the ``reference`` network needs GPU workers, unless the
  workflow opts in to CPU with ``model.predictor.device: cpu``.

Who refuses what: ``validate`` refuses every problem (:func:`check_workflow`, exit 2); ``plan`` refuses region
and compute problems and lists the rest as warnings, so a statewide workflow plans on a laptop without its data
(:func:`~miso_mapper.plan.make_plan`); ``run`` refuses the model files, which it also needs set, before any
work (:func:`~miso_mapper.pipeline.predictors.resolve_spec`), the compute first of all (:func:`require_compute`),
the region through the same plan, and the covariates when it searches, before the store exists. Torch is never
imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from miso_mapper.config import ModelConfig, Workflow
from miso_mapper.errors import MisoError, UsageError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow: the field (``model.rf_model``) and what is wrong, in one line."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def region_problems(workflow: Workflow) -> list[Problem]:
    """The region as ``plan`` and ``run`` build it: a missing or unreadable vector file, an unknown tile id, a
    region outside the grid or empty."""
    from miso_mapper.grid import AlaskaGrid
    from miso_mapper.region import region_geometry

    region = workflow.region
    given = next(key for key in ("bbox", "vector", "tiles") if getattr(region, key) is not None)
    try:
        region_geometry(region, AlaskaGrid(workflow.grid))
    except MisoError as exc:
        return [Problem(f"region.{given}", str(exc))]
    return []


def model_file_problems(model: ModelConfig, required: bool = False) -> list[Problem]:
    """The model files set for the predictor ``model.kind`` names: each exists and is a model this package
    loads for that role and size (MISO: :func:`~miso_mapper.model.card.check_checkpoint`; RF-11:
    :func:`~miso_mapper.baseline.rf_file.check_rf_file`). No weights are read, nothing is unpickled.

    ``required`` (``run``): the kind's files must also be set. A workflow may leave them out for ``train``,
    ``evaluate`` and ``demo``, which make them, so ``validate`` and ``plan`` do not ask for them.
    """
    if model.kind == "miso":
        from miso_mapper.model.card import check_checkpoint

        roles = {"permafrost": model.permafrost_checkpoint, "taxonomy": model.taxonomy_checkpoint}
        if required and all(path is None for path in roles.values()):
            return [Problem("model", "kind is 'miso' but neither permafrost_checkpoint nor taxonomy_checkpoint "
                                     "is set")]
        return [Problem(f"model.{role}_checkpoint", str(exc))
                for role, path in roles.items() if path is not None
                for exc in _raised(check_checkpoint, path, role, model.size)]
    if model.kind == "rf":
        if model.rf_model is None:
            return [Problem("model.rf_model", "not set (model.kind is 'rf')")] if required else []
        from miso_mapper.baseline.rf_file import check_rf_file

        return [Problem("model.rf_model", str(exc)) for exc in _raised(check_rf_file, model.rf_model)]
    return []


def input_problems(workflow: Workflow) -> list[Problem]:
    """The files a run or a training reads: covariate folder and layers, points file, model files."""
    problems = catalog_problems(workflow)
    cov = workflow.covariates
    if cov.source == "folder":
        from miso_mapper.imagery.covariates import folder_sources

        if cov.path is None:
            problems.append(Problem("covariates.path", "not set (covariates.source is 'folder')"))
        else:
            problems += [Problem("covariates.path", str(exc))
                         for exc in _raised(folder_sources, cov.path, cov.derive_missing)]
    for key in ("path", "permafrost_zones", "mlra"):
        path = getattr(workflow.points, key)
        if path is not None and not path.is_file():
            problems.append(Problem(f"points.{key}", f"file not found: {path}"))
    return problems + profile_problems(workflow) + model_file_problems(workflow.model) + init_problems(workflow)


def profile_problems(workflow: Workflow) -> list[Problem]:
    """``imagery.profile``: a profile that signs its hrefs (Planetary Computer) needs its signing package."""
    from miso_mapper.imagery.profiles import get_profile

    return [Problem("imagery.profile", str(exc)) for exc in _raised(get_profile(workflow.imagery.profile).signer)]


def catalog_problems(workflow: Workflow) -> list[Problem]:
    """The catalogs on disk imagery and covariates (``source: stac``) are searched in: each opens as STAC and
    has items of its collection."""
    from miso_mapper.imagery.catalog import open_catalog, require_collection

    img, cov = workflow.imagery, workflow.covariates
    wanted = [("imagery.catalog", img.catalog, img.collection)] if img.catalog is not None else []
    if cov.source == "stac" and cov.stac_url is None:
        field = "covariates.catalog" if cov.catalog is not None else "imagery.catalog"
        path = cov.catalog or img.catalog
        wanted += [(field, path, str(cov.collection))] if path is not None else []
    problems = []
    for field, path, collection in wanted:
        try:
            require_collection(open_catalog(path), collection)
        except MisoError as exc:
            problems.append(Problem(field, str(exc)))
    return list(dict.fromkeys(problems))


def init_problems(workflow: Workflow) -> list[Problem]:
    """``train.init``: the file exists and fits the network ``train`` builds (key names and size, read from
    the file's structure without torch or unpickling; shapes are checked when ``train`` starts)."""
    init, size = workflow.train.init, workflow.train.size or workflow.model.size
    task = workflow.train.tasks[0]
    from miso_mapper.model.config import MisoNetConfig

    if init.satlas is not None:
        from miso_mapper.model.satlas_file import check_satlas_file

        config = MisoNetConfig.preset(size, task)
        return [Problem("train.init.satlas", str(exc)) for exc in _raised(check_satlas_file, init.satlas, config)]
    if init.checkpoint is not None:
        from miso_mapper.model.card import check_checkpoint

        problems = [Problem("train.init.checkpoint", str(exc))
                    for exc in _raised(check_checkpoint, init.checkpoint, task, size)]
        if not problems and len(workflow.train.tasks) > 1:
            problems.append(Problem("train.init.checkpoint", f"a {task} network cannot start "
                                    f"{len(workflow.train.tasks)} tasks; set train.tasks to [{task}]"))
        return problems
    return []


def points_problems(workflow: Workflow) -> list[Problem]:
    """The labelled points as ``train`` and ``evaluate`` read them (:func:`~miso_mapper.points.load_points`):
    the label field of each of their tasks present, every label value an accepted spelling, and a label of
    each task left inside the region. Nothing to check when the points file (or the world's) does not exist.
    """
    from miso_mapper.points import TASK_FIELDS, load_points, points_path

    try:
        path = points_path(workflow)
    except MisoError:
        return []
    if not path.is_file():
        return []
    tasks = [t for t in TASK_FIELDS if t in workflow.train.tasks or t in workflow.evaluate.tasks]
    field = "points.path" if workflow.points.path is not None else "points"
    return [Problem(field, str(exc)) for exc in _raised(load_points, workflow, tasks)]


#: FLOP/s one CPU core sustains on the reference network: 0.15 windows/s (both encoders + 1,024 queries, ~198 GFLOP
#: per window) with 2 torch threads on a shared AMD EPYC (benchmarks/README.md, "Model FLOPs and CPU speed",
#: 2026-11-25, `benchmarks/model.py --threads 2`). A faster CPU changes the days, not the verdict.
CPU_FLOPS_PER_CORE = 15e9


def needs_gpu(workflow: Workflow) -> bool:
    """True when the workflow maps with the ``reference`` MISO network on a cluster without GPU workers
    (:attr:`~miso_mapper.config.ClusterConfig.has_gpu_workers`) and has not opted in to CPU
    (``model.predictor.device: cpu``)."""
    model = workflow.model
    predictor = model.predictor  # a dict in a workflow made by model_copy(update=...): checked_predictor_config
    device = predictor.get("device", "auto") if isinstance(predictor, Mapping) else predictor.device
    return (model.kind == "miso" and model.size == "reference" and device != "cpu"
            and not workflow.cluster.has_gpu_workers)


def compute_problems(workflow: Workflow, flop: float | None = None) -> list[Problem]:
    """The reference network on a cluster without GPUs (:func:`needs_gpu`), in one line with the two fixes and,
    given the plan's ``flop`` (else counted here when the region can be built), what it would cost: GPU-hours at
    ``cost.gpu_sustained_tflops`` and days on the cluster's CPU cores at :data:`CPU_FLOPS_PER_CORE`."""
    if not needs_gpu(workflow):
        return []
    cluster = workflow.cluster
    where = "kind 'local'" if cluster.kind == "local" else f"kind {cluster.kind!r} with gpus_per_worker 0"
    return [Problem("cluster", f"the reference network would map on CPUs only ({where}"
                    f"{_cpu_cost(workflow, _planned_flop(workflow) if flop is None else flop)}): ask for GPUs "
                    "(cluster.gpus_per_worker: 1, or kind: local-cuda) or opt in to CPU with "
                    "model.predictor.device: cpu")]


def _cpu_cost(workflow: Workflow, flop: float | None) -> str:
    """``; ≈ 3.9 h on one GPU at 200 TFLOP/s, but ≈ 34 days on its 64 CPU cores at ~15 GFLOP/s per core (measured)``
    ('' without FLOPs; the CPU time only where the cluster says its cores: not for address)."""
    if not flop:
        return ""
    cluster, tflops = workflow.cluster, workflow.cost.gpu_sustained_tflops
    gpu = f"; ≈ {_duration(flop / (tflops * 1e12))} on one GPU at {tflops:g} TFLOP/s"
    rate = f"~{CPU_FLOPS_PER_CORE / 1e9:g} GFLOP/s per CPU core (measured)"
    if cluster.kind == "address":
        return f"{gpu}, but {rate}"
    cores = cluster.n_workers * cluster.threads_per_worker
    return f"{gpu}, but ≈ {_duration(flop / (cores * CPU_FLOPS_PER_CORE))} on its {cores} CPU cores at {rate}"


def _duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.9 h``, ``34 days``: two significant figures at most."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.2g} {unit}" if seconds < 10 * size else f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.2g} s"


def require_compute(workflow: Workflow, flop: float | None = None) -> None:
    """Raise :class:`UsageError` (exit 2) with :func:`compute_problems`' line, if any."""
    problems = compute_problems(workflow, flop)
    if problems:
        raise UsageError(str(problems[0]))


def _planned_flop(workflow: Workflow) -> float | None:
    """The plan's FLOP count (:func:`~miso_mapper.workload.planned_flop`); None when the region cannot be built."""
    from miso_mapper.workload import planned_flop

    try:
        return planned_flop(workflow)
    except MisoError:
        return None


def workflow_problems(workflow: Workflow) -> list[Problem]:
    """Every problem :mod:`miso_mapper.checks` finds, region first; the points only in a valid region."""
    region = region_problems(workflow)
    compute = compute_problems(workflow, 0.0 if region else None)
    return region + compute + input_problems(workflow) + ([] if region else points_problems(workflow))


def check_workflow(workflow: Workflow, source: str = "<workflow>") -> None:
    """Raise :class:`UsageError` (exit 2) with one line per problem, ``source: field: problem``, if any."""
    problems = workflow_problems(workflow)
    if problems:
        raise UsageError("\n".join(f"{source}: {p}" for p in problems))


def _raised(check: Callable[..., object], *args: object) -> list[MisoError]:
    """[the MisoError ``check(*args)`` raised] or []."""
    try:
        check(*args)
    except MisoError as exc:
        return [exc]
    return []
