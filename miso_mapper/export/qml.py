"""QGIS layer style files (``.qml``) of the exported layers, from :mod:`miso_mapper.style`.

A class layer gets QGIS's ``paletted`` renderer (one ``paletteEntry`` per class: value, colour, name); a
continuous layer a ``singlebandpseudocolor`` renderer whose interpolated colour ramp spans the style ramp's
physical range. QGIS applies a band's GDAL scale/offset before rendering, so the ramp's values are physical
(a probability 0-1, not the stored 0-250). No data (255) is the raster's own no-data value, so QGIS leaves it
transparent. Multi-band layers (``taxonomy_probability``) are styled on band 1 (the first soil order); the
band can be switched in QGIS.

QGIS loads ``<name>.qml`` beside ``<name>.vrt`` / ``<name>.tif`` as the layer's default style, so the mosaics
and statewide overviews come up styled; ``cogs/<layer>/<layer>.qml`` styles any tile of that folder through
Layer Properties > Style > Load Style.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from miso_mapper.export.atomic import write_text_atomic
from miso_mapper.export.layers import LAYER_SPECS, LayerSpec
from miso_mapper.style import LAYER_RAMPS, css

#: The QGIS version written into the files (QGIS 3 reads styles of any 3.x).
QGIS_VERSION = "3.28.0-Firenze"
_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"


def qml_text(spec: LayerSpec) -> str:
    """The QGIS 3 style document of layer ``spec`` (paletted for classes, a colour ramp otherwise)."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="AllStyleCategories",
                      hasScaleBasedVisibilityFlag="0", minScale="1e+08", maxScale="0")
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    # class values must never be blended: nearest neighbour in and out
    ET.SubElement(provider, "resampling", enabled="false", maxOversampling="2",
                  zoomedInResamplingMethod="nearestNeighbour", zoomedOutResamplingMethod="nearestNeighbour")
    if spec.categorical:
        _paletted(pipe, spec)
    else:
        _pseudocolor(pipe, spec)
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0", colorizeRed="255",
                  colorizeGreen="128", colorizeBlue="128", colorizeStrength="100", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return _DOCTYPE + ET.tostring(root, encoding="unicode") + "\n"


def _paletted(pipe: ET.Element, spec: LayerSpec) -> ET.Element:
    renderer = _renderer(pipe, type="paletted")
    palette = ET.SubElement(renderer, "colorPalette")
    for cls in sorted(spec.classes, key=lambda c: c.value):
        ET.SubElement(palette, "paletteEntry", value=str(cls.value), color=css(cls.colour), alpha="255",
                      label=cls.name)
    return renderer


def _pseudocolor(pipe: ET.Element, spec: LayerSpec) -> ET.Element:
    ramp = LAYER_RAMPS[spec.name]
    lo, hi = f"{ramp.minimum:g}", f"{ramp.maximum:g}"
    renderer = _renderer(pipe, type="singlebandpseudocolor", classificationMin=lo, classificationMax=hi)
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", colorRampType="INTERPOLATED",
                           classificationMode="1", clip="0", minimumValue=lo, maximumValue=hi, labelPrecision="3")
    for value, colour in ramp.stops:
        ET.SubElement(shader, "item", value=f"{value:g}", color=css(colour), alpha="255", label=f"{value:g}")
    return renderer


def _renderer(pipe: ET.Element, **attrs: str) -> ET.Element:
    """A band-1 ``rasterrenderer`` with its transparency and fixed limits (``None``: QGIS keeps the style's
    range instead of stretching to the data)."""
    renderer = ET.SubElement(pipe, "rasterrenderer", band="1", opacity="1", alphaBand="-1", nodataColor="", **attrs)
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (("limits", "None"), ("extent", "WholeRaster"), ("statAccuracy", "Estimated"),
                      ("cumulativeCutLower", "0.02"), ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")):
        ET.SubElement(origin, tag).text = text
    return renderer


def write_styles(products: Path, mosaics: dict[str, Path], overviews: dict[str, Path]) -> list[Path]:
    """Write each layer's style beside its VRT mosaic (``mosaics``: layer -> VRT path) and statewide overview
    (``overviews``: layer -> COG path), and as ``cogs/<layer>/<layer>.qml``; returns the files written."""
    paths = []
    for spec in LAYER_SPECS:
        text = qml_text(spec)
        targets = [products / "cogs" / spec.name / f"{spec.name}.qml"]
        targets += [p.with_suffix(".qml") for p in (mosaics.get(spec.name), overviews.get(spec.name)) if p]
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(path, text)
            paths.append(path)
    return paths
