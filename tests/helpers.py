"""Paths and small utilities shared by tests."""

import warnings
from pathlib import Path

import numpy as np

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


def check_page_in_chromium(page: Path, tmp_path: Path) -> Path:
    """Open ``page`` in headless Chromium: a 1280x2000 screenshot that is not blank, the page's load marker
    (``data-ready="1"``) set and its JavaScript error log empty. Skips when Chromium is not installed.

    Returns the screenshot's path.
    """
    import re
    import shutil
    import subprocess

    import pytest
    from PIL import Image

    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    # the flags this machine needs: no sandbox as root, no background network (the network is closed)
    flags = [found, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage"]
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={shot}",
                    "--window-size=1280,2000", page.as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 20_000
    with Image.open(shot) as im:
        assert im.size == (1280, 2000)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or range(10**6)) > 50
    dom = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
                         capture_output=True, timeout=120, check=False, text=True).stdout
    assert 'data-ready="1"' in dom, dom[-2000:]
    assert re.search(r'<pre id="js-errors" hidden="">\s*</pre>', dom), re.findall(
        r'<pre id="js-errors".*?</pre>', dom, re.S)
    return shot


#: (row, col) slices, in a 1000 x 1000 px region, of the features of :func:`uncertainty_layers`.
AOA_BLOCK = (slice(700, 760), slice(700, 760))
ENTROPY_BLOCK = (slice(100, 130), slice(200, 230))
SPREAD_BLOCK = (slice(400, 430), slice(850, 880))


def uncertainty_layers(n: int = 1000) -> dict[str, np.ndarray]:
    """The uncertainty, input-quality and AOA layers of an n x n px region as stored (uint8, the store design's
    scalings): a quiet background (permafrost spread 0.02, soil-order entropy 0.2, inside both areas of
    applicability), a 600 m square outside the permafrost AOA (:data:`AOA_BLOCK`), a 300 m square of entropy
    0.92 (:data:`ENTROPY_BLOCK`) and one of permafrost spread 0.4 (:data:`SPREAD_BLOCK`)."""
    full = {name: np.full((n, n), value, np.uint8) for name, value in (
        ("permafrost_spread", 10), ("taxonomy_entropy", 50), ("taxonomy_spread", 20), ("permafrost_aoa", 1),
        ("taxonomy_aoa", 1), ("permafrost_aoa_index", 20), ("taxonomy_aoa_index", 15), ("valid_observations", 7),
        ("masked_fraction", 50))}
    full["permafrost_aoa"][AOA_BLOCK] = 0
    full["permafrost_aoa_index"][AOA_BLOCK] = 254
    full["taxonomy_entropy"][ENTROPY_BLOCK] = 230
    full["permafrost_spread"][SPREAD_BLOCK] = 200
    return full


def add_store_layers(store: Path, rows: slice, cols: slice, layers: dict[str, np.ndarray], zarr_chunk: int) -> None:
    """Write (y, x) uint8 layers (255 = no data) into a ``maps.zarr`` at ``rows, cols`` (creating an array that
    the store lacks, as a store made before these layers did), and consolidate its metadata again."""
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    shape = group["permafrost_probability"].shape
    for name, data in layers.items():
        if name in group:
            array = group[name]
        else:
            array = group.create_array(name, shape=shape, chunks=(zarr_chunk, zarr_chunk), dtype="uint8",
                                       fill_value=255, attributes={"grid_mapping": "spatial_ref"})
        array[rows, cols] = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(store))


def drop_store_layers(store: Path, names: tuple[str, ...]) -> None:
    """Delete arrays from a ``maps.zarr`` and consolidate its metadata again: a store made by a miso-mapper
    older than those layers."""
    import zarr

    group = zarr.open_group(str(store), mode="r+")
    for name in names:
        del group[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(store))
