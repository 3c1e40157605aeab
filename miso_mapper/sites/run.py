"""``miso-mapper sample-sites``: rank candidate field sites where a new label would help the maps most.

Reads the run's ``maps.zarr`` (never writes it), scores lattice pixels (:func:`~miso_mapper.sites.layers.score`:
uncertainty, plus 1 outside the area of applicability), keeps those the mask and access lines allow, chooses
sites greedily at least ``min_distance_m`` apart and writes them as GeoJSON and CSV.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from miso_mapper.config import SampleSitesConfig, Workflow
from miso_mapper.errors import MisoError
from miso_mapper.grid import AlaskaGrid
from miso_mapper.layout import RunLayout, SitesLayout
from miso_mapper.pipeline.store import open_store
from miso_mapper.sites.candidates import exact_keep, scan_store
from miso_mapper.sites.constraints import Constraints, read_union
from miso_mapper.sites.layers import SCORE_LAYERS
from miso_mapper.sites.output import site_records, write_sites
from miso_mapper.sites.select import greedy_sites


@dataclass
class SitesResult:
    """What :func:`sample_sites` wrote: the site records (rank 1 first), where, and the settings used."""

    records: list[dict[str, Any]]
    layout: SitesLayout
    settings: SampleSitesConfig
    candidates: int
    """candidates kept for the greedy choice (the best ones; all of them when few)."""
    notes: list[str]


def resolve_settings(workflow: Workflow, overrides: dict[str, Any]) -> SampleSitesConfig:
    """The workflow's ``sample_sites`` section with the non-None ``overrides`` (command-line flags) merged in;
    :class:`MisoError` (one line per problem) when the result is invalid."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SampleSitesConfig.model_validate(workflow.sample_sites.model_dump() | given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'sample-sites'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise MisoError(f"sample-sites settings: {problems}") from None


def sample_sites(workflow: Workflow, overrides: dict[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> SitesResult:
    """Choose and write the field sites of ``workflow``'s run (see the module doc).

    ``overrides`` are :class:`SampleSitesConfig` fields that replace the workflow's (None: keep);
    ``progress(done, total)`` follows the store's Zarr chunks. Raises :class:`MisoError`, writing nothing,
    when there is no store, it lacks the layers, a mask or access file is unusable, or no candidate is left.
    """
    settings = resolve_settings(workflow, overrides or {})
    layout = RunLayout.of(workflow)
    sites_layout = SitesLayout(settings.directory) if settings.directory else layout.sample_sites
    if not layout.store.exists():
        raise MisoError(f"no map store at {layout.store}: map the region first (miso-mapper run)")
    store = open_store(layout.store, AlaskaGrid(workflow.grid))
    missing = [name for name in SCORE_LAYERS if name not in store.group]
    if missing:
        raise MisoError(f"{layout.store} lacks the layers {', '.join(missing)} (made by an older miso-mapper): "
                        "map again with `miso-mapper run --overwrite`")
    constraints = _constraints(settings, workflow.grid.crs)
    spacing = settings.lattice_px * workflow.grid.resolution
    candidates = scan_store(store, settings.lattice_px, exact_keep(settings.n, settings.min_distance_m, spacing),
                            accept=constraints.accept if constraints.active else None,
                            block_filter=constraints.may_hold if constraints.active else None, progress=progress)
    if not len(candidates):
        raise MisoError(f"no candidate site: no mapped pixel of {layout.store} on the {spacing:g} m lattice"
                        + _where(settings))
    chosen = greedy_sites(candidates, settings.n, settings.min_distance_m)
    picked = candidates.take(chosen)
    records = site_records(candidates, chosen, workflow.grid.crs, constraints.access_distance(picked.x, picked.y))
    write_sites(sites_layout, records)
    return SitesResult(records, sites_layout, settings, len(candidates), _notes(settings, candidates, records))


def _constraints(settings: SampleSitesConfig, grid_crs: str) -> Constraints:
    mask = None if settings.mask is None else read_union(settings.mask, "polygon", grid_crs, "sample_sites.mask")
    if mask is not None and mask.area == 0:
        raise MisoError(f"sample_sites.mask: the polygons of {settings.mask} enclose no area")
    access = None if settings.access is None else read_union(settings.access, "line", grid_crs,
                                                             "sample_sites.access")
    return Constraints(mask, access, settings.max_access_distance_m or 0.0)


def _where(settings: SampleSitesConfig) -> str:
    parts = []
    if settings.mask is not None:
        parts.append(f"inside the mask {Path(settings.mask).name}")
    if settings.access is not None:
        parts.append(f"within {settings.max_access_distance_m:g} m of the access lines {Path(settings.access).name}")
    return (" " + " and ".join(parts)) if parts else ""


def _notes(settings: SampleSitesConfig, candidates: Any, records: list[dict[str, Any]]) -> list[str]:
    notes = []
    if len(records) < settings.n:
        notes.append(f"only {len(records)} of {settings.n} sites fit {settings.min_distance_m:g} m apart"
                     + _where(settings))
    if not (candidates.score > 0).any():
        notes.append("the uncertainty and AOA layers hold no data at any candidate (a map by RF-11 or the "
                     "synthetic stand-in?): the sites are only spread out")
    return notes
