"""The export stage: ``maps.zarr`` -> per-tile Cloud Optimized GeoTIFFs, VRT mosaics, statewide overviews, STAC.

Products folder (``export.directory``, default ``<output.directory>/products``)::

    cogs/<layer>/<tile>.tif            one COG per grid tile that holds data, per layer
    cogs/taxonomy_class/<tile>.tif.aux.xml   GDAL category names of the class COG
    cogs/<layer>/<layer>.qml           QGIS style of the layer (load it on any tile of the folder)
    mosaic/<layer>.vrt                 GDAL VRT over every exported tile (relative paths)
    mosaic/<layer>.qml                 QGIS style, loaded with the VRT (paletted classes / colour ramp)
    overview/<layer>.tif               statewide COG at export.overview_resolution (e.g. 500 m)
    overview/taxonomy_class.tif.aux.xml
    overview/<layer>.qml               QGIS style, loaded with the overview
    stac/collection.json               static STAC collection (self-contained, relative hrefs)
    stac/<tile>/<tile>.json            one item per tile, its three COGs as assets

Layers (all uint8, no data 255, grid CRS, EPSG:3338 by default, 10 m):

* ``permafrost_probability``: 1 band, probability x 250 (GDAL scale 0.004, offset 0); overviews AVERAGE
* ``taxonomy_class``: 1 band, index of the most probable soil order, colour table and category names;
  overviews MODE
* ``taxonomy_probability``: 7 bands, one per soil order (band description = order name), x 250; AVERAGE

COGs are tiled (``export.blocksize`` px), DEFLATE or ZSTD compressed with ``export.predictor``, every one
checked with rio-cogeo's validator before it is renamed to its final name (temp name + rename: an error
never leaves a half-written product). Tiles are streamed Zarr-chunk block by block (memory does not grow
with the tile size or the number of tiles) and exported in parallel with ``client.map`` when a Dask client
is given. The statewide overviews are exact block averages / modes (:mod:`miso_mapper.export.aggregate`)
computed from the same blocks, so the store is read once. An export refuses to overwrite existing products
unless ``overwrite=True``; tiles an earlier export of the same store (same ``store_uuid``) left in the
folder stay in the mosaics, overviews and STAC.

Georeferencing comes from the store's own ``spatial_ref`` (:mod:`.source`): every product's grid is a GeoBox
sliced from the store's (tiles), their bounding slice (mosaics) or its ``zoom_out`` (overviews). A store
moved by whole tiles on the workflow's grid is exported where it lies, under the tile ids of that place; a
store off the grid's pixel lattice (other CRS or resolution, sub-pixel shift, partial tiles) is refused.

Modules: :mod:`.run` (the orchestrator), :mod:`.selection` (which tiles), one per product (:mod:`.tiles`,
:mod:`.overview`, :mod:`.mosaic`, :mod:`.qml`, :mod:`.stac`), and their parts (:mod:`.source`, :mod:`.cog`,
:mod:`.aggregate`, :mod:`.layers`, :mod:`.paths`, :mod:`.atomic`).
"""

from miso_mapper.export.run import ExportResult, export_workflow, products_dir

__all__ = ["ExportResult", "export_workflow", "products_dir"]
