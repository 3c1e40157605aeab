"""GDAL VRT mosaics of the per-tile COGs, written as XML (no GDAL Python bindings here; GDAL reads them).

One VRT per layer spans the exported tiles' bounding grid (a slice of the store's GeoBox: its CRS, pixel size
and ``GeoTransform``); each tile is a ``SimpleSource`` with a path relative to the VRT, placed at its tile
grid's place in the mosaic grid. Pixels outside every tile read as no data (255). The VRT carries the layer's
band descriptions, no data, scale/offset, and for classes the colour table and category names, and an
``OverviewList`` of the tiles' overview factors (GDAL >= 3.2), so reduced-resolution reads use the tiles'
internal overviews.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from odc.geo.geobox import GeoBox

from miso_mapper.export.atomic import write_text_atomic
from miso_mapper.export.cog import raster_crs
from miso_mapper.export.layers import LAYER_SPECS, LayerSpec, category_names, colour_table
from miso_mapper.export.paths import cog_path, mosaic_path
from miso_mapper.pipeline.store import NODATA


def overview_factors(size: int, blocksize: int) -> list[int]:
    """The overview factors GDAL's COG driver gives a ``size`` px tile: halve until it fits one block."""
    factors, f = [], 2
    while -(-size // (f // 2)) > blocksize:
        factors.append(f)
        f *= 2
    return factors


def write_mosaics(products: Path, tiles: dict[str, GeoBox], geobox: GeoBox, blocksize: int) -> dict[str, Path]:
    """Write one VRT per layer over ``geobox`` with the COGs of ``tiles`` (id -> tile grid); layer -> VRT path."""
    mosaics = {}
    for spec in LAYER_SPECS:
        path = mosaic_path(products, spec.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        sources = {cog_path(products, spec.name, tile): tile_geobox for tile, tile_geobox in tiles.items()}
        write_text_atomic(path, vrt_xml(spec, geobox, sources, path, blocksize))
        mosaics[spec.name] = path
    return mosaics


def vrt_xml(spec: LayerSpec, geobox: GeoBox, sources: dict[Path, GeoBox], vrt_path: Path, blocksize: int) -> str:
    """The VRT text of a mosaic over ``geobox`` of ``sources`` (raster path -> its grid, a sub-grid of ``geobox``)."""
    root = ET.Element("VRTDataset", rasterXSize=str(geobox.width), rasterYSize=str(geobox.height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = raster_crs(geobox).to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in geobox.affine.to_gdal())
    factors = overview_factors(max(max(g.shape) for g in sources.values()), blocksize) if sources else []
    if factors:  # reduced-resolution reads then use the tiles' internal overviews
        ET.SubElement(root, "OverviewList", resampling=spec.resampling).text = " ".join(map(str, factors))
    meta = ET.SubElement(root, "Metadata")
    ET.SubElement(meta, "MDI", key="MISO_LAYER").text = spec.name
    for i, band_name in enumerate(spec.bands, start=1):
        band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band=str(i))
        ET.SubElement(band, "Description").text = band_name
        ET.SubElement(band, "NoDataValue").text = str(NODATA)
        if spec.scale is not None:
            ET.SubElement(band, "Offset").text = repr(float(spec.offset or 0.0))
            ET.SubElement(band, "Scale").text = repr(float(spec.scale))
        if spec.categorical:
            ET.SubElement(band, "ColorInterp").text = "Palette"
            cats = ET.SubElement(band, "CategoryNames")
            for name in category_names(spec):
                ET.SubElement(cats, "Category").text = name
            table = ET.SubElement(band, "ColorTable")
            for _, (r, g, b, a) in sorted(colour_table(spec).items()):
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
        else:
            ET.SubElement(band, "ColorInterp").text = "Gray" if spec.count == 1 else "Undefined"
        for path, src in sources.items():
            _simple_source(ET.SubElement(band, "SimpleSource"), i, path, src, geobox, vrt_path, blocksize)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def _simple_source(simple: ET.Element, band: int, path: Path, src: GeoBox, mosaic: GeoBox, vrt_path: Path,
                   blocksize: int) -> None:
    """Fill a ``SimpleSource``: band ``band`` of the raster at ``path`` on grid ``src``, placed in ``mosaic``."""
    rows, cols = mosaic.overlap_roi(src)
    w, h = str(src.width), str(src.height)
    rel = os.path.relpath(path, vrt_path.parent)
    ET.SubElement(simple, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
    ET.SubElement(simple, "SourceBand").text = str(band)
    ET.SubElement(simple, "SourceProperties", RasterXSize=w, RasterYSize=h, DataType="Byte",
                  BlockXSize=str(blocksize), BlockYSize=str(blocksize))
    ET.SubElement(simple, "SrcRect", xOff="0", yOff="0", xSize=w, ySize=h)
    ET.SubElement(simple, "DstRect", xOff=str(cols.start), yOff=str(rows.start), xSize=w, ySize=h)
