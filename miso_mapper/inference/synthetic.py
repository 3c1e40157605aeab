"""Synthetic chunk inputs and seeded MISO networks, for predictor tests and benchmarks (no data, no weights).

:func:`synthetic_inputs` builds a Dataset shaped like :func:`~miso_mapper.imagery.chunk.read_inputs`'s output
(``s2``, ``cov``, ``valid`` on a georeferenced EPSG:3338 grid) from smooth random fields with sharp-edged patches, so
that predictions vary in space at several scales. :func:`seeded_network` builds a randomly initialised
network whose output head is scaled up, so its probabilities spread over [0, 1] rather than sitting near
0.5 or 1/7 as they do at initialisation.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
from scipy.ndimage import gaussian_filter

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.model import MisoNet, MisoNetConfig, build_model
from miso_mapper.model.config import PresetName, Task

#: Upper-left corner (EPSG:3338 metres) of the default synthetic grid: near Fairbanks, on the 10 m lattice.
DEFAULT_ORIGIN: tuple[float, float] = (297_000.0, 1_668_000.0)


def _field(rng: np.random.Generator, shape: tuple[int, int], scales: tuple[float, ...]) -> np.ndarray:
    """Sum of Gaussian-smoothed white noise at ``scales`` (px), each rescaled to unit std, float64."""
    out = np.zeros(shape)
    for s in scales:
        f = gaussian_filter(rng.standard_normal(shape), sigma=s, mode="wrap")
        out += f / (f.std() + 1e-12)
    return out


def synthetic_inputs(rows: int, cols: int, seed: int = 0, origin: tuple[float, float] = DEFAULT_ORIGIN,
                     resolution: float = 10.0, invalid_box: tuple[slice, slice] | None = None) -> xr.Dataset:
    """A fake ``read_inputs`` result on a ``rows x cols`` grid.

    ``s2`` (9, y, x) float32 in [0, 1] and ``cov`` (10, y, x) float32 in about [-2, 2]: each band mixes a
    shared landscape field (60 px), patchy detail (8 px) and sharp-edged "land cover" classes (a thresholded
    field), so neighbouring bands correlate like real imagery. ``valid`` is False inside ``invalid_box``
    (row, col slices), where ``s2``/``cov`` are 0 as the real normalisation leaves them. Georeferenced like
    ``read_inputs``' output: ``ds.odc.geobox`` is the ``rows x cols`` EPSG:3338 grid of ``resolution`` m
    pixels whose upper-left corner is ``origin``.
    """
    rng = np.random.default_rng(seed)
    shape = (rows, cols)
    landscape = _field(rng, shape, (60.0,))
    classes = (_field(rng, shape, (20.0,)) > 0.3).astype(np.float64)
    bands = []
    for _ in range(len(S2_BANDS) + len(COVARIATES)):
        w = rng.normal(size=3)
        b = w[0] * landscape + w[1] * _field(rng, shape, (8.0,)) + 1.5 * w[2] * classes
        bands.append((b - b.mean()) / (b.std() + 1e-12))
    stack = np.stack(bands)
    s2 = np.clip(0.5 + 0.18 * stack[: len(S2_BANDS)], 0.0, 1.0).astype(np.float32)
    cov = np.clip(0.7 * stack[len(S2_BANDS):], -2.5, 2.5).astype(np.float32)
    valid = np.ones(shape, dtype=bool)
    if invalid_box is not None:
        valid[invalid_box] = False
    s2[:, ~valid] = 0.0
    cov[:, ~valid] = 0.0
    x0, y0 = origin
    geobox = GeoBox.from_bbox((x0, y0 - rows * resolution, x0 + cols * resolution, y0), "EPSG:3338",
                              resolution=resolution, tight=True)
    return xr.Dataset(
        {
            "s2": (("s2_band", "y", "x"), s2),
            "cov": (("cov_band", "y", "x"), cov),
            "valid": (("y", "x"), valid),
        },
        coords={"s2_band": list(S2_BANDS), "cov_band": list(COVARIATES),
                **xr_coords(geobox, crs_coord_name="spatial_ref")},
    )


def seeded_network(task: Task, preset: PresetName = "tiny", seed: int = 0, crop_size: int | None = None,
                   calibrate_on: xr.Dataset | None = None, logit_std: float = 1.5,
                   config: MisoNetConfig | None = None) -> MisoNet:
    """A randomly initialised network (eval mode, CPU) with a non-trivial output.

    ``crop_size`` (if given) overrides the window side (small windows make literal reference loops cheap in
    tests). At initialisation the visual head's logits hardly vary (probabilities sit near 0.5 or 1/7), so
    with ``calibrate_on`` (inputs as from :func:`synthetic_inputs`) the head's last layer is rescaled so its
    logits over the central window of those inputs have standard deviation ``logit_std`` per output around
    per-output offsets drawn from N(0, 0.5). A random network is not translation-consistent the way a trained
    one is; see :func:`fit_synthetic` for a network that has learned something. ``config`` replaces the
    preset entirely (its task must be ``task``).
    """
    cfg = config if config is not None else MisoNetConfig.preset(preset, task)
    if cfg.task != task:
        raise ValueError(f"config is for {cfg.task!r}, not {task!r}")
    if crop_size is not None and crop_size != cfg.crop_size:
        cfg = MisoNetConfig(**(cfg.model_dump() | {"crop_size": crop_size}))
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    if calibrate_on is not None:
        image = _stack(calibrate_on)
        w = cfg.crop_size
        r0, c0 = (image.shape[1] - w) // 2, (image.shape[2] - w) // 2
        window = torch.from_numpy(image[None, :, r0:r0 + w, c0:c0 + w].copy())
        coords = torch.rand(1, 2048, 2) * 2 - 1
        with torch.no_grad():
            logits = model(window, coords, None)["pred"][0]
            scale = logit_std / (logits.std(dim=0) + 1e-6)
            last = model.out[-1]
            last.weight.mul_(scale[:, None])
            last.bias.copy_((last.bias - logits.mean(dim=0)) * scale + 0.5 * torch.randn(cfg.out_dim))
    return model


def _stack(inputs: xr.Dataset) -> np.ndarray:
    s2 = inputs["s2"].sel(s2_band=list(S2_BANDS)).values
    cov = inputs["cov"].sel(cov_band=list(COVARIATES)).values
    return np.concatenate([s2, cov]).astype(np.float32)


def synthetic_truth(inputs: xr.Dataset, task: Task, seed: int = 0, context_px: float = 4.0,
                    logit_std: float = 2.0) -> np.ndarray:
    """A made-up ground truth to fit: probabilities ``(C, y, x)`` float32 from a fixed random linear map of
    the inputs smoothed over ``context_px`` (sigmoid for permafrost, softmax over 7 orders for taxonomy)."""
    rng = np.random.default_rng(seed)
    image = _stack(inputs)
    z = gaussian_filter(image, sigma=(0, context_px, context_px))
    z = (z - z.mean(axis=(1, 2), keepdims=True)) / (z.std(axis=(1, 2), keepdims=True) + 1e-6)
    out_dim = 1 if task == "permafrost" else 7
    a = rng.normal(size=(out_dim, z.shape[0]))
    logits = np.einsum("cb,byx->cyx", a, z)
    logits = logit_std * logits / (logits.std(axis=(1, 2), keepdims=True) + 1e-6)
    t = torch.from_numpy(logits)
    prob = torch.sigmoid(t) if task == "permafrost" else t.softmax(dim=0)
    return prob.numpy().astype(np.float32)


def fit_synthetic(model: MisoNet, inputs: xr.Dataset, steps: int = 100, seed: int = 0, batch: int = 4,
                  points: int = 256, lr: float = 2e-3) -> list[float]:
    """Briefly fit ``model`` (in place) to :func:`synthetic_truth` of ``inputs``, so it behaves like a trained
    network (its output follows the inputs at each pixel rather than the pixel's place in the window).

    Each step draws ``batch`` random windows of ``inputs`` and ``points`` random pixels in each, and takes
    an Adam step on the soft cross-entropy of ``pred``. Dropout/stochastic depth stay off (eval mode). Returns
    the loss per step. CPU, float32; a few seconds per ten steps for the tiny preset.
    """
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    w = cfg.crop_size
    image = torch.from_numpy(_stack(inputs))
    truth = torch.from_numpy(synthetic_truth(inputs, cfg.task, seed=seed))
    valid = torch.from_numpy(np.asarray(inputs["valid"].values, dtype=bool))
    grid = -1 + 1 / w + (2 / w) * torch.arange(w).float()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.eval()
    for _ in range(steps):
        r0 = torch.randint(0, image.shape[1] - w + 1, (batch,), generator=gen)
        c0 = torch.randint(0, image.shape[2] - w + 1, (batch,), generator=gen)
        rows = torch.randint(0, w, (batch, points), generator=gen)
        cols = torch.randint(0, w, (batch, points), generator=gen)
        windows = torch.stack([image[:, r:r + w, c:c + w] for r, c in zip(r0.tolist(), c0.tolist(), strict=True)])
        coords = torch.stack([grid[cols], grid[rows]], dim=-1)
        rr, cc = r0[:, None] + rows, c0[:, None] + cols
        target = truth[:, rr, cc].permute(1, 2, 0)  # B, N, C
        ok = valid[rr, cc]
        logits = model(windows, coords, None)["pred"]
        if cfg.task == "permafrost":
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")[..., 0]
        else:
            loss = -(target * logits.log_softmax(dim=-1)).sum(dim=-1)
        loss = loss[ok].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
