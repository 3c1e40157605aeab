"""The statewide overviews: one COG per layer at ``export.overview_resolution``, put together from the tiles.

The overview grid is the exported tiles' bounding grid zoomed out by ``factor`` (``GeoBox.zoom_out``); every
tile job hands back its piece on its own tile grid zoomed out the same way (exact block averages / modes,
:mod:`miso_mapper.export.aggregate`), which lands in the staging GeoTIFF at that piece's place in the
overview grid. The store is thus read once for the tile COGs and the overviews together.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import TracebackType
from typing import Any

from odc.geo.geobox import GeoBox
from rasterio.windows import Window

from miso_mapper.config import ExportConfig, Workflow
from miso_mapper.errors import ConfigError
from miso_mapper.export.atomic import hidden_temp
from miso_mapper.export.cog import publish_cog, staging
from miso_mapper.export.layers import LAYER_SPECS, layer_tags
from miso_mapper.export.paths import overview_path
from miso_mapper.export.tiles import Progress, TileResult


def overview_factor(workflow: Workflow) -> int:
    """Grid pixels per statewide-overview pixel (edge); :class:`ConfigError` unless whole and dividing a tile."""
    res, want, tile = workflow.grid.resolution, workflow.export.overview_resolution, workflow.grid.tile_size
    factor = round(want / res)
    if factor < 1 or abs(factor * res - want) > 1e-9 * want or tile % factor:
        raise ConfigError(f"export.overview_resolution {want:g} m must be a whole multiple of grid.resolution "
                          f"({res:g} m) that divides a tile ({tile} px)")
    return factor


class StatewideOverviews:
    """The overview COGs of one export over ``extent`` (whole tiles), as a context manager.

    ``decision_threshold``: the store's, tagged on the permafrost class overview. Entering opens one staging
    GeoTIFF per layer on ``extent.zoom_out(factor)``; :meth:`add` writes a tile's
    pieces; :meth:`publish` turns the stagings into the final COGs; leaving removes whatever staging is left.
    """

    def __init__(self, products: Path, extent: GeoBox, factor: int, tags: dict[str, str],
                 decision_threshold: float) -> None:
        self.geobox = extent.zoom_out(factor)
        """The overview grid: ``extent`` at ``factor`` times coarser pixels."""
        self.factor = factor
        self.tags = tags
        self.decision_threshold = decision_threshold
        self.paths = {spec.name: overview_path(products, spec.name) for spec in LAYER_SPECS}
        self._stage = {name: hidden_temp(path, "staging.tif") for name, path in self.paths.items()}
        self._open = contextlib.ExitStack()
        self._dsts: dict[str, Any] = {}

    def __enter__(self) -> StatewideOverviews:
        try:
            for spec in LAYER_SPECS:
                self.paths[spec.name].parent.mkdir(parents=True, exist_ok=True)
                tags = (self.tags | {"MISO_LAYER": spec.name, "MISO_TILE": "overview"}
                        | layer_tags(spec, self.decision_threshold))
                self._dsts[spec.name] = self._open.enter_context(
                    staging(self._stage[spec.name], spec, self.geobox, tags))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def add(self, result: TileResult) -> None:
        """Write a tile's overview pieces at their place in the overview grid."""
        rows, cols = self.geobox.overlap_roi(result.geobox.zoom_out(self.factor))
        for name, piece in result.coarse.items():
            self._dsts[name].write(piece if piece.ndim == 3 else piece[None], window=Window.from_slices(rows, cols))

    def publish(self, config: ExportConfig, progress: Progress) -> list[Path]:
        """Close the stagings and publish them as the overview COGs (validated); returns the files written."""
        self._open.close()
        files: list[Path] = []
        progress("overviews", 0, len(LAYER_SPECS))
        for n, spec in enumerate(LAYER_SPECS, start=1):
            files += publish_cog(self._stage[spec.name], self.paths[spec.name], spec, config)
            progress("overviews", n, len(LAYER_SPECS))
        return files

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._open.close()
        for path in self._stage.values():
            path.unlink(missing_ok=True)
