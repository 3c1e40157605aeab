"""Sentinel-2 L2A-like surface reflectance and scene classification (SCL) from the latents (pure numpy).

Reflectance is a linear mixture of 7 land-cover endmember spectra whose fractions depend partly on the soil
order / permafrost truth (black spruce on permafrost, wet moss and sedge on Histosols, willow and gravel bars
on floodplains, grass on Mollisols bluffs, ...) and partly on independent latents, with terrain illumination,
per-date phenology, haze, clouds (SCL 8/9/10) and their shadows (SCL 3). All arrays are on the simulation
grid: reflectance float32 (9, rows, cols) in :data:`miso_mapper.bands.S2_BANDS` order, unitless 0-1.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from miso_mapper.world.fields import Latents, smooth_noise
from miso_mapper.world.geometry import pixel_centres

#: Endmember surface reflectance, rows: conifer, deciduous, wet moss/sedge, grass, gravel, water, burn;
#: columns: red, green, blue, rededge1, rededge2, rededge3, nir, swir16, swir22.
ENDMEMBERS = np.array([
    [0.030, 0.050, 0.025, 0.080, 0.170, 0.210, 0.240, 0.130, 0.060],
    [0.035, 0.070, 0.030, 0.120, 0.320, 0.400, 0.440, 0.210, 0.090],
    [0.050, 0.070, 0.040, 0.100, 0.170, 0.200, 0.220, 0.100, 0.045],
    [0.070, 0.090, 0.050, 0.140, 0.250, 0.280, 0.300, 0.280, 0.170],
    [0.140, 0.130, 0.110, 0.160, 0.180, 0.190, 0.200, 0.260, 0.220],
    [0.020, 0.040, 0.030, 0.020, 0.015, 0.012, 0.010, 0.005, 0.003],
    [0.050, 0.050, 0.030, 0.080, 0.120, 0.140, 0.150, 0.220, 0.180],
], dtype=np.float32)
CLOUD_SPECTRUM = np.array([0.46, 0.45, 0.48, 0.46, 0.47, 0.48, 0.50, 0.40, 0.30], dtype=np.float32)
#: Per-class endmember fractions (same endmember order) for each soil order index.
_CLASS_COVER = {
    "Andisols": [0.3, 0.4, 0.0, 0.3, 0.0, 0.0, 0.0],
    "Entisols": [0.15, 0.45, 0.0, 0.1, 0.3, 0.0, 0.0],
    "Gelisols": [0.65, 0.1, 0.25, 0.0, 0.0, 0.0, 0.0],
    "Histosols": [0.15, 0.05, 0.8, 0.0, 0.0, 0.0, 0.0],
    "Inceptisols": [0.4, 0.55, 0.05, 0.0, 0.0, 0.0, 0.0],
    "Mollisols": [0.05, 0.2, 0.0, 0.75, 0.0, 0.0, 0.0],
    "Spodosols": [0.6, 0.35, 0.05, 0.0, 0.0, 0.0, 0.0],
}
SUN_AZIMUTH_DEG = 165.0
SUN_ZENITH_DEG = 50.0
#: Radius (m) of the cloud patch present in every date.
PERSISTENT_CLOUD_RADIUS_M = 150.0


def base_reflectance(lat: Latents, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cloud-free, date-independent reflectance (9, rows, cols) float32 and the water mask (rows, cols) bool."""
    from miso_mapper.bands import SOIL_ORDERS

    shape = tuple(lat.grid.shape)
    cover = np.array([_CLASS_COVER[n] for n in SOIL_ORDERS], dtype=np.float32)[lat.soil_order]  # r,c,7
    cover = np.moveaxis(cover, -1, 0)
    # independent latent part: wetness -> moss, cold aspect -> conifer, hidden field -> burn scars
    slope = np.radians(lat.covariates["sl_4"])
    north = np.cos(np.radians(lat.covariates["aspct_4"])) * np.sin(slope)
    latent = np.stack([
        np.clip(0.4 + 2.0 * north, 0, 1),
        np.clip(0.5 - 2.0 * north, 0, 1),
        np.clip(0.3 + 0.3 * lat.wet, 0, 1),
        np.zeros(shape, np.float32),
        np.zeros(shape, np.float32),
        np.zeros(shape, np.float32),
        np.clip(1.5 * (smooth_noise(rng, shape, 80) + 0.5 * lat.hidden - 1.4), 0, 1),
    ]).astype(np.float32)
    mix = 0.6 * cover + 0.4 * latent
    water = lat.d_river < 25.0
    bars = (lat.d_river < 70.0) & ~water
    mix[:, bars] *= 0.3
    mix[4, bars] += 0.7
    mix[:, water] = 0.0
    mix[5, water] = 1.0
    mix /= mix.sum(axis=0, keepdims=True)
    refl = np.tensordot(ENDMEMBERS.T, mix, axes=1).astype(np.float32)  # 9, r, c
    # terrain illumination
    az, zen = np.radians(SUN_AZIMUTH_DEG), np.radians(SUN_ZENITH_DEG)
    asp = np.radians(lat.covariates["aspct_4"])
    cos_i = np.cos(zen) * np.cos(slope) + np.sin(zen) * np.sin(slope) * np.cos(az - asp)
    illum = np.clip(cos_i / np.cos(zen), 0.3, 1.6) ** 0.7
    refl *= illum[None]
    refl *= (1.0 + 0.015 * smooth_noise(rng, shape, 10))[None]
    return refl, water


def observe(base: np.ndarray, water: np.ndarray, lat: Latents, rng: np.random.Generator,
            persistent_cloud_xy: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    """One acquisition: reflectance (9, rows, cols) float32, SCL (rows, cols) uint8, cloud fraction 0-1.

    Per-date phenology scales the red-edge/NIR bands, a smooth haze adds to the visible bands; random cloud
    blobs (a random cover of 0-40 %) plus a small persistent cloud disk around ``persistent_cloud_xy``
    (EPSG:3338 m) brighten the scene, and their shadows (displaced away from the sun) darken it.
    """
    shape = tuple(lat.grid.shape)
    res = lat.grid.resolution.x
    pheno = np.float32(rng.uniform(0.88, 1.08))
    refl = base.copy()
    refl[3:7] *= pheno
    refl[0] *= np.float32(2.0 - pheno)  # less red absorption when senescent
    haze = 0.006 * (1.0 + smooth_noise(rng, shape, 200))
    refl[:3] += haze[None] * np.array([1.0, 0.8, 1.3], np.float32)[:, None, None]

    cover = float(rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.05, 0.4)], p=[0.3, 0.7]))
    field = 0.8 * smooth_noise(rng, shape, 60) + 0.25 * smooth_noise(rng, shape, 20)
    thr = np.quantile(field[::4, ::4], 1.0 - cover) if cover > 0 else np.inf
    tau = np.clip((field - thr) / 0.6, 0, None)
    xs, ys = pixel_centres(lat.grid)
    px = (persistent_cloud_xy[0] - xs[0]) / res
    py = (ys[0] - persistent_cloud_xy[1]) / res
    rr, cc = np.ogrid[:shape[0], :shape[1]]
    disk = np.hypot(rr - py, cc - px) <= PERSISTENT_CLOUD_RADIUS_M / res
    tau[disk] = np.maximum(tau[disk], 1.0)
    cloud = tau > 0
    cirrus_field = smooth_noise(rng, shape, 120)
    cirrus = (cirrus_field > np.quantile(cirrus_field[::4, ::4], 0.93)) & ~cloud & (rng.uniform() < 0.6)
    # shadows: clouds at ~1.5 km height, displaced away from the sun
    disp = 1500.0 * np.tan(np.radians(SUN_ZENITH_DEG)) / res
    az = np.radians(SUN_AZIMUTH_DEG)
    dcol, drow = -disp * np.sin(az), disp * np.cos(az)  # away from the sun; rows grow southward
    shadow = ndimage.shift(cloud.astype(np.uint8), (drow, dcol), order=0, mode="constant").astype(bool) & ~cloud

    alpha = np.clip(0.35 + 0.6 * tau, 0, 0.95)
    refl = np.where(cloud[None], refl * (1 - alpha[None]) + alpha[None] * CLOUD_SPECTRUM[:, None, None], refl)
    refl = np.where(cirrus[None], refl + 0.05, refl)
    refl = np.where(shadow[None], refl * 0.35, refl).astype(np.float32)

    ndvi = (refl[6] - refl[0]) / (refl[6] + refl[0] + 1e-6)
    scl = np.where(ndvi > 0.35, 4, 5).astype(np.uint8)
    scl[water] = 6
    scl[shadow] = 3
    scl[cirrus] = 10
    scl[cloud] = np.where(tau[cloud] > 0.5, 9, 8)
    return refl, scl, float(cloud.mean())
