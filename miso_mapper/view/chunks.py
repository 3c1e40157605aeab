"""The run manifest's chunks as GeoJSON for the viewer's chunk-status overlay.

Each manifest row becomes a polygon (the chunk's interior, EPSG:4326 as GeoJSON requires) with properties
``id``, ``tile``, ``status`` (``done``, ``failed``, or ``pending`` for pending and running rows: a
``running`` row left by a killed run is not done), ``attempts`` and ``last_error``. No manifest (a store
written by hand or copied without it): an empty collection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from odc.geo.geom import polygon

from miso_mapper.grid import AlaskaGrid
from miso_mapper.pipeline.manifest import Manifest


def chunk_status_geojson(manifest: Path, grid: AlaskaGrid) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of every chunk in ``manifest`` with its status (see the module doc)."""
    if not manifest.is_file():
        return {"type": "FeatureCollection", "features": []}
    with Manifest(manifest) as m:
        rows = m.rows()
    features = []
    for row in rows:
        x0, y0, x1, y1 = grid.chunk(row.row, row.col).geobox.boundingbox
        ring = polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)], grid.geobox.crs).to_crs("EPSG:4326")
        status = row.status if row.status in ("done", "failed") else "pending"
        features.append({"type": "Feature", "geometry": ring.json, "properties": {
            "id": row.id, "tile": row.tile, "status": status, "attempts": row.attempts,
            "last_error": row.last_error}})
    return {"type": "FeatureCollection", "features": features}
