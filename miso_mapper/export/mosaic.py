"""GDAL VRT mosaics of the per-tile COGs, written as XML (no GDAL Python bindings here; GDAL reads them).

One VRT per layer spans the bounding box of the exported tiles on the grid (CRS and pixel size of the grid);
each tile is a ``SimpleSource`` with a path relative to the VRT. Pixels outside every tile read as no data
(255). The VRT carries the layer's band descriptions, no data, scale/offset, and for classes the colour
table and category names, and an ``OverviewList`` of the tiles' overview factors (GDAL >= 3.2), so
reduced-resolution reads use the tiles' internal overviews.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS

from miso_mapper.export.layers import LayerSpec, category_names, colour_table
from miso_mapper.pipeline.store import NODATA


@dataclass(frozen=True)
class MosaicSource:
    """One tile COG in a mosaic: its path and its upper-left pixel (row, col) and edge in the mosaic, px."""

    path: Path
    row: int
    col: int
    size: int


def overview_factors(size: int, blocksize: int) -> list[int]:
    """The overview factors GDAL's COG driver gives a ``size`` px tile: halve until it fits one block."""
    factors, f = [], 2
    while -(-size // (f // 2)) > blocksize:
        factors.append(f)
        f *= 2
    return factors


def vrt_xml(spec: LayerSpec, crs: CRS, transform: Affine, height: int, width: int, sources: list[MosaicSource],
            vrt_path: Path, blocksize: int) -> str:
    """The VRT text of a mosaic of ``sources`` over a ``height`` x ``width`` px grid at ``transform``."""
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = crs.to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (transform.c, transform.a, transform.b, transform.f, transform.d, transform.e))
    factors = overview_factors(max(src.size for src in sources), blocksize) if sources else []
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
            for name in category_names():
                ET.SubElement(cats, "Category").text = name
            table = ET.SubElement(band, "ColorTable")
            for _, (r, g, b, a) in sorted(colour_table().items()):
                ET.SubElement(table, "Entry", c1=str(r), c2=str(g), c3=str(b), c4=str(a))
        else:
            ET.SubElement(band, "ColorInterp").text = "Gray" if spec.count == 1 else "Undefined"
        for src in sources:
            simple = ET.SubElement(band, "SimpleSource")
            rel = os.path.relpath(src.path, vrt_path.parent)
            ET.SubElement(simple, "SourceFilename", relativeToVRT="1").text = Path(rel).as_posix()
            ET.SubElement(simple, "SourceBand").text = str(i)
            ET.SubElement(simple, "SourceProperties", RasterXSize=str(src.size), RasterYSize=str(src.size),
                          DataType="Byte", BlockXSize=str(blocksize), BlockYSize=str(blocksize))
            ET.SubElement(simple, "SrcRect", xOff="0", yOff="0", xSize=str(src.size), ySize=str(src.size))
            ET.SubElement(simple, "DstRect", xOff=str(src.col), yOff=str(src.row), xSize=str(src.size),
                          ySize=str(src.size))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
