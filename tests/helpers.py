"""Paths and small utilities shared by tests."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"


def numpy_composite(scenes, geobox, keep=(4, 5, 6, 11)):
    """An independent cloud-masked median composite, for checking ``miso_mapper.imagery``.

    ``scenes`` is a list of ``(paths, offset)``: ``paths`` the 9 band files (model band order) then the SCL
    file, ``offset`` the DN the scene's data carries above the baseline-03 scale. Each file is warped onto
    ``geobox`` by GDAL (nearest), the offset removed, SCL-masked, and the per-band median taken with numpy.
    Returns float32 (9, y, x) with NaN for no data, and the (y, x) count of valid observations.
    """
    import warnings

    import numpy as np
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    height, width = geobox.shape
    values, ok = [], []
    for paths, offset in scenes:
        planes = []
        for path in paths:
            with rasterio.open(path) as src, WarpedVRT(
                src, crs=geobox.crs.to_wkt(), transform=geobox.affine, width=width, height=height,
                resampling=Resampling.nearest, nodata=0,
            ) as vrt:
                planes.append(vrt.read(1))
        dn = np.stack(planes[:9]).astype(np.float64)
        values.append(np.where(dn == 0, np.nan, dn - offset))
        ok.append(np.isin(planes[9], keep) & (dn > 0).all(axis=0))
    masked = np.where(np.stack(ok)[:, None], np.stack(values), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels: cloudy everywhere
        return np.nanmedian(masked, axis=0).astype(np.float32), np.stack(ok).sum(axis=0)
