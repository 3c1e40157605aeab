"""The chosen sites as records, GeoJSON (RFC 7946: EPSG:4326 lon/lat) and CSV, written all at once.

Each site carries its rank, score, grid coordinates in EPSG:3338 (``x_3338``, ``y_3338``), the reasons it was
chosen, and the physical value of every layer at it (None / empty where no data or the store lacks it).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Transformer

from miso_mapper.bands import SOIL_ORDERS
from miso_mapper.export.atomic import hidden_temp
from miso_mapper.layout import SitesLayout
from miso_mapper.pipeline.store import NODATA
from miso_mapper.sites.candidates import Candidates
from miso_mapper.sites.layers import CLASS_LAYER, MAX_SPREAD, SCALES, decode

#: Site fields in order (the CSV's columns; GeoJSON properties are the same less lon/lat).
FIELDS = ("rank", "score", "lon", "lat", "x_3338", "y_3338", "reasons", "soil_order", *SCALES, "access_distance_m")


def reasons(values: dict[str, float | None]) -> str:
    """Why a site ranks where it does, e.g. ``outside AOA (permafrost); soil-order entropy 0.82; permafrost
    spread 0.061``: the tasks whose area of applicability it lies outside, then the uncertainty terms,
    the larger (relative to its maximum) first."""
    parts = []
    outside = [task for task, key in (("permafrost", "permafrost_aoa"), ("soil order", "taxonomy_aoa"))
               if values.get(key) == 0]
    if outside:
        parts.append(f"outside AOA ({', '.join(outside)})")
    terms = [(v / MAX_SPREAD, f"permafrost spread {v:.3f}") for v in [values.get("permafrost_spread")] if v is not None]
    terms += [(v, f"soil-order entropy {v:.2f}") for v in [values.get("taxonomy_entropy")] if v is not None]
    parts += [text for _, text in sorted(terms, key=lambda t: -t[0])]
    return "; ".join(parts) or "no uncertainty or AOA data"


def site_records(candidates: Candidates, chosen: np.ndarray, grid_crs: str,
                 access_distance: np.ndarray | None = None) -> list[dict[str, Any]]:
    """One dict per chosen site (keys :data:`FIELDS`), rank 1 first; ``access_distance`` (metres, one per
    chosen site) fills ``access_distance_m``."""
    sites = candidates.take(chosen)
    to_ll = Transformer.from_crs(grid_crs, "EPSG:4326", always_xy=True)
    to_3338 = Transformer.from_crs(grid_crs, "EPSG:3338", always_xy=True)
    lon, lat = to_ll.transform(sites.x, sites.y)
    x3338, y3338 = to_3338.transform(sites.x, sites.y)
    decoded = {name: decode(name, sites.values[name]) for name in SCALES if name in sites.values}
    records = []
    for k in range(len(sites)):
        values = {name: _number(decoded[name][k], SCALES[name] is None) if name in decoded else None
                  for name in SCALES}
        cls = int(sites.values[CLASS_LAYER][k]) if CLASS_LAYER in sites.values else NODATA
        records.append({
            "rank": k + 1, "score": round(float(sites.score[k]), 4),
            "lon": round(float(lon[k]), 7), "lat": round(float(lat[k]), 7),
            "x_3338": round(float(x3338[k]), 2), "y_3338": round(float(y3338[k]), 2),
            "reasons": reasons(values), "soil_order": SOIL_ORDERS[cls] if cls < len(SOIL_ORDERS) else None,
            **values,
            "access_distance_m": None if access_distance is None else round(float(access_distance[k]), 1),
        })
    return records


def _number(value: float, whole: bool) -> float | int | None:
    """A decoded layer value for the records: None for no data, int for counts and flags, else 4 decimals."""
    if math.isnan(value):
        return None
    return int(value) if whole else round(float(value), 4)


def geojson_text(records: list[dict[str, Any]]) -> str:
    """The sites as a GeoJSON FeatureCollection of EPSG:4326 points."""
    features = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                 "properties": {k: v for k, v in r.items() if k not in ("lon", "lat")}} for r in records]
    return json.dumps({"type": "FeatureCollection", "name": "sample_sites", "features": features}, indent=1)


def csv_text(records: list[dict[str, Any]]) -> str:
    """The sites as CSV with a header row (:data:`FIELDS`); no data is an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def write_sites(layout: SitesLayout, records: list[dict[str, Any]]) -> None:
    """Write ``sample_sites.geojson`` and ``sample_sites.csv``: both are written to hidden temporaries first,
    then renamed, so an error leaves the previous files (or none), never half of one."""
    layout.directory.mkdir(parents=True, exist_ok=True)
    pending: list[tuple[Path, Path]] = []
    try:
        for path, text in ((layout.geojson, geojson_text(records)), (layout.csv, csv_text(records))):
            tmp = hidden_temp(path, "part")
            pending.append((tmp, path))
            tmp.write_text(text)
        for tmp, path in pending:
            os.replace(tmp, path)
    finally:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
