"""Point samples from chunk inputs: pixel values for the Random Forest, windows for training chips.

Points are grouped by the chunk that contains them, each chunk's inputs are read once (with its halo, via
:func:`miso_mapper.imagery.chunk.read_inputs`) and every point's values are cut from them. Because the halo is
half a model window, a window centred on any pixel of a chunk's interior lies inside that chunk's halo grid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

from miso_mapper.bands import WINDOW_PX
from miso_mapper.grid import AlaskaGrid, Chunk


def pixel_of(inputs: xr.Dataset, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of the pixels of ``inputs`` containing points (x, y) in its CRS; -1 where outside."""
    xs, ys = inputs["x"].values, inputs["y"].values
    res_x, res_y = xs[1] - xs[0], ys[1] - ys[0]  # res_y < 0: north-up
    cols = np.floor((np.asarray(x) - (xs[0] - res_x / 2)) / res_x).astype(int)
    rows = np.floor((np.asarray(y) - (ys[0] - res_y / 2)) / res_y).astype(int)
    outside = (rows < 0) | (rows >= ys.size) | (cols < 0) | (cols >= xs.size)
    return np.where(outside, -1, rows), np.where(outside, -1, cols)


def sample_pixels(inputs: xr.Dataset, x: np.ndarray, y: np.ndarray) -> xr.Dataset:
    """Raw values at points: ``reflectance`` (point, s2_band) DN, ``covariates`` (point, cov_band), ``valid``.

    Points outside ``inputs`` get NaN and valid False.
    """
    rows, cols = pixel_of(inputs, x, y)
    inside = rows >= 0
    r, c = np.where(inside, rows, 0), np.where(inside, cols, 0)
    refl = inputs["reflectance"].values[:, r, c].T.copy()
    cov = inputs["covariates"].values[:, r, c].T.copy()
    refl[~inside], cov[~inside] = np.nan, np.nan
    valid = inputs["valid"].values[r, c] & inside
    return xr.Dataset(
        {
            "reflectance": (("point", "s2_band"), refl),
            "covariates": (("point", "cov_band"), cov),
            "valid": (("point",), valid),
        },
        coords={"s2_band": inputs["s2_band"].values, "cov_band": inputs["cov_band"].values,
                "x": ("point", np.asarray(x, float)), "y": ("point", np.asarray(y, float))},
    )


def cut_windows(inputs: xr.Dataset, x: np.ndarray, y: np.ndarray, size: int = WINDOW_PX) -> xr.Dataset:
    """Normalised ``size`` x ``size`` windows around points; the point's pixel is at (size // 2, size // 2).

    Returns ``image`` (point, channel, wy, wx) float32 with the 9 normalised S2 bands then the 10 normalised
    covariates (the reference's 19-channel "c19" input) and ``valid`` (point, wy, wx) bool. Parts of a window
    outside ``inputs`` are 0 / invalid.
    """
    rows, cols = pixel_of(inputs, x, y)
    stack = np.concatenate([inputs["s2"].values, inputs["cov"].values], axis=0)
    half = size // 2
    n = len(rows)
    image = np.zeros((n, stack.shape[0], size, size), np.float32)
    valid = np.zeros((n, size, size), bool)
    height, width = stack.shape[1:]
    for k, (row, col) in enumerate(zip(rows, cols, strict=True)):
        if row < 0:
            continue
        r0, c0 = row - half, col - half
        sr, sc = slice(max(r0, 0), min(r0 + size, height)), slice(max(c0, 0), min(c0 + size, width))
        dr, dc = slice(sr.start - r0, sr.stop - r0), slice(sc.start - c0, sc.stop - c0)
        image[k, :, dr, dc] = stack[:, sr, sc]
        valid[k, dr, dc] = inputs["valid"].values[sr, sc]
    channels = [*(f"s2:{b}" for b in inputs["s2_band"].values), *(f"cov:{b}" for b in inputs["cov_band"].values)]
    return xr.Dataset(
        {"image": (("point", "channel", "wy", "wx"), image), "valid": (("point", "wy", "wx"), valid)},
        coords={"channel": channels, "x": ("point", np.asarray(x, float)), "y": ("point", np.asarray(y, float))},
    )


def points_by_chunk(grid: AlaskaGrid, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Chunk id -> indices of the points (x, y in grid CRS) whose pixel lies in that chunk's interior."""
    c = grid.config
    size_m = c.chunk_size * c.resolution
    rows = np.floor((c.origin_y - np.asarray(y)) / size_m).astype(int)
    cols = np.floor((np.asarray(x) - c.origin_x) / size_m).astype(int)
    groups: dict[str, list[int]] = {}
    for k, (r, col) in enumerate(zip(rows, cols, strict=True)):
        groups.setdefault(grid.chunk(int(r), int(col)).id, []).append(k)
    return {key: np.asarray(v) for key, v in groups.items()}


def sample_points(
    grid: AlaskaGrid,
    x: np.ndarray,
    y: np.ndarray,
    read_chunk: Callable[[Chunk], xr.Dataset],
    window: int | None = WINDOW_PX,
) -> tuple[xr.Dataset, xr.Dataset | None]:
    """Pixel values (and, unless ``window`` is None, windows) for points, reading each chunk once.

    ``read_chunk(chunk)`` returns :func:`~miso_mapper.imagery.chunk.read_inputs` for the chunk's halo grid.
    Results are in the order of the points given.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    pixel_parts, window_parts, order = [], [], []
    for chunk_id, idx in points_by_chunk(grid, x, y).items():
        inputs = read_chunk(grid.chunk_by_id(chunk_id))
        pixel_parts.append(sample_pixels(inputs, x[idx], y[idx]))
        if window is not None:
            window_parts.append(cut_windows(inputs, x[idx], y[idx], window))
        order.append(idx)
    inverse = np.argsort(np.concatenate(order))
    pixels = xr.concat(pixel_parts, dim="point").isel(point=inverse)
    windows = xr.concat(window_parts, dim="point").isel(point=inverse) if window is not None else None
    return pixels, windows
