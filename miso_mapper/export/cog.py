"""Writing one Cloud Optimized GeoTIFF: a staging GeoTIFF filled window by window, then GDAL's COG driver.

GDAL's COG driver only copies an existing dataset, so a layer is first streamed into an uncompressed tiled
*staging* GeoTIFF (hidden name beside the product), then copied with ``rasterio.shutil.copy(driver="COG")``,
which builds the internal overviews (``OVERVIEW_RESAMPLING``: AVERAGE for probabilities, MODE for classes)
through GDAL's block cache (bounded by ``export.gdal_cache_mb``). The copy is checked with rio-cogeo's
validator and only then renamed to its final name, so a product path never holds a half-written file.

The class layer's category names live in a GDAL PAM sidecar ``<name>.tif.aux.xml`` (GeoTIFF has no tag for
them); it is published just before its COG. The colour table, no data, scale/offset and band descriptions are
inside the TIFF.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.crs import CRS

from miso_mapper.config import ExportConfig
from miso_mapper.errors import MisoError
from miso_mapper.export.atomic import hidden_temp
from miso_mapper.export.layers import LayerSpec, category_names, colour_table
from miso_mapper.pipeline.store import NODATA


def raster_crs(geobox: GeoBox) -> CRS:
    """``geobox``'s CRS for GDAL: by its EPSG code when it has one, so products name it as GDAL's EPSG entry."""
    epsg = geobox.crs.epsg
    return CRS.from_epsg(epsg) if epsg else CRS.from_wkt(geobox.crs.to_wkt())


def cog_options(config: ExportConfig, spec: LayerSpec) -> dict[str, str]:
    """Creation options of GDAL's COG driver for ``spec``."""
    opts = {
        "COMPRESS": config.compress.upper(),
        "PREDICTOR": str(config.predictor),
        "BLOCKSIZE": str(config.blocksize),
        "OVERVIEW_RESAMPLING": spec.resampling.upper(),
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": "1",  # parallelism comes from Dask; GDAL threads would oversubscribe the workers' cores
    }
    if config.level is not None:
        opts["LEVEL"] = str(config.level)
    return opts


@contextlib.contextmanager
def staging(path: Path, spec: LayerSpec, geobox: GeoBox, tags: dict[str, str]) -> Iterator[Any]:
    """Open an uncompressed tiled uint8 GeoTIFF on ``geobox`` with the layer's metadata for windowed writes.

    Blocks never written read back as no data (255), which GDAL fills in when it closes the file.
    """
    profile = {
        "driver": "GTiff", "width": geobox.width, "height": geobox.height, "count": spec.count, "dtype": "uint8",
        "crs": raster_crs(geobox), "transform": geobox.affine, "nodata": NODATA, "tiled": True, "blockxsize": 256,
        "blockysize": 256, "interleave": "pixel" if spec.count > 1 else "band", "BIGTIFF": "IF_SAFER",
    }
    with rasterio.open(path, "w", **profile) as dst:
        for i, band in enumerate(spec.bands, start=1):
            dst.set_band_description(i, band)
        if spec.scale is not None:
            dst.scales = (spec.scale,) * spec.count
            dst.offsets = (spec.offset or 0.0,) * spec.count
        if spec.categorical:
            dst.write_colormap(1, colour_table(spec))
        dst.update_tags(**tags)
        yield dst


def pam_xml(spec: LayerSpec) -> str:
    """The GDAL PAM sidecar of a class COG: band 1's category names (value i -> class i of ``spec``)."""
    cats = "".join(f"<Category>{escape(name)}</Category>" for name in category_names(spec))
    return (f'<PAMDataset>\n  <PAMRasterBand band="1">\n    <CategoryNames>{cats}</CategoryNames>\n'
            "  </PAMRasterBand>\n</PAMDataset>\n")


def validate_cog(path: Path, shown_as: Path | None = None) -> None:
    """Raise :class:`MisoError` unless rio-cogeo's validator accepts ``path`` as a COG."""
    from rio_cogeo.cogeo import cog_validate

    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    if not valid:
        raise MisoError(f"{shown_as or path} is not a valid COG: {'; '.join(errors)}")


def publish_cog(source: Path, final: Path, spec: LayerSpec, config: ExportConfig) -> list[Path]:
    """Copy ``source`` to the COG ``final`` (validated), plus its PAM sidecar for classes; return the files.

    Temporary files are removed on any error; ``final`` (and its sidecar) appear only once complete.
    """
    tmp = hidden_temp(final, "part")
    aux_tmp = hidden_temp(final, "aux")
    try:
        try:
            rasterio.shutil.copy(str(source), str(tmp), driver="COG", **cog_options(config, spec))
        except rasterio.errors.RasterioError as exc:
            raise MisoError(f"cannot write {final}: {exc}") from None
        validate_cog(tmp, final)
        written = [final]
        if spec.categorical:
            aux_tmp.write_text(pam_xml(spec))
            aux = final.with_name(final.name + ".aux.xml")
            os.replace(aux_tmp, aux)
            written.insert(0, aux)
        os.replace(tmp, final)
        return written
    finally:
        tmp.unlink(missing_ok=True)
        aux_tmp.unlink(missing_ok=True)
