"""GeoZarr-style georeferencing attributes of ``maps.zarr``: the Zarr conventions ``proj:`` and ``spatial``.

GeoZarr is converging on two composable Zarr conventions placed on a group (and so inherited by its direct
child arrays): ``proj:`` (github.com/zarr-experimental/geo-proj, v1) names the CRS (``proj:code`` as
``AUTHORITY:CODE`` when the CRS has one, ``proj:wkt2`` always), ``spatial`` (github.com/zarr-conventions/spatial,
v1) maps array indices to coordinates (``spatial:dimensions``, ``spatial:transform`` in Rasterio/Affine order
``[a, b, c, d, e, f]`` of the upper-left *corner*, ``spatial:shape`` [rows, cols], ``spatial:bbox``
[xmin, ymin, xmax, ymax], ``spatial:registration`` ``pixel``). Both are declared in ``zarr_conventions``.

They describe the same grid as the store's CF ``spatial_ref`` variable, which stays the one miso-mapper reads
(:func:`miso_mapper.grid.geobox_from_spatial_ref`); these attributes are for other tools (rioxarray, GDAL's
coming GeoZarr support) and are written once, when the store is created.
"""

from __future__ import annotations

from typing import Any

from odc.geo.geobox import GeoBox

#: The ``zarr_conventions`` entries of the two conventions (as their specifications register them).
PROJ_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-experimental/geo-proj/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-experimental/geo-proj/blob/v1/README.md",
    "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
    "name": "proj:",
    "description": "Coordinate reference system information for geospatial data",
}
SPATIAL_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/spatial/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
    "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
    "name": "spatial",
    "description": "Spatial coordinate information",
}


def geozarr_attrs(geobox: GeoBox) -> dict[str, Any]:
    """The group attributes that georeference ``geobox`` (y, x pixels of the store) by the ``proj:`` and
    ``spatial`` conventions; coordinates in the grid CRS's units (metres for EPSG:3338)."""
    epsg = geobox.crs.epsg
    box = geobox.boundingbox
    attrs: dict[str, Any] = {
        "zarr_conventions": [PROJ_CONVENTION, SPATIAL_CONVENTION],
        "proj:wkt2": geobox.crs.to_wkt(),
        "spatial:dimensions": ["y", "x"],
        "spatial:transform": [float(v) for v in list(geobox.affine)[:6]],
        "spatial:shape": [int(n) for n in geobox.shape],
        "spatial:bbox": [float(box.left), float(box.bottom), float(box.right), float(box.top)],
        "spatial:registration": "pixel",
    }
    if epsg:
        attrs["proj:code"] = f"EPSG:{epsg}"
    return attrs
