"""Latent fields, covariates and ground truth of the demo world (pure numpy, no I/O).

Everything is computed on the simulation grid (:func:`miso_mapper.world.geometry.sim_grid`, EPSG:3338, 10 m)
as float32 arrays of shape (rows, cols) unless stated otherwise.

Ground truth in words: permafrost within 1 m is likely on north-facing slopes, in cold wet lowlands (the
valleys are colder in winter: an inversion), in the northern ("continuous") zone and where a hidden,
location-dependent ground-ice field is high; never under the active floodplain. Soil orders: Entisols on the
river floodplain, Histosols in the wettest flats, Gelisols where there is permafrost, Spodosols on wetter,
higher slopes, Inceptisols elsewhere, Mollisols (rare) on steep dry south-facing bluffs, Andisols (rare) in
a tephra patch in the north-east. Smooth noise on every score makes the classes overlap in feature space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from odc.geo.geobox import GeoBox
from scipy import ndimage

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.world.geometry import pixel_centres

SOIL_INDEX = {name: i for i, name in enumerate(SOIL_ORDERS)}


def _interp_matrix(n_out: int, n_in: int, f: int, offset: int, order: int) -> np.ndarray:
    """(n_out, n_in) float32 matrix resampling a coarse axis to an ``f`` times finer one (linear or Keys cubic)."""
    u = np.arange(n_out) / f + offset
    i0 = np.floor(u).astype(int)
    t = u - i0
    m = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    if order == 1:
        taps = {0: 1 - t, 1: t}
    else:  # Keys cubic convolution, a = -0.5
        taps = {
            -1: -0.5 * t**3 + t**2 - 0.5 * t,
            0: 1.5 * t**3 - 2.5 * t**2 + 1,
            1: -1.5 * t**3 + 2 * t**2 + 0.5 * t,
            2: 0.5 * t**3 - 0.5 * t**2,
        }
    for k, w in taps.items():
        np.add.at(m, (rows, np.clip(i0 + k, 0, n_in - 1)), w.astype(np.float32))
    return m


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, order: int = 1) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field of correlation length ~``scale_px`` pixels, float32 (shape).

    White noise on a grid ``scale_px // 4`` times coarser is Gaussian-filtered, then interpolated (linear for
    ``order`` 1, cubic for 3) with separable matrix products, which is much faster than ``ndimage.zoom``.
    """
    f = max(1, int(scale_px // 4))
    cs = (shape[0] // f + 6, shape[1] // f + 6)
    n = ndimage.gaussian_filter(rng.standard_normal(cs), sigma=scale_px / f / 2.0, mode="wrap").astype(np.float32)
    if f == 1:
        up = n[2:2 + shape[0], 2:2 + shape[1]]
    else:
        up = _interp_matrix(shape[0], cs[0], f, 2, order) @ n @ _interp_matrix(shape[1], cs[1], f, 2, order).T
    up = up - up.mean()
    return (up / (up.std() + 1e-12)).astype(np.float32)


def _std(a: np.ndarray) -> np.ndarray:
    return ((a - a.mean()) / (a.std() + 1e-12)).astype(np.float32)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-a))).astype(np.float32)


def _polyline_distance(grid: GeoBox, xy: np.ndarray) -> np.ndarray:
    """Distance (m) from each pixel centre to the densely sampled polyline ``xy`` (N, 2), float32."""
    seg = []
    for a, b in zip(xy[:-1], xy[1:], strict=True):
        n = max(2, int(np.hypot(*(b - a)) / (grid.resolution.x / 2)))
        t = np.linspace(0, 1, n)[:, None]
        seg.append(a + t * (b - a))
    pts = np.concatenate(seg)
    inv = ~grid.affine
    cols, rows = inv * (pts[:, 0], pts[:, 1])
    rows, cols = np.floor(rows).astype(int), np.floor(cols).astype(int)
    ok = (rows >= 0) & (rows < grid.shape[0]) & (cols >= 0) & (cols < grid.shape[1])
    mask = np.ones(tuple(grid.shape), dtype=bool)
    mask[rows[ok], cols[ok]] = False
    return (ndimage.distance_transform_edt(mask) * grid.resolution.x).astype(np.float32)


@dataclass
class Latents:
    """All simulated layers on the simulation grid. Units in the field comments; all float32 unless noted."""

    grid: GeoBox
    river: np.ndarray  # river centre line, (N, 2) EPSG:3338 metres
    roads: list[np.ndarray]  # road centre lines, each (N, 2) EPSG:3338 metres
    zone_lines: list[np.ndarray]  # permafrost-zone boundaries (N, 2), north to south
    mlra_lines: list[np.ndarray]  # MLRA boundaries (N, 2), west to east
    tephra_centre: tuple[float, float]
    d_river: np.ndarray  # m
    d_road: np.ndarray  # m
    hidden: np.ndarray  # unitless location-dependent ground-ice / fire-history field (std ~1)
    wet: np.ndarray  # unitless wetness latent (std ~1)
    zone: np.ndarray  # uint8 0 continuous, 1 discontinuous, 2 sporadic
    covariates: dict[str, np.ndarray] = field(default_factory=dict)  # keys: bands.COVARIATES
    permafrost: np.ndarray | None = None  # uint8 0/1
    soil_order: np.ndarray | None = None  # uint8 index into bands.SOIL_ORDERS


def _curve_y(x: np.ndarray, y0: float, amps: list[float], lens: list[float], phases: list[float]) -> np.ndarray:
    y = np.full_like(x, y0, dtype=np.float64)
    for a, L, p in zip(amps, lens, phases, strict=True):
        y = y + a * np.sin(2 * np.pi * x / L + p)
    return y


def simulate(grid: GeoBox, region: tuple[float, float, float, float], rng: np.random.Generator) -> Latents:
    """Simulate terrain, climate, latents and ground truth on ``grid`` (EPSG:3338) for a ``region`` bbox (m).

    Returns :class:`Latents` with ``covariates`` (the 10 layers of :data:`miso_mapper.bands.COVARIATES` in
    their physical units: degrees, m, 1/m, degrees, m, unitless, m, mm, degC-months, degC), ``permafrost``
    (uint8 0/1) and ``soil_order`` (uint8 class index), each of shape ``grid.shape``.
    """
    shape = tuple(grid.shape)
    res = grid.resolution.x
    xs, ys = pixel_centres(grid)
    X, Y = np.meshgrid(xs.astype(np.float32), ys.astype(np.float32))
    rxmin, rymin, rxmax, rymax = region
    rw, rh = rxmax - rxmin, rymax - rymin
    gx0, gy0, gx1, gy1 = grid.boundingbox
    ph = rng.uniform(0, 2 * np.pi, size=16)

    # --- line features -------------------------------------------------------------------------------
    lx = np.linspace(gx0 - 500, gx1 + 500, 400)
    river = np.column_stack([lx, _curve_y(lx, rymin + 0.42 * rh, [0.18 * rh, 0.05 * rh], [1.3 * rw, 0.37 * rw],
                                          list(ph[:2]))])
    t = np.linspace(0, 1, 300)
    a, b = np.array([gx0 - 500, rymin + 0.1 * rh]), np.array([gx1 + 500, rymax - 0.05 * rh])
    d = b - a
    perp = np.array([-d[1], d[0]]) / np.hypot(*d)
    main = a + t[:, None] * d + perp * (0.08 * rw * np.sin(2 * np.pi * 1.5 * t + ph[2]))[:, None]
    k = len(main) // 3
    branch_t = np.linspace(0, 1, 100)[:, None]
    branch_end = np.array([rxmin + 0.25 * rw, gy1 + 500])
    branch = main[k] + branch_t * (branch_end - main[k])
    branch = branch + np.column_stack([150 * np.sin(6 * branch_t[:, 0] + ph[3]), np.zeros(len(branch_t))])
    roads = [main, branch]
    d_river = _polyline_distance(grid, river)
    d_road = np.minimum(_polyline_distance(grid, main), _polyline_distance(grid, branch))

    # --- terrain (m) ---------------------------------------------------------------------------------
    trend = 0.010 * (X - rxmin) + 0.008 * (Y - rymin)
    hills = 160 * smooth_noise(rng, shape, 250 / res * 10, order=3) + 35 * smooth_noise(rng, shape, 60, order=3)
    rough = 1.5 * smooth_noise(rng, shape, 8, order=3)
    upland = 260 + trend + hills
    river_level = 130 + 0.0015 * (X - gx0)
    valley = 1.0 - np.exp(-((d_river / 900.0) ** 2))
    floodplain = np.clip((d_river - 120) / 400, 0, 1)
    dem = river_level + np.maximum(upland - river_level, 15) * valley * floodplain + 2.0 * valley + rough
    dem = dem.astype(np.float32)

    sm = ndimage.uniform_filter(dem, size=4)
    gy, gx = np.gradient(sm, res)  # d/drow (southward), d/dcol (east)
    dzdn, dzde = -gy, gx
    tan_slope = np.hypot(dzde, dzdn)
    slope = np.degrees(np.arctan(tan_slope)).astype(np.float32)
    aspect = (np.degrees(np.arctan2(-dzde, -dzdn)) % 360.0).astype(np.float32)
    hyy, hyx = np.gradient(gy, res)
    hxy, hxx = np.gradient(gx, res)
    hxy = 0.5 * (hxy + hyx)
    maxc = ((hxx + hyy) / 2 + np.sqrt(((hxx - hyy) / 2) ** 2 + hxy**2)).astype(np.float32)
    tpi = (dem - ndimage.uniform_filter(dem, size=41)).astype(np.float32)
    tpi_large = dem - ndimage.uniform_filter(dem, size=101)
    catch = 10.0 * np.exp(5.0 * _sigmoid(-tpi_large / 15.0) + 3.0 * np.exp(-((d_river / 500.0) ** 2))
                          + 0.8 * smooth_noise(rng, shape, 30))
    spi = (catch * np.maximum(tan_slope, 1e-3)).astype(np.float32)
    swi = np.clip(np.log(catch / np.maximum(tan_slope, 1e-3)), 0.0, 26.0).astype(np.float32)
    northness = np.cos(np.radians(aspect)) * np.sin(np.radians(slope))

    # --- climate normals ------------------------------------------------------------------------------
    cn = smooth_noise(rng, shape, 300)
    tmin_jan = (-30.5 + 0.012 * (dem - 130) - 0.00005 * (Y - rymin) + 0.3 * cn).astype(np.float32)
    tmean_swi = (40.0 - 0.025 * (dem - 130) - 6.0 * northness + 0.5 * cn).astype(np.float32)
    ppt = (290 + 0.22 * (dem - 130) + 0.003 * (Y - rymin) + 12 * smooth_noise(rng, shape, 250)).astype(np.float32)

    # --- latents --------------------------------------------------------------------------------------
    hidden = _std(0.8 * smooth_noise(rng, shape, 250) + 0.9 * (X - (rxmin + rw / 2)) / rw)
    wet = _std(0.9 * _std(swi) - 0.6 * _std(slope) + 0.5 * smooth_noise(rng, shape, 40))
    zx = np.linspace(gx0 - 500, gx1 + 500, 200)
    zone_lines = [np.column_stack([zx, _curve_y(zx, rymin + f * rh, [0.06 * rh, 0.02 * rh], [0.9 * rw, 0.3 * rw],
                                                list(ph[4 + 2 * i:6 + 2 * i]))])
                  for i, f in enumerate((0.72, 0.28))]
    zone = np.full(shape, 2, dtype=np.uint8)
    for line in reversed(zone_lines):
        yb = np.interp(xs, line[:, 0], line[:, 1]).astype(np.float32)
        zone = np.where(Y > yb[None, :], zone - 1, zone).astype(np.uint8)
    my = np.linspace(gy0 - 500, gy1 + 500, 200)
    mlra_lines = [np.column_stack([_curve_y(my, rxmin + f * rw, [0.05 * rw], [0.8 * rh], [ph[8 + i]]), my])
                  for i, f in enumerate((0.35, 0.7))]
    tephra_centre = (rxmin + 0.8 * rw, rymin + 0.8 * rh)

    # --- truth ----------------------------------------------------------------------------------------
    zone_term = np.array([1.3, 0.0, -1.3], dtype=np.float32)[zone]
    active_fp = np.exp(-((d_river / 180.0) ** 2))
    cold = _std(-tmin_jan)
    logit = (1.6 * _std(northness) + 0.9 * cold + 0.8 * wet + 0.9 * hidden + zone_term - 4.0 * active_fp
             + 0.9 * smooth_noise(rng, shape, 25) + 0.35 * smooth_noise(rng, shape, 8))
    pf = (logit > np.quantile(logit, 0.55)).astype(np.uint8)

    southness = -northness
    steep = _std(slope)
    d_teph = np.hypot(X - tephra_centre[0], Y - tephra_centre[1])
    scores = np.zeros((len(SOIL_ORDERS), *shape), dtype=np.float32)
    notpf = 1.0 - pf
    scores[SOIL_INDEX["Entisols"]] = 4.5 * np.exp(-((d_river / 260.0) ** 2)) - 1.0
    scores[SOIL_INDEX["Histosols"]] = 1.5 * wet - 1.9 - 0.4 * pf + 0.5 * (slope < 3)
    scores[SOIL_INDEX["Gelisols"]] = 2.0 * pf + 0.1 * wet - 0.5
    scores[SOIL_INDEX["Spodosols"]] = notpf * (0.7 * steep + 0.9 * _std(ppt) - 0.4 * hidden) - 0.2
    scores[SOIL_INDEX["Inceptisols"]] = notpf * 0.7 + 0.2 * steep - 0.3 * wet - 0.1
    scores[SOIL_INDEX["Mollisols"]] = notpf * (2.4 * _std(southness) + 0.8 * steep - 0.8 * wet) - 3.6
    scores[SOIL_INDEX["Andisols"]] = 3.5 * np.exp(-((d_teph / 1100.0) ** 2)) - 1.6
    for i in range(len(SOIL_ORDERS)):
        scores[i] += 0.45 * smooth_noise(rng, shape, 20)
    soil = np.argmax(scores, axis=0).astype(np.uint8)

    lat = Latents(grid, river, roads, zone_lines, mlra_lines, tephra_centre, d_river, d_road, hidden, wet, zone)
    lat.covariates = {
        "aspct_4": aspect, "elevation": dem, "maxc_4": maxc, "sl_4": slope, "spi": spi, "swi_10": swi,
        "tpi_4": tpi, "ppt_annual": ppt, "tmean_swi": tmean_swi, "tmin_january": tmin_jan,
    }
    lat.permafrost = pf
    lat.soil_order = soil
    return lat
