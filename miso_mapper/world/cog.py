"""Writing Cloud-Optimized GeoTIFFs (the only raster I/O of the world generator)."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from odc.geo.geobox import GeoBox
from rasterio.crs import CRS

#: Internal tile size (px) of every COG.
BLOCKSIZE = 256


def write_cog(path: Path, data: np.ndarray, grid: GeoBox, nodata: float | int | None,
              overview_resampling: str = "average", description: str | None = None) -> None:
    """Write ``data`` (rows, cols) or (bands, rows, cols) on ``grid`` as a COG at ``path``.

    DEFLATE with predictor (2 for integers, 3 for floats), 256 px internal tiles, overviews down to one
    tile made with ``overview_resampling`` ('average', 'nearest', 'mode'). dtype is ``data``'s; ``nodata``
    is written into the file's metadata. The output bytes depend only on the inputs (no timestamps).
    """
    arr = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    mem = f"/vsimem/miso-world-{uuid.uuid4().hex}.tif"
    profile = dict(driver="GTiff", width=arr.shape[2], height=arr.shape[1], count=arr.shape[0],
                   dtype=arr.dtype.name, crs=CRS.from_epsg(grid.crs.epsg), transform=grid.affine,
                   nodata=nodata, tiled=True, blockxsize=BLOCKSIZE, blockysize=BLOCKSIZE)
    try:
        with rasterio.open(mem, "w", **profile) as dst:
            dst.write(arr)
            if description:
                dst.set_band_description(1, description)
        rasterio.shutil.copy(mem, str(path), driver="COG", COMPRESS="DEFLATE", LEVEL=6, PREDICTOR="YES",
                             BLOCKSIZE=BLOCKSIZE, OVERVIEW_RESAMPLING=overview_resampling.upper(),
                             NUM_THREADS=1, STATISTICS="NO")
    finally:
        rasterio.shutil.delete(mem)
