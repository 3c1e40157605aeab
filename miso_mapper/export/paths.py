"""Where every export product goes under the products folder (layout: :mod:`miso_mapper.export`)."""

from __future__ import annotations

from pathlib import Path

from miso_mapper.config import Workflow
from miso_mapper.export.layers import LAYER_SPECS
from miso_mapper.layout import RunLayout


def products_dir(workflow: Workflow) -> Path:
    """The products folder (``export.directory`` or ``output.directory/products``: :class:`RunLayout`)."""
    return RunLayout.of(workflow).products


def cog_path(products: Path, layer: str, tile: str) -> Path:
    """Where a tile's COG of ``layer`` goes."""
    return products / "cogs" / layer / f"{tile}.tif"


def mosaic_path(products: Path, layer: str) -> Path:
    """Where the VRT mosaic of ``layer`` goes."""
    return products / "mosaic" / f"{layer}.vrt"


def overview_path(products: Path, layer: str) -> Path:
    """Where the statewide overview COG of ``layer`` goes."""
    return products / "overview" / f"{layer}.tif"


def stac_dir(products: Path) -> Path:
    """The STAC folder (``collection.json`` and one folder per tile item)."""
    return products / "stac"


def planned_paths(products: Path, tiles: list[str]) -> list[Path]:
    """Every product path an export of ``tiles`` writes (the STAC folder by its collection file)."""
    paths = []
    for spec in LAYER_SPECS:
        aux = [".aux.xml"] if spec.categorical else []
        for tile in tiles:
            cog = cog_path(products, spec.name, tile)
            paths += [cog] + [cog.with_name(cog.name + s) for s in aux]
        overview = overview_path(products, spec.name)
        paths += [mosaic_path(products, spec.name), overview]
        paths += [overview.with_name(overview.name + s) for s in aux]
    return paths + [stac_dir(products) / "collection.json"]
