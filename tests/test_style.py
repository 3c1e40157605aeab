"""One style: the report, the COG and VRT colour tables, STAC and the QGIS styles agree; the QML files are the
structure QGIS 3 writes (paletted classes, physical-unit colour ramps)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from odc.geo.geobox import GeoBox
from PIL import Image

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.export import export_workflow
from miso_mapper.export.layers import LAYER_SPECS, LAYERS
from miso_mapper.export.qml import qml_text
from miso_mapper.report.quicklooks import _soil_order
from miso_mapper.report.source import Preview
from miso_mapper.style import LAYER_RAMPS, SOIL_ORDER_COLOURS, legend, rgb

from .test_export import make_store


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("style")
    return export_workflow(make_store(out))


def _qml_palette(path: Path) -> dict[int, tuple[str, str]]:
    """value -> (label, '#rrggbb') of a paletted QML."""
    root = ET.parse(path).getroot()
    entries = root.findall("./pipe/rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    return {int(e.get("value")): (e.get("label"), e.get("color")) for e in entries}


def _report_colours() -> set[tuple[int, int, int]]:
    """RGB colours in the report's soil-order quicklook of a preview holding every order in big blocks."""
    from miso_mapper.htmlpage import figure_png
    from miso_mapper.report.mapfig import new_figure

    classes = np.repeat(np.arange(7, dtype=np.uint8), 20)[None, :].repeat(40, axis=0)
    geobox = GeoBox.from_bbox((0, 0, 140_000, 40_000), "EPSG:3338", resolution=1000)
    nan = np.full(classes.shape, np.nan, np.float32)
    preview = Preview(nan, classes, nan, 1, geobox)
    fig, ax = new_figure(preview.extent)
    _soil_order(fig, ax, preview)
    with Image.open(io.BytesIO(figure_png(fig, dpi=50))) as im:
        return {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 20)}


def test_every_soil_order_has_one_colour_everywhere(exported):
    products = exported.products
    with rasterio.open(next((products / "cogs" / "taxonomy_class").glob("*.tif"))) as src:
        cog = src.colormap(1)
        cog_names = src.descriptions  # band description; category names sit in the .aux.xml
    vrt = ET.parse(products / "mosaic" / "taxonomy_class.vrt").getroot()
    vrt_table = [tuple(int(e.get(k)) for k in ("c1", "c2", "c3")) for e in vrt.iter("Entry")]
    vrt_names = [c.text for c in vrt.iter("Category")]
    item = next(pystac.Collection.from_file(str(exported.stac)).get_items(recursive=True))
    stac_classes = item.assets["taxonomy_class"].extra_fields["classification:classes"]
    stac = {c["value"]: (c["name"], c["color_hint"]) for c in stac_classes}
    qml = _qml_palette(products / "mosaic" / "taxonomy_class.qml")
    report = _report_colours()
    assert cog_names == ("taxonomy_class",)
    for i, name in enumerate(SOIL_ORDERS):
        colour = SOIL_ORDER_COLOURS[name]
        assert cog[i][:3] == rgb(colour) and cog[i][3] == 255, name
        assert vrt_table[i] == rgb(colour) and vrt_names[i] == name
        assert stac[i] == (name, colour)
        assert qml[i] == (name, "#" + colour.lower())
        assert rgb(colour) in report, name  # the quicklook draws this order in the exported colour
    assert legend("taxonomy_class") == [(n, SOIL_ORDER_COLOURS[n]) for n in SOIL_ORDERS]


def test_a_qml_beside_every_mosaic_overview_and_cog_folder(exported):
    products = exported.products
    for spec in LAYER_SPECS:
        paths = [products / "mosaic" / f"{spec.name}.qml", products / "overview" / f"{spec.name}.qml",
                 products / "cogs" / spec.name / f"{spec.name}.qml"]
        for path in paths:
            assert path.read_text() == qml_text(spec), path
            assert path in exported.files
        # QGIS picks up <name>.qml for <name>.vrt / <name>.tif
        assert (products / "mosaic" / f"{spec.name}.vrt").is_file()
        assert (products / "overview" / f"{spec.name}.tif").is_file()


@pytest.mark.parametrize("name", [spec.name for spec in LAYER_SPECS])
def test_qml_has_the_structure_qgis_writes(name):
    spec = LAYERS[name]
    text = qml_text(spec)
    assert text.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n")
    root = ET.fromstring(text)
    assert root.tag == "qgis" and root.get("version").startswith("3.")
    assert [c.tag for c in root] == ["pipe", "blendMode"]
    pipe = root.find("pipe")
    assert [c.tag for c in pipe] == ["provider", "rasterrenderer", "brightnesscontrast", "huesaturation",
                                     "rasterresampler", "resamplingStage"]
    renderer = pipe.find("rasterrenderer")
    assert renderer.get("band") == "1" and renderer.get("opacity") == "1" and renderer.get("alphaBand") == "-1"
    assert [c.tag for c in renderer][:2] == ["rasterTransparency", "minMaxOrigin"]
    assert renderer.findtext("minMaxOrigin/limits") == "None"  # fixed range, not a stretch to the data
    if spec.categorical:
        assert renderer.get("type") == "paletted"
        entries = renderer.findall("colorPalette/paletteEntry")
        assert [(int(e.get("value")), e.get("label")) for e in entries] == [(c.value, c.name) for c in spec.classes]
        assert all(e.get("color") == "#" + c.colour.lower() and e.get("alpha") == "255"
                   for e, c in zip(entries, spec.classes, strict=True))
        assert 255 not in {int(e.get("value")) for e in entries}  # no data stays transparent
    else:
        ramp = LAYER_RAMPS[name]
        assert renderer.get("type") == "singlebandpseudocolor"
        shader = renderer.find("rastershader/colorrampshader")
        assert shader.get("colorRampType") == "INTERPOLATED"
        values = [float(i.get("value")) for i in shader.findall("item")]
        assert values == sorted(values) and len(values) >= 2
        assert float(shader.get("minimumValue")) == values[0] == ramp.minimum
        assert float(shader.get("maximumValue")) == values[-1] == ramp.maximum
        assert float(renderer.get("classificationMax")) == ramp.maximum


def test_ramps_are_in_physical_units():
    # QGIS applies the band's GDAL scale: a probability ramp ends at 1, not at the stored 250
    for name in ("permafrost_probability", "taxonomy_probability", "taxonomy_entropy", "masked_fraction"):
        assert (LAYER_RAMPS[name].minimum, LAYER_RAMPS[name].maximum) == (0.0, 1.0)
        assert LAYERS[name].scale * 250 == pytest.approx(1.0)
    for name in ("permafrost_spread", "taxonomy_spread"):
        assert LAYER_RAMPS[name].maximum == 0.5 <= 254 * LAYERS[name].scale
    assert LAYERS["valid_observations"].scale is None and LAYER_RAMPS["valid_observations"].maximum <= 254
    styled = set(LAYER_RAMPS) | {spec.name for spec in LAYER_SPECS if spec.categorical}
    assert styled == {spec.name for spec in LAYER_SPECS}  # every exported layer has a style, nothing else
