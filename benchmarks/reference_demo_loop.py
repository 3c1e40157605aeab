"""A direct, deliberately literal re-implementation of the reference's map loop (``MISO/demo.py``).

Written from reading the reference, not copied, and kept simple on purpose: it is the yardstick that
``tests/test_predictor.py`` and ``benchmarks/predictor.py`` hold :class:`miso_mapper.inference.miso.MisoPredictor`
against. What it does, as the demo does for a 5000 px tile (here: for any grid, e.g. a chunk with its halo):

* one window at a time, float32, no batching: windows of ``CROP_SIZE`` px (the model's ``crop_size``) with
  upper-left corners at multiples of ``SHIFT_SIZE = CROP_SIZE // interval`` while they fit,
  ``(size - CROP_SIZE) // SHIFT_SIZE + 1`` per axis (the demo's loop bounds; pixels past the last window stay
  0 / 0 = NaN as in the demo);
* each window resized with ``torchvision.transforms.Resize((INPUT_SIZE, INPUT_SIZE), antialias=None)``;
* every pixel of the window queried: window-relative pixel centres ``make_grid(-1, 1)`` meshed ``'xy'`` and
  EPSG:3338 pixel centres from the window's bounds, normalised as ``normalize_coord3338``;
* ``model(image, pixel_coords, geo_coords)``; the map is ``pred`` through a sigmoid (permafrost) or softmax
  (soil order), weighted by a Gaussian mask (a centred unit impulse smoothed with
  ``scipy.ndimage.gaussian_filter``, sigma = 0.25 x CROP_SIZE) and divided by the summed mask, in float64
  numpy accumulators; ``geo_pred`` is computed and summed unweighted, as in the demo, but not part of the map.

Importable from the tests (``from benchmarks.reference_demo_loop import reference_demo_loop``) and from
``benchmarks/predictor.py`` (same folder).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from scipy.ndimage import gaussian_filter
from torchvision import transforms

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.model.location import X_RANGE_3338, Y_RANGE_3338


def gaussian_weight_mask(h: int, w: int, sigma: float = 0.25) -> np.ndarray:
    """The demo's window weights: an impulse at (h // 2, w // 2) smoothed with sigma = min(h, w) * sigma."""
    center = np.zeros((h, w))
    center[h // 2, w // 2] = 1.0
    return gaussian_filter(center, sigma=min(h, w) * sigma)


def normalize_coord3338(x_coord: torch.Tensor, y_coord: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """EPSG:3338 metres to the location encoder's [-1, 1] (the demo's constants, y flipped)."""
    x_norm = (x_coord - X_RANGE_3338[0]) / (X_RANGE_3338[1] - X_RANGE_3338[0]) * 2 - 1
    y_norm = (y_coord - Y_RANGE_3338[0]) / (Y_RANGE_3338[1] - Y_RANGE_3338[0]) * 2 - 1
    return x_norm, y_norm


def reference_demo_loop(model: torch.nn.Module, inputs: xr.Dataset, interval: int = 5,
                        sigma: float = 0.25, device: str = "cpu") -> dict[str, np.ndarray]:
    """The demo's prediction loop over the whole grid of ``inputs`` with one network.

    Args:
        model: a :class:`~miso_mapper.model.MisoNet` (its ``config.task``, ``crop_size`` and ``input_size``
            play the roles of the demo's ``VAR_NAME``, ``CROP_SIZE`` and ``INPUT_SIZE``).
        inputs: ``s2`` (s2_band, y, x) and ``cov`` (cov_band, y, x) normalised float32 with x/y pixel centres
            in EPSG:3338 metres (north-up), e.g. a chunk's halo grid from ``read_inputs``.
        interval: ``SHIFT_SIZE = CROP_SIZE // interval`` (5 gives the stride 50 of the issue; the demo's
            command-line default is 2).
        sigma: Gaussian mask sigma as a fraction of the window.
        device: where the model runs (the demo uses CUDA; float32 either way).

    Returns:
        ``prediction`` (H, W, C) float64 = weighted sum / summed weights (NaN where no window reached),
        ``geo_sum`` (H, W, C) float64 (the demo's unweighted ``geo_pred`` sum) and ``windows`` (count).
    """
    cfg = model.config
    crop_size = cfg.crop_size
    shift_size = crop_size // interval
    input_size = cfg.input_size
    mask = gaussian_weight_mask(crop_size, crop_size, sigma=sigma)

    s2 = inputs["s2"].sel(s2_band=list(S2_BANDS)).transpose("y", "x", "s2_band").values
    cov = inputs["cov"].sel(cov_band=list(COVARIATES)).transpose("y", "x", "cov_band").values
    band_data = np.concatenate([s2, cov], axis=-1)
    band_data = np.transpose(band_data, (2, 0, 1))
    band_data = torch.tensor(band_data, dtype=torch.float32)
    height, width = band_data.shape[1:]

    def make_grid(v0: float, v1: float) -> torch.Tensor:
        r = (v1 - v0) / (2 * crop_size)
        return v0 + r + (2 * r) * torch.arange(crop_size).float()

    xs = make_grid(-1, 1)
    ys = make_grid(-1, 1)
    x, y = torch.meshgrid(xs, ys, indexing="xy")
    pixel_coords = torch.stack([x, y], axis=-1)
    pixel_coords = pixel_coords.reshape(-1, 2).unsqueeze(0).to(device)

    xc, yc = inputs["x"].values, inputs["y"].values
    res = float(abs(xc[1] - xc[0]))
    geo_xmin = float(xc[0]) - res / 2
    geo_ymax = float(yc[0]) + res / 2

    c = cfg.out_dim
    output_sum_prediction = np.zeros((height, width, c))
    output_count_prediction = np.zeros((height, width, c))
    output_sum_geo_prediction = np.zeros((height, width, c))
    mask_3d = np.repeat(mask[:, :, np.newaxis], c, axis=2)

    model = model.to(device).eval()
    windows = 0
    with torch.no_grad():
        nx = (width - crop_size) // shift_size + 1
        ny = (height - crop_size) // shift_size + 1
        for y in range(0, ny * shift_size, shift_size):
            for x in range(0, nx * shift_size, shift_size):
                img_tensor = band_data[:, y: y + crop_size, x: x + crop_size].to(device)
                img_tensor = transforms.Resize((input_size, input_size), antialias=None)(img_tensor)

                local_geo_min, local_geo_max = geo_xmin + x * res, geo_xmin + (x + crop_size) * res
                geo_xs = make_grid(local_geo_min, local_geo_max)
                local_geo_min, local_geo_max = geo_ymax - y * res, geo_ymax - (y + crop_size) * res
                geo_ys = make_grid(local_geo_min, local_geo_max)
                geo_xs, geo_ys = normalize_coord3338(geo_xs, geo_ys)
                geo_x, geo_y = torch.meshgrid(geo_xs, geo_ys, indexing="xy")
                geo_coords = torch.stack([geo_x, geo_y], axis=-1)
                geo_coords = geo_coords.reshape(-1, 2).unsqueeze(0).to(device)

                output = model(img_tensor.unsqueeze(0), pixel_coords, geo_coords)

                if cfg.task == "permafrost":
                    y_pred = torch.sigmoid(output["pred"])
                else:
                    y_pred = output["pred"].softmax(dim=-1)
                y_pred = y_pred.detach().cpu().numpy().reshape(crop_size, crop_size, c)
                output_sum_prediction[y: y + crop_size, x: x + crop_size, :] += y_pred * mask_3d
                output_count_prediction[y: y + crop_size, x: x + crop_size, :] += mask_3d

                if output.get("geo_pred") is not None:
                    if cfg.task == "permafrost":
                        g_pred = torch.sigmoid(output["geo_pred"])
                    else:
                        g_pred = output["geo_pred"].softmax(dim=-1)
                    g_pred = g_pred.detach().cpu().numpy().reshape(crop_size, crop_size, c)
                    output_sum_geo_prediction[y: y + crop_size, x: x + crop_size] += g_pred

                del img_tensor
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                windows += 1

    with np.errstate(invalid="ignore", divide="ignore"):
        output_prediction = output_sum_prediction / output_count_prediction
    return {"prediction": output_prediction, "geo_sum": output_sum_geo_prediction, "windows": np.int64(windows)}
