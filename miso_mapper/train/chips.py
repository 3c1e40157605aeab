"""Training chips: model-resolution windows around points, read once through the imagery layer and cached.

For every point, :func:`build_chips` asks :func:`miso_mapper.imagery.sample.sample_points` for a native
window of ``native_size`` px centred on the point's pixel (read via
:func:`miso_mapper.imagery.chunk.read_inputs` on the chunk's halo grid, the production reader) and for the
point's raw pixel values (the RF-11 features). The window is resampled (bilinear, like the model's own
resize) to ``input_size + 2 * margin`` model pixels: the central ``input_size`` pixels are exactly what the
network sees for a ``crop_size`` window around the point (:meth:`MisoNet.prepare_images`), and the
``margin`` on each side lets training shift the window by up to ``jitter_px`` without reading imagery again.

Geometry (native 10 m pixels, relative to the point pixel's index ``c = native_size // 2``): model pixel
``i`` of a crop starting at stored offset ``d`` samples native index ``c - crop/2 + (i + d - margin + 0.5) * f
- 0.5`` with ``f = crop_size / input_size``; for ``d = margin`` this is F.interpolate(align_corners=False) of
the production ``crop_size`` window, so test chips match mapping exactly.

Chips are cached in a folder keyed by a hash of the points, the imagery/covariate/grid settings, the chip
geometry, the cache format and the inputs (the demo world's manifest, or the STAC item ids per chunk); a
second run with the same key reads the folder instead of the imagery. The images are one uncompressed float16
``images.npy`` (n, 19, S, S), written chip by chip while sampling and opened with ``mmap_mode="r"``: every
training process on a host shares the OS page cache instead of holding its own copy (with the reference's
256 px input and 62 px jitter, S = 384 px and 1,500 chips are 8.4 GB). ``chips.json`` (key, ids, geometry) is
written last and the folder is renamed into place, so a killed build leaves no cache that looks complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import torch
import torch.nn.functional as F

from miso_mapper.bands import COVARIATES, S2_BANDS
from miso_mapper.config import Workflow
from miso_mapper.errors import MisoError
from miso_mapper.points import PointSet

log = logging.getLogger(__name__)

CHIP_FORMAT = 2
"""2: a folder of uncompressed ``.npy`` files, images memory-mapped (1: a compressed Zarr store, not read)."""
IMAGES_NAME = "images.npy"
META_NAME = "chips.json"
#: Raw point features of RF-11 in order: 9 S2 bands (harmonised DN), 10 covariates (physical units).
RAW_FEATURES = (*S2_BANDS, *COVARIATES)


@dataclass(frozen=True)
class ChipGeometry:
    """Sizes of cached chips, in native (10 m) and model pixels."""

    crop_size: int
    """native window the network sees (250 in the reference)."""
    input_size: int
    """model pixels the window is resized to (the network's input size)."""
    margin: int
    """extra model pixels stored on each side for jitter."""

    @property
    def scale(self) -> float:
        """Native pixels per model pixel ``f``."""
        return self.crop_size / self.input_size

    @property
    def stored_size(self) -> int:
        """Side of a stored chip in model pixels."""
        return self.input_size + 2 * self.margin

    @property
    def native_size(self) -> int:
        """Side of the native window read around a point (odd, so the point pixel is its centre)."""
        need = self.crop_size / 2 + self.margin * self.scale + 2
        return 2 * math.ceil(need) + 1

    @classmethod
    def for_jitter(cls, crop_size: int, input_size: int, jitter_px: int) -> ChipGeometry:
        """Geometry whose margin covers shifts up to ``jitter_px`` native pixels."""
        return cls(crop_size, input_size, math.ceil(jitter_px * input_size / crop_size))


@dataclass
class ChipSet:
    """Cached chips and raw pixel values of a set of points (arrays indexed like ``ids``)."""

    ids: np.ndarray
    """(n,) str point ids."""
    x: np.ndarray
    """(n,) float64 EPSG:3338 m."""
    y: np.ndarray
    """(n,) float64 EPSG:3338 m."""
    images: np.ndarray
    """(n, 19, S, S) float16 normalised [9 S2 | 10 covariates], S = geometry.stored_size; from a cache a
    read-only memory map (index it for the chips a batch needs, never copy it whole)."""
    features: np.ndarray
    """(n, 19) float32 raw values at the point: 9 S2 bands (DN) then 10 covariates (physical units)."""
    valid: np.ndarray
    """(n,) bool: every input valid at the point's pixel."""
    window_valid: np.ndarray
    """(n,) float32 share of valid pixels in the central crop window."""
    geometry: ChipGeometry
    key: str
    """cache key (hash) the chips were made under."""

    def index_of(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Positions of ``ids`` in this set (MisoError naming a missing id)."""
        lookup = {pid: i for i, pid in enumerate(self.ids.tolist())}
        try:
            return np.asarray([lookup[str(p)] for p in ids], np.int64)
        except KeyError as exc:
            raise MisoError(f"point {exc.args[0]} has no chip (was it outside the region?)") from None


def chip_key(workflow: Workflow, points: PointSet, geometry: ChipGeometry, inputs: str) -> str:
    """Hash identifying the chips of ``points`` under ``workflow``'s input settings and ``inputs``."""
    imagery = workflow.imagery.model_dump(mode="json", exclude={"stac_url", "catalog"})
    covariates = workflow.covariates.model_dump(mode="json", exclude={"stac_url", "catalog"})
    doc = {
        "format": CHIP_FORMAT,
        "points": points.content_hash(),
        "imagery": imagery,
        "covariates": covariates,
        "grid": workflow.grid.model_dump(mode="json"),
        "geometry": vars(geometry),
        "inputs": inputs,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def resample_windows(windows: np.ndarray, geometry: ChipGeometry) -> np.ndarray:
    """Native windows (n, C, W, W) float32 (point pixel at W // 2) -> stored chips (n, C, S, S) float32."""
    n, _, w, _ = windows.shape
    s, f, c = geometry.stored_size, geometry.scale, w // 2
    idx = c - geometry.crop_size / 2 + (np.arange(s) - geometry.margin + 0.5) * f - 0.5  # native index
    grid_1d = torch.tensor((idx + 0.5) / w * 2 - 1, dtype=torch.float32)  # align_corners=False normalisation
    gy, gx = torch.meshgrid(grid_1d, grid_1d, indexing="ij")
    grid = torch.stack([gx, gy], dim=-1)[None].expand(n, s, s, 2)
    out = F.grid_sample(torch.from_numpy(windows), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.numpy()


def build_chips(workflow: Workflow, points: PointSet, geometry: ChipGeometry, cache_dir: Path,
                echo: Callable[[str], Any] | None = None, batch: int = 32,
                progress: Callable[[int, int], Any] | None = None) -> ChipSet:
    """Chips and raw features of ``points``, from the cache under ``cache_dir`` or read and cached.

    ``progress(done, total)`` is called after each batch of points read (not when the cache is reused).

    Reads through the imagery layer (serving the demo world when the workflow has no STAC URL). The returned
    images are a read-only memory map of the cache (never a copy in memory).
    """
    from miso_mapper.train.source import imagery_workflow, world_fingerprint

    fingerprint = world_fingerprint(workflow)
    if fingerprint is not None:
        key = chip_key(workflow, points, geometry, f"world:{fingerprint}")
        cached = _load(chip_cache_path(cache_dir, key), key, geometry)
        if cached is not None:
            if echo:
                echo(f"chips: {len(cached.ids)} cached chips reused ({cache_dir.name}/chips-{key[:16]})")
            return cached
    with imagery_workflow(workflow, echo) as wf:
        started = time.perf_counter()
        reader = _ChunkReader(wf, geometry)
        if fingerprint is None:
            key = chip_key(workflow, points, geometry, reader.inputs_fingerprint(points))
            cached = _load(chip_cache_path(cache_dir, key), key, geometry)
            if cached is not None:
                return cached
        path = chip_cache_path(cache_dir, key)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            _read_chips(reader, points, geometry, key, batch, tmp, progress)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if echo:
            echo(f"chips: read {len(points)} chips from {reader.n_reads} chunk(s) in "
                 f"{time.perf_counter() - started:.0f} s")
    shutil.rmtree(path, ignore_errors=True)  # a damaged or partial cache under this key
    tmp.rename(path)
    chips = _load(path, key, geometry)
    if chips is None:
        raise MisoError(f"the chip cache {path} just written cannot be read back")
    return chips


class _ChunkReader:
    """``read_chunk`` for :func:`sample_points` that keeps the last chunk's inputs (points come chunk by chunk)."""

    def __init__(self, workflow: Workflow, geometry: ChipGeometry) -> None:
        from miso_mapper.grid import AlaskaGrid

        self.workflow = workflow
        halo = max(workflow.grid.halo, geometry.native_size // 2 + 1)
        self.grid = AlaskaGrid(workflow.grid.model_copy(update={"halo": halo}))
        self._last: tuple[str, Any] | None = None
        self._ahead: dict[str, Any] = {}
        self._order: list[str] = []
        self._lookahead = 0
        self._pool: Any = None
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._cov: dict[str, dict[str, list[str]]] = {}
        self.n_reads = 0

    def items(self, chunk: Any) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
        from miso_mapper.imagery.covariates import find_covariate_sources
        from miso_mapper.imagery.search import search_items

        if chunk.id not in self._items:
            wf = self.workflow
            self._items[chunk.id] = search_items(chunk.halo_geobox, wf.imagery)
            self._cov[chunk.id] = find_covariate_sources(wf.covariates, chunk.halo_geobox, wf.imagery.stac_url,
                                                         wf.imagery.catalog)
        return self._items[chunk.id], self._cov[chunk.id]

    def inputs_fingerprint(self, points: PointSet) -> str:
        """Item ids and covariate paths per chunk touched by ``points`` (no hosts: ports and tokens vary)."""
        from miso_mapper.imagery.sample import points_by_chunk

        parts = []
        for chunk_id in sorted(points_by_chunk(self.grid, points.x, points.y)):
            items, cov = self.items(self.grid.chunk_by_id(chunk_id))
            hrefs = {k: [urlsplit(h).path for h in v] for k, v in sorted(cov.items())}
            parts.append({"chunk": chunk_id, "items": sorted(i["id"] for i in items), "cov": hrefs})
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def read_ahead(self, chunk_ids: list[str], lookahead: int = 1) -> None:
        """Chunks will be asked for in this order: read the next ``lookahead`` in a background thread while
        the current one is read and sampled (GDAL and the median release the GIL; at most ``lookahead + 1``
        chunks' inputs are in memory)."""
        from concurrent.futures import ThreadPoolExecutor

        self._order, self._lookahead = list(chunk_ids), lookahead
        self._pool = ThreadPoolExecutor(max(lookahead, 1), thread_name_prefix="chips-read-ahead")

    def close(self) -> None:
        """Stop reading ahead."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _read(self, chunk: Any) -> Any:
        from miso_mapper.imagery.chunk import read_inputs

        items, cov = self.items(chunk)
        inputs = read_inputs(chunk.halo_geobox, items, cov, self.workflow.imagery)
        self.n_reads += 1
        return inputs

    def __call__(self, chunk: Any) -> Any:
        if self._last is None or self._last[0] != chunk.id:
            self._last = None  # free the previous chunk before reading the next
            future = self._ahead.pop(chunk.id, None)
            if self._pool is not None and chunk.id in self._order:
                i = self._order.index(chunk.id)
                for cid in self._order[i + 1:i + 1 + self._lookahead]:
                    if cid not in self._ahead:
                        self._ahead[cid] = self._pool.submit(self._read, self.grid.chunk_by_id(cid))
            self._last = (chunk.id, future.result() if future is not None else self._read(chunk))
        return self._last[1]


def _read_chips(reader: _ChunkReader, points: PointSet, geometry: ChipGeometry, key: str, batch: int,
                tmp: Path, progress: Callable[[int, int], Any] | None = None) -> None:
    """Sample every point's chip into a cache folder ``tmp`` (images written chip by chip, never held)."""
    from miso_mapper.imagery.sample import points_by_chunk

    n = len(points)
    features = np.full((n, len(RAW_FEATURES)), np.nan, np.float32)
    valid = np.zeros(n, bool)
    window_valid = np.zeros(n, np.float32)
    by_chunk = sorted(points_by_chunk(reader.grid, points.x, points.y).items())
    reader.read_ahead([cid for cid, _ in by_chunk])
    try:
        with _ImageWriter(tmp / IMAGES_NAME, (n, len(RAW_FEATURES), geometry.stored_size, geometry.stored_size)) as w:
            _sample_all(reader, points, geometry, by_chunk, batch, w, features, valid, window_valid, progress)
    finally:
        reader.close()
    arrays = {"x": points.x.astype(np.float64), "y": points.y.astype(np.float64), "features": features,
              "valid": valid, "window_valid": window_valid}
    for name, value in arrays.items():
        np.save(tmp / f"{name}.npy", value, allow_pickle=False)
    meta = {"key": key, "format": CHIP_FORMAT, "ids": points.ids.astype(str).tolist(), "geometry": vars(geometry),
            "raw_features": list(RAW_FEATURES)}
    (tmp / META_NAME).write_text(json.dumps(meta))  # written last: a folder without it is incomplete


class _ImageWriter:
    """Writes chips into an uncompressed float16 ``.npy`` of a fixed shape, row by row, at their positions."""

    def __init__(self, path: Path, shape: tuple[int, int, int, int]) -> None:
        self.path, self.shape = path, shape
        self.row_bytes = int(np.prod(shape[1:])) * 2

    def __enter__(self) -> _ImageWriter:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)), "fortran_order": False,
                  "shape": self.shape}
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        np.lib.format.write_array_header_1_0(self._file, header)
        self.offset = self._file.tell()
        self._file.truncate(self.offset + self.shape[0] * self.row_bytes)  # sparse until written
        return self

    def write(self, rows: np.ndarray, chips: np.ndarray) -> None:
        """Store ``chips`` (k, 19, S, S) at positions ``rows`` (k,)."""
        data = np.ascontiguousarray(chips, np.float16)
        for row, chip in zip(rows.tolist(), data, strict=True):
            os.pwrite(self._file.fileno(), chip.tobytes(), self.offset + row * self.row_bytes)

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def _sample_all(reader: _ChunkReader, points: PointSet, geometry: ChipGeometry, by_chunk: list[tuple[str, Any]],
                batch: int, images: _ImageWriter, features: np.ndarray, valid: np.ndarray,
                window_valid: np.ndarray, progress: Callable[[int, int], Any] | None = None) -> None:
    """Fill the chip arrays chunk by chunk (points of one chunk in batches of ``batch``); ``progress(done,
    total)`` after each batch."""
    from miso_mapper.imagery.sample import sample_points

    lo, hi = geometry.margin, geometry.margin + geometry.input_size
    done, total = 0, sum(idx.size for _, idx in by_chunk)
    for _, idx in by_chunk:
        for start in range(0, idx.size, batch):
            part = idx[start:start + batch]
            pixels, windows = sample_points(reader.grid, points.x[part], points.y[part], reader,
                                            geometry.native_size)
            assert windows is not None
            stored = resample_windows(windows["image"].values, geometry)
            mask = resample_windows(windows["valid"].values[:, None].astype(np.float32), geometry)[:, 0]
            images.write(part, stored)
            window_valid[part] = (mask[:, lo:hi, lo:hi] > 0.999).mean(axis=(1, 2))
            features[part] = np.concatenate([pixels["reflectance"].values, pixels["covariates"].values], axis=1)
            valid[part] = pixels["valid"].values
            done += part.size
            if progress is not None:
                progress(done, total)


def chip_cache_path(cache_dir: Path, key: str) -> Path:
    """Where :func:`build_chips` caches the chips made under ``key`` (a folder of ``.npy`` files)."""
    return cache_dir / f"chips-{key[:16]}"


def open_cached_chips(cache_dir: Path, key: str, geometry: ChipGeometry) -> ChipSet:
    """The chips :func:`build_chips` cached under ``key`` (e.g. re-opened in a worker process).

    Raises MisoError when they are missing or were made under another key.
    """
    chips = _load(chip_cache_path(cache_dir, key), key, geometry)
    if chips is None:
        raise MisoError(f"no cached chips {chip_cache_path(cache_dir, key)} for key {key[:16]}")
    return chips


def _load(path: Path, key: str, geometry: ChipGeometry) -> ChipSet | None:
    """The cached chips at ``path`` if they were made under ``key``, images memory-mapped read-only; None
    otherwise (or if unreadable: missing files, a truncated ``images.npy``, shapes that disagree)."""
    if not (path / META_NAME).is_file():
        return None
    try:
        meta = json.loads((path / META_NAME).read_text())
        if meta.get("key") != key or meta.get("format") != CHIP_FORMAT:
            return None
        ids = np.asarray(meta["ids"], dtype=str)
        arrays = {name: np.load(path / f"{name}.npy", allow_pickle=False)
                  for name in ("x", "y", "features", "valid", "window_valid")}
        images = np.load(path / IMAGES_NAME, mmap_mode="r", allow_pickle=False)
        s = geometry.stored_size
        if images.shape != (len(ids), len(RAW_FEATURES), s, s) or images.dtype != np.float16:
            raise ValueError(f"images.npy is {images.dtype} {images.shape}")
        if any(len(a) != len(ids) for a in arrays.values()):
            raise ValueError("point arrays and ids differ in length")
        return ChipSet(ids, arrays["x"], arrays["y"], images, arrays["features"], arrays["valid"],
                       arrays["window_valid"], geometry, key)
    except Exception as exc:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
        log.warning("ignoring unreadable chip cache %s: %s", path, exc)
        return None
